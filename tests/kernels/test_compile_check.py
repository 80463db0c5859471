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
    """The compile check's output and its SASS reports of every case, for sm_90.

    With Triton's default FP fusion off (Triton 3.10's default): the launches ask for fused multiply-adds
    themselves, and the instruction counts below hold only with them (int4 per channel: 3.89 a weight, 4.89 without)."""
    out = tmp_path_factory.mktemp("sass") / "sm90.json"
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "0"}
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


def test_gemv_loads_the_next_steps_words_during_this_one(sm90):
    """Triton does not pipeline the GEMV's word loads; it prefetches them itself: each thread's words load
    before the loop (the first step) and again inside it (the next step), 16 bytes wide for whole words.
    Inside the loop the activations of 2/4/8-bit steps load 16 bytes wide too, so the loop has at least as many."""
    for name, report in sm90[1].items():
        if name.startswith("wq-gemv") and "split1 even-K" in name:
            kind = "LDG.E" if "int3-g" in name else "LDG.E.128"  # 3-bit groups read words at group offsets, unaligned
            before = report["global_loads"].get(kind, 0) - report["loop_loads"].get(kind, 0)
            assert before > 0 and report["loop_loads"][kind] >= before, (name, report)


def test_gemv_main_loop_is_about_four_instructions_a_weight(sm90):
    """Batch 1 is memory-bound only while a thread issues few instructions per weight (an H200 SM issues
    128 a clock and receives about 37 int4 weights a clock). The GEMV's shift, and-or and FMA are three;
    the rest is activations, scales and the prefetch, shared by the 4 rows a thread holds. The old
    unpack-to-a-tile GEMV issued 6.8 a weight for int4 per channel, 15.7 in groups of 128, 18.6 for int3 g64.
    The limits leave room for other Triton versions (3.9 gives 3.89, 4.25, 4.29, 4.11, 4.23 and 6.48;
    3.6, the GPU machine's, 4.04, 4.39, 4.52, 4.38, 4.18 and 6.55)."""
    reports = sm90[1]
    per_weight = {name: r["loop_per_weight"] for name, r in reports.items() if name.startswith("wq-gemv") and "split1" in name}
    assert per_weight["wq-gemv int4-ch-asym-fp16 split1 even-K"] <= 4.25, per_weight
    for name in ("wq-gemv int4-g128-asym-fp16 split1 even-K", "wq-gemv int4-g32-sym-bf16 split1 even-K"):
        assert per_weight[name] <= 4.9, (name, per_weight)
    for name in ("wq-gemv int2-ch-asym-fp16 split1 even-K", "wq-gemv int8-ch-sym-bf16 split1 even-K"):
        assert per_weight[name] <= 4.75, (name, per_weight)
    assert per_weight["wq-gemv int3-g64-asym-fp16 split1 even-K"] <= 7.5, per_weight  # read group by group (was 9.0 split at words)


def test_gemv_with_rows_in_thread_moves_nothing_between_threads(sm90):
    """``ROWS_IN_THREAD`` loads one word of every row in each thread, and each slot's activations in the same layout:
    the W4 and W8 per-channel loops have no barrier (the 4-rows-a-thread main tile passes each slot's activations
    through shared memory: 16 barriers a step for W4 with Triton 3.9, 20 with 3.6), and W4 keeps under four
    instructions a weight (3.9: 3.73, 3.6: 3.74; W8 4.16 and 4.14; W4 g128, a scale and zero a word and row, 4.69
    and 5.58). The words load 4 bytes wide, which is what keeps them apart. The constexpr row strides make each
    row's loads an immediate offset: with runtime strides these were 3.96, 4.72 and 5.91 on Triton 3.9."""
    reports = sm90[1]
    for name, limit in (("wq-gemv int4-ch-asym-fp16 rows-in-thread even-K", 3.9), ("wq-gemv int8-ch-sym-bf16 rows-in-thread even-K", 4.4),
                        ("wq-gemv int4-g128-asym-fp16 rows-in-thread even-K", 5.75)):
        report = reports[name]
        assert report["loop_barriers"] == 0 and report["stack_bytes"] == 0, (name, report)
        assert report["loop_loads"].get("LDG.E", 0) >= 16 and report["loop_per_weight"] <= limit, (name, report)


