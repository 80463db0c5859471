"""The Triton kernels compile to a Hopper cubin on a machine without a GPU (what the interpreter cannot check),
and their machine code has the properties a memory-bound kernel needs (read with the cuobjdump Triton ships).

The compiler runs in a subprocess: kernels compiled here must not replace the interpreted ones the other tests use.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from autoq.kernels.compile_check import default_cases


@pytest.fixture(scope="module")
def sm90(tmp_path_factory):
    """The compile check's output and its SASS reports of every case, for sm_90."""
    out = tmp_path_factory.mktemp("sass") / "sm90.json"
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "1"}
    proc = subprocess.run([sys.executable, "-m", "autoq.kernels.compile_check", "--arch", "90", "--sass", "--json", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, json.loads(out.read_text())["sm_90"]


def test_every_kernel_compiles_for_sm90(sm90):
    stdout, reports = sm90
    kernels = {case.kernel for case in default_cases()}
    assert kernels == {"wq_gemv_kernel", "wq_gemm_kernel", "int8_gemm_kernel", "quantize_rows_kernel"}
    assert stdout.count("ok    sm_90") == len(default_cases()) == len(reports)


def test_gemv_loads_each_threads_packed_words_as_one_vector(sm90):
    """At aligned shapes with whole K blocks, W4/W8 words load 16 bytes a thread (LDG.E.128), not word by word."""
    reports = sm90[1]
    for name in ("wq-gemv int4-g128-asym-fp16 split1 even-K", "wq-gemv int4-g32-sym-bf16 split1 even-K",
                 "wq-gemv int8-ch-sym-bf16 split1 even-K"):
        assert reports[name]["global_loads"].get("LDG.E.128", 0) >= 1, (name, reports[name])
        assert reports[name]["stack_bytes"] == 0, (name, reports[name])


def test_gemms_copy_tiles_in_16_byte_pieces_and_use_hopper_wgmma(sm90):
    reports = {name: r for name, r in sm90[1].items() if r["aligned"] and "gemm" in name and "16-row" not in name}
    assert len(reports) == 5
    for name, report in reports.items():
        copies = {k for k in report["global_loads"] if k.startswith("LDGSTS")}
        assert copies and all(k.endswith(".128") for k in copies), (name, report)  # no 4-byte cp.async
        assert set(report["mma"]) == ({"IGMMA"} if "int8-gemm" in name else {"HGMMA"}), (name, report)
        assert report["stack_bytes"] == 0, (name, report)


def test_a_16_row_tile_runs_gathered_codes_without_spilling(sm90):
    """Batch <= 16 keeps only 16-row tiles; for 3/5/6 bits the larger ones spill, this one must not."""
    from autoq.kernels.triton_wq import _GEMM_CONFIGS

    tile = next(c for c in default_cases() if c.name == "wq-gemm int3-g64-asym-fp16 even-K 16-row")
    assert any(c.kwargs == {k: tile.constexprs[k] for k in c.kwargs} and (c.num_warps, c.num_stages) == (tile.num_warps, tile.num_stages)
               for c in _GEMM_CONFIGS), "the tile checked here is one the autotuner tries"
    report = sm90[1][tile.name]
    assert report["stack_bytes"] == 0 and set(report["mma"]) == {"HMMA"}, report
