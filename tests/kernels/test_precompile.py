"""autoq.kernels.precompile: worker processes compile, for a GPU target and without a GPU, exactly what launches would.

The workers compile for sm_90 into a fresh Triton cache; each compiled kernel is one folder there, so the
tests count what was compiled against what the autotuners' own configuration lists and pruning keep.
"""

from __future__ import annotations

import pytest
import torch

from autoq.errors import AutoqError
from autoq.kernels.bench import BenchConfig
from autoq.kernels.precompile import PrecompileCase, PrecompileReport, Target, cache_entries, compiling_for, precompile
from autoq.quant import QuantSpec

HOPPER = Target("cuda", 90, 32)
NOPE = PrecompileCase("nope", "int4-ch-asym", ((64, 64),), (1,))  # fails at once in its worker: nothing to compile


@pytest.fixture
def compiling(tmp_path, monkeypatch):
    """A fresh Triton cache for this test (the workers inherit the environment), and compiling, not interpreting.

    Only the worker processes compile: this one imports the kernel modules first, while the conftest's
    ``TRITON_INTERPRET`` holds, so kernels defined here stay interpreted for the tests that run after."""
    from autoq.kernels import triton_w8a8, triton_wq_gemm, triton_wq_gemv  # noqa: F401

    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton-cache"))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    return tmp_path / "triton-cache"