def test_half2_gemv_spends_few_instructions_outside_its_dots(sm90):
    """The packed-half W4 tiles: a word's 8 weights are 16 instructions of PTX; around them, the loop's prefetches load
    without predicates (clamped to the last whole step: a predicated load zeroes its registers first), per channel the
    rows' zero shifts come from the fp16 zeros in the PTX, and the rows are summed in a halving butterfly. 8 x 2048 per
    channel, one step ahead, is 168 instructions a step and 541 in all with Triton 3.9 (169 and 534 with 3.6); with
    predicates, fp32 shifts and tl.sum it was 182 and 759. The butterfly's exchanges are warp shuffles: no more than
    the few hundred bytes of shared memory the warps' sums take (8 KB where a gather goes through it)."""
    reports = sm90[1]
    for name, limit in (("wq-gemv int4-ch-asym-fp16 half2 8x2048 even-K", 2.75), ("wq-gemv int4-g128-asym-fp16 half2 8x1024 ahead2 even-K", 4.1)):
        report = reports[name]
        assert report["loop_guarded_loads"] == 0 and report["loop_barriers"] == 0 and report["stack_bytes"] == 0, (name, report)
        assert report["loop_loads"].get("LDG.E", 0) >= 12 and report["loop_per_weight"] <= limit, (name, report)
        assert report["shared_bytes"] <= 512, (name, report)
    assert reports["wq-gemv int4-ch-asym-fp16 half2 8x2048 even-K"]["instructions"] <= 600


def test_persistent_half2_gemv_carries_the_next_tiles_scales_as_stored(sm90):
    """A persistent tile (programs walking row tiles, loads running ahead across them) carries the next tile's per-channel
    scales and zeros as loaded, fp16, and makes its shifts at the tile's start: carried as shifts they took 79 registers a
    thread where 48 do (8 x 2048, one ahead, Triton 3.9; 80 or more fit 3 programs of 8 warps an SM, not 5). Its loop over K
    steps (the innermost) has no predicated load and about 13 instructions more than the unpersistent tile's, the step's
    position. In groups each step's scales are addressed from the tile's first row: from each row's own 64-bit offset
    the loop took 281 instructions a step, now 226 (Triton 3.9; 220 with 3.6, where the unpersistent tile takes 273)."""
    reports = sm90[1]
    report = reports["wq-gemv int4-ch-asym-fp16 half2 8x2048 persist2 even-K"]
    assert report["registers"] <= 56 and report["stack_bytes"] == 0, report
    assert report["loop_instructions"] <= reports["wq-gemv int4-ch-asym-fp16 half2 8x2048 even-K"]["loop_instructions"] + 20, report
    groups = reports["wq-gemv int4-g128-asym-fp16 half2 8x2048 persist2 even-K"]
    assert groups["loop_instructions"] <= 240 and groups["stack_bytes"] == 0, groups
    for r in (report, groups):
        assert r["loop_guarded_loads"] == 0 and r["loop_barriers"] == 0 and r["loop_loads"].get("LDG.E", 0) >= 12, r


def test_gemm_keeps_each_words_codes_in_its_thread(sm90):
    """The weight-only GEMM spreads each loaded word into its codes in registers (pairwise joins): about 5-6
    instructions a weight in the 64 x 128 x 64 tile (Triton 3.9: 4.89, 5.80, 6.03; 3.6: 5.34, 5.70, 5.88), where a
    reshape of the shifted words, through shared memory, took 8.3 to 9.7."""
    reports = sm90[1]
    assert reports["wq-gemm int4-ch-asym-fp16 even-K"]["loop_per_weight"] <= 6.0
    assert reports["wq-gemm int4-g128-asym-fp16 even-K"]["loop_per_weight"] <= 6.5
    assert reports["wq-gemm int8-ch-sym-bf16 even-K"]["loop_per_weight"] <= 7.0


def test_gemms_copy_tiles_in_16_byte_pieces_and_use_hopper_wgmma(sm90):
    reports = {name: r for name, r in sm90[1].items() if r["aligned"] and "gemm" in name and "16-row" not in name}
    assert len(reports) == 6
    for name, report in reports.items():
        copies = {k for k in report["global_loads"] if k.startswith("LDGSTS")}
        assert copies and all(k.endswith(".128") for k in copies), (name, report)  # no 4-byte cp.async
        assert set(report["mma"]) == ({"IGMMA"} if "int8-gemm" in name else {"HGMMA"}), (name, report)
        assert report["stack_bytes"] == 0, (name, report)


def test_3_bit_gemm_spreads_slot_groups_in_a_16_row_tile(sm90):
    """Batch <= 16 keeps only 16-row tiles. 3/5/6-bit words are spread in slot groups (30 codes of 3 words in 32 slots),
    as 2/4/8-bit words are: 6.9 instructions a weight per channel and 10.0 straddling g64 groups in this tile with
    Triton 3.9 (3.6: 9.5 and 12.3), where gathering each column's word took 10.3 and 12.9 (3.6: 17.2 and 17.4) and
    spilled in most tiles."""
    import triton

    from autoq.kernels.triton_wq_gemm import _GEMM_CONFIGS

    newer = tuple(int(part) for part in triton.__version__.split(".")[:2]) >= (3, 9)
    limits = {"int3-ch-asym": 8.0, "int3-g64-asym": 11.0} if newer else {"int3-ch-asym": 10.0, "int3-g64-asym": 13.0}
    for spec, limit in limits.items():
        case = next(c for c in default_cases() if c.name == f"wq-gemm {spec}-fp16 16-row")
        assert any(c.kwargs == dict(case.blocks) and (c.num_warps, c.num_stages) == (case.num_warps, case.num_stages)
                   for c in _GEMM_CONFIGS), "the tile checked here is one the autotuner tries"
        report = sm90[1][case.name]
        assert report["stack_bytes"] == 0 and set(report["mma"]) == {"HMMA"}, report
        assert report["loop_per_weight"] <= limit, (case.name, report)


def test_gemm_split_over_k_keeps_its_loop(sm90):
    """A batch of 16 splits K (ops.gemm_split_k_for): each split's loop is the unsplit one's (int4 g128 in 16 x 128 x 64,
    Triton 3.9: 6.91 instructions a weight split 8 ways with the adding in the kernel, 6.77 whole), still copying 16-byte pieces when K splits evenly."""
    report = sm90[1]["wq-gemm int4-g128-asym-fp16 16-row split8 even-K"]
    assert report["stack_bytes"] == 0 and report["loop_per_weight"] <= 7.5, report
    assert any(k.startswith("LDGSTS") and k.endswith(".128") for k in report["global_loads"]), report
    assert sm90[1]["wq-gemm int3-g32-asym-fp16 16-row split4"]["stack_bytes"] == 0