def autotuned_configs(k: int, batch: int, cpw: int, group: int) -> int:
    """How many kernels a launch at ``K = k`` compiles: the tiles the weight-only autotuners keep (GEMV at batch 1, else
    the GEMM), whole and split over K (a split adds its partial sums in the same kernel)."""
    from autoq.kernels import triton_wq_gemm, triton_wq_gemv
    from autoq.kernels.tiles import batch_bucket

    if batch == 1:
        x = torch.empty(1, k, dtype=torch.float16, device="meta")  # precompile's activations (HALF2 tiles take fp16 W4)
        tiles = triton_wq_gemv.prune_gemv_configs(triton_wq_gemv._GEMV_SPLIT_CONFIGS, {"K": k, "x_ptr": x}, CPW=cpw, GROUP=group,
                                                  BITS=32 // cpw)
        return len(tiles)
    tiles = triton_wq_gemm.prune_gemm_splits(triton_wq_gemm._GEMM_SPLIT_CONFIGS, {"M_BUCKET": batch_bucket(batch), "K": k}, CPW=cpw)
    return len(tiles)


def test_workers_compile_every_tile_the_autotuner_keeps_and_real_tensors_find_them(compiling):
    cases = [PrecompileCase("wq", "int4-g128-asym", ((384, 384),), (1,)), PrecompileCase("wq", "int4-g128-asym", ((384, 384),), (16,))]
    report = precompile(cases, HOPPER, workers=2, progress=False)
    expected = autotuned_configs(384, 1, 8, 128) + autotuned_configs(384, 16, 8, 128)
    assert report.failures == ()
    assert report.compiled == expected == cache_entries() > 8, report  # GEMV: 7 tiles at 384-long rows; GEMM at batch 16: 4 tiles, 8 split
    assert report.workers == 2 and report.cases == 2
    # real allocations (aligned CPU tensors) specialize like the meta stand-ins: every kernel is found in the cache
    again = precompile([PrecompileCase(c.kernel, c.spec, c.shapes, c.batches, device="cpu") for c in cases], HOPPER, workers=1,
                       progress=False)
    assert again.compiled == 0 and again.failures == (), again
    # another format is another set of kernels; longer rows add the GEMV's split candidates
    from autoq.kernels.triton_wq_gemv import gemv_splits

    assert gemv_splits(1536, 4, 0) == (2, 4)
    assert precompile([PrecompileCase("wq", "int8-ch-sym", ((384, 1536),), (1,), dtype="bfloat16")], HOPPER, workers=1, progress=False).compiled \
        == autotuned_configs(1536, 1, 4, 0) == cache_entries() - expected


def test_a_failed_case_is_reported_not_raised(compiling):
    report = precompile([PrecompileCase("w8a8", "int4-g128-asym", ((64, 64),), (1,)), NOPE],
                        HOPPER, workers=1, progress=False)
    assert report.compiled == 0 and len(report.failures) == 2
    assert any("does not read int4-g128-asym" in f for f in report.failures), report.failures
    assert any(f.startswith("nope int4-ch-asym: ") and "unknown kernel 'nope'" in f for f in report.failures), report.failures  # named
    assert "2 failed" in report.summary()
    summary = PrecompileReport(cases=3, workers=2, seconds=4.2, compiled=7, failures=("a: one", "b: two")).summary()
    assert summary == "precompiled 7 kernels for 3 cases in 4 s with 2 processes; 2 failed, first: a: one"


def test_no_more_workers_than_cases_and_an_empty_list_is_an_empty_report(compiling):
    assert precompile([NOPE], HOPPER, workers=4, progress=False).workers == 1
    empty = precompile([], HOPPER, workers=2, progress=False)
    assert (empty.cases, empty.workers, empty.compiled, empty.failures) == (0, 1, 0, ())


def test_worker_processes_that_cannot_start_are_a_reported_failure(compiling, monkeypatch):
    """No semaphores (a container without /dev/shm, say): said in the report, as a case's failure is."""
    import multiprocessing

    def refuse(method=None):
        raise OSError("no /dev/shm here")

    monkeypatch.setattr(multiprocessing, "get_context", refuse)
    report = precompile([NOPE], HOPPER, workers=1, progress=False)
    assert report.failures == ("could not start worker processes: no /dev/shm here",) and report.compiled == 0


def test_its_bar_is_drawn_seldom_in_a_log(compiling, monkeypatch, capsys):
    """Plain tqdm redrew at every case into a log (``autoq kernels bench 2> bench.log``), where autoq's other bars
    redraw every 30 s: it is autoq's progress bar now."""
    import autoq.progress

    made = []
    real = autoq.progress.progress_bar
    monkeypatch.setattr(autoq.progress, "progress_bar", lambda **options: made.append(options) or real(**options))
    precompile([NOPE], HOPPER, workers=1, progress=True)
    assert [m["desc"] for m in made] == ["precompile"]
    assert capsys.readouterr().err.count("\r") <= 3  # stderr is no terminal here: drawn as it starts and ends


def test_refuses_to_precompile_for_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(AutoqError, match="TRITON_INTERPRET"):
        precompile([PrecompileCase("wq", "int4-ch-asym", ((64, 64),), (1,))], HOPPER)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    for workers in (-1, 0):  # 0 is no count of processes, not 'one per core' (None is)
        with pytest.raises(AutoqError, match=f"at least 1, got {workers}"):
            precompile([PrecompileCase("wq", "int4-ch-asym", ((64, 64),), (1,))], HOPPER, workers=workers)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_the_current_target_needs_a_gpu_and_compiling_for_one_gives_the_driver_back(monkeypatch):
    with pytest.raises(AutoqError, match="no GPU to compile for.*Target"):
        Target.current()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with compiling_for(HOPPER):
        assert Target.current() == HOPPER
    with pytest.raises(AutoqError, match="no GPU to compile for"):  # Triton's driver is this machine's again
        Target.current()


def test_bench_config_precompiles_each_kernel_format_and_batch_over_all_shapes():
    shapes = ((384, 384), (1536, 384))
    config = BenchConfig(shapes=shapes, batches=(1, 16), formats=(QuantSpec.from_name("int4-g128-asym"), QuantSpec.from_name("int8-ch-sym")))
    cases = config.precompile_cases()
    assert [(c.kernel, c.spec, c.batches) for c in cases] == [
        ("wq", "int4-g128-asym", (1,)), ("wq", "int4-g128-asym", (16,)), ("wq", "int8-ch-sym", (1,)), ("wq", "int8-ch-sym", (16,)),
        ("w8a8", "int8-ch-sym", (1,)), ("w8a8", "int8-ch-sym", (16,))]
    assert all(c.shapes == shapes and c.device == "meta" for c in cases)
    with pytest.raises(AutoqError, match="compile_workers"):
        BenchConfig(shapes=shapes, compile_workers=-2)