def test_a_case_compiles_the_kernel_a_launch_runs(tmp_path):
    """The machine code checked is what runs: a case compiles through its launcher, so an autotuned launch at the
    same shape finds the case's kernel in Triton's cache and compiles only the autotuner's other tiles and its split
    candidates (which add their own partial sums: no other kernel).

    (Hand-built specializations missed, for one, that per-channel scales have row stride 1: 255 registers where
    the launch's kernel has 168, in a 32-row tile.)"""
    import torch

    from autoq.kernels.triton_wq_gemv import _GEMV_CONFIGS, _GEMV_SPLIT_CONFIGS, gemv_splits, prune_gemv_configs

    script = (
        "from autoq.kernels.compile_check import compile_case, default_cases\n"
        "from autoq.kernels.precompile import PrecompileCase, Target, cache_entries, compile_launches, compiling_for\n"
        "case = next(c for c in default_cases() if c.name == 'wq-gemv int4-ch-asym-fp16 split1 even-K')\n"
        "compile_case(case, 90)\n"
        "first = cache_entries()\n"
        "with compiling_for(Target('cuda', 90, 32)):\n"
        "    compile_launches(PrecompileCase('wq', case.spec, (case.shape,), (case.batch,)))\n"
        "print(first, cache_entries() - first)\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first, then = map(int, proc.stdout.split())
    x = torch.empty(1, 4096, dtype=torch.float16, device="meta")  # every whole tile (HALF2 too: fp16 W4), splits with a step each
    kept = prune_gemv_configs(_GEMV_SPLIT_CONFIGS, {"K": 4096, "x_ptr": x}, CPW=8, GROUP=0, BITS=4)
    assert len(kept) > len(_GEMV_CONFIGS) and gemv_splits(4096, 8, 0) == (2, 4, 8)
    assert (first, then) == (1, len(kept) - 1)


def test_a_programmatic_dependent_launch_waits_for_the_previous_kernel_before_any_load():
    """``gemv(..., pdl=True)`` compiles a kernel flagged for PDL whose first act is ``griddepcontrol.wait`` (nothing read
    or written before the previous kernel is done) then ``launch_dependents``; the default launch has neither."""
    script = (
        "import torch\n"
        "from autoq.kernels import triton_wq_gemv\n"
        "from autoq.kernels.formats import PackedWeight\n"
        "from autoq.kernels.precompile import Target, compiling_for\n"
        "from autoq.quant import QuantSpec\n"
        "w = PackedWeight.empty(QuantSpec.from_name('int4-g128-asym'), (4096, 4096))\n"
        "x = torch.empty(1, 4096, dtype=torch.float16, device='meta')\n"
        "with compiling_for(Target('cuda', 90, 32)):\n"
        "    for pdl in (True, False):\n"
        "        (k,) = triton_wq_gemv.gemv(x, w, 4, True, triton_wq_gemv.gemv_tile(16, 512, 2), pdl=pdl)[1]\n"
        "        ptx = k.asm['ptx']\n"
        "        first = min(ptx.index(op) for op in ('ld.global', 'st.global', 'atom.global'))\n"
        "        wait = ptx.find('griddepcontrol.wait')\n"
        "        print(k.metadata.launch_pdl, -1 < wait < first, ptx.count('griddepcontrol'))\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split() == ["True", "True", "2", "False", "False", "0"]


def test_a_case_is_aligned_only_where_n_and_k_both_are_multiples_of_16():
    from autoq.kernels.compile_check import CompileCase

    assert CompileCase("x", "gemv", (), shape=(4096, 4096)).aligned
    assert not CompileCase("x", "gemv", (), shape=(4096, 4100)).aligned and not CompileCase("x", "gemv", (), shape=(1001, 4096)).aligned


def test_weights_per_thread_counts_a_k_step_of_the_tile():
    from autoq.kernels.compile_check import weights_per_thread

    cases = {c.name: c for c in default_cases()}
    assert weights_per_thread(cases["wq-gemv int4-g128-asym-fp16 split1 even-K"]) == 16 * 1024 // 128
    assert weights_per_thread(cases["wq-gemv int3-g64-asym-fp16 split1 even-K"]) == 16 * (16 * 64) // 128  # 16 groups a step
    assert weights_per_thread(cases["wq-gemm int4-g128-asym-fp16 even-K"]) == 128 * 64 // 128
    assert weights_per_thread(cases["wq-gemm int3-ch-asym-fp16 16-row"]) == 128 * 60 // 128  # 64 slots: 60 columns
    assert weights_per_thread(cases["w8a8 int8-gemm"]) == 0


def sass_benchmark_row(script: str, spec: str, tmp_path) -> dict:
    """Run ``benchmarks/<script>`` for one format (compiling for sm_90) and return its one row of the JSON it writes."""
    from pathlib import Path

    out = tmp_path / "sass.json"
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    proc = subprocess.run([sys.executable, str(Path(__file__).parents[2] / "benchmarks" / script), "--formats", spec, "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (row,) = json.loads(out.read_text())["rows"]
    assert row["format"] == spec
    return row


def test_gemv_sass_benchmark_writes_every_tile(tmp_path):
    """benchmarks/gemv_sass.py: one row per format with every autotune tile, and the device limits of its bytes."""
    from autoq.kernels.triton_wq_gemv import _GEMV_CONFIGS

    row = sass_benchmark_row("gemv_sass.py", "int4-ch-asym", tmp_path)
    assert len(row["tiles"]) == len(_GEMV_CONFIGS)  # W4: the packed-half tiles too
    assert 0.5 < row["bytes_per_weight"] < 0.51  # 4 bits plus two fp16 per 4096-weight row
    assert abs(row["limits"]["H200"] - 128 * 132 * 1.98e9 * row["bytes_per_weight"] / 4800e9) < 0.01
    assert all(t["stack_bytes"] == 0 and 3.0 <= t["loop_per_weight"] for t in row["tiles"] if not t["half2"])  # shift, and-or, FMA at least
    # packed halves: 16 instructions for a word's 8 weights, its load and its fp32 sum, at least
    assert all(t["loop_instructions"] < t["instructions"] for t in row["tiles"])  # the whole kernel's length too
    half2 = [t["loop_per_weight"] for t in row["tiles"] if t["half2"]]
    assert half2 and all(2.2 <= w for w in half2) and min(half2) < 2.9, half2


def test_gemm_sass_benchmark_writes_every_tile(tmp_path):
    """benchmarks/gemm_sass.py: one row per format with every autotune tile, 16-row tiles at batch 16, others at 128."""
    from autoq.kernels.triton_wq_gemm import _GEMM_CONFIGS

    row = sass_benchmark_row("gemm_sass.py", "int6-ch-asym", tmp_path)
    assert len(row["tiles"]) == len(_GEMM_CONFIGS)
    for tile in row["tiles"]:
        assert tile["batch"] == (16 if tile["block_m"] == 16 else 128)
        threads = 32 * tile["num_warps"]
        assert tile["weights_per_thread"] == tile["block_n"] * (tile["block_k"] // 32 * 30) // threads  # 6 words, 30 columns
        assert tile["stack_bytes"] == 0 and 3.0 <= tile["loop_per_weight"], tile


def test_bad_arguments_and_the_interpreter_are_one_line_errors_before_any_compiling(tmp_path):
    """--arch abc, TRITON_INTERPRET=1 and a --json file in a missing folder (found after every kernel compiled, losing
    the run) each ended in a traceback."""

    for argv, says in ((["--arch", "abc"], "compute capabilities as numbers"), (["--arch", "x,90"], "compute capabilities as numbers"),
                       (["--sass", "--json", str(tmp_path / "missing" / "x.json")], "a file in a folder that exists"),
                       (["--sass", "--json", str(tmp_path)], "a file in a folder that exists")):
        proc = subprocess.run([sys.executable, "-m", "autoq.kernels.compile_check", *argv], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "TRITON_INTERPRET": "0"})
        assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr and proc.stdout == "", (argv, proc.stderr)
    proc = subprocess.run([sys.executable, "-m", "autoq.kernels.compile_check", "--arch", "90"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TRITON_INTERPRET": "1"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "error: compiling kernels needs TRITON_INTERPRET unset or 0: the interpreter runs kernels without compiling them"
