"""autoq.kernels.autotune_log: the tile each autotuned kernel chose and every candidate's timing, from Triton's autotuners.

Autotuning needs a GPU to time candidates, so here the autotuners' state is written as Triton writes it at a
launch; a contract test reads Triton's own source for those writes, so a Triton that stops making them fails here.
"""

from __future__ import annotations

import inspect

import pytest

pytest.importorskip("triton")

import triton  # noqa: E402

from autoq.kernels.autotune_log import autotuners, recording, tile_name  # noqa: E402


def test_tile_names_are_blocks_warps_and_stages():
    assert tile_name(triton.Config({"BLOCK_N": 16, "BLOCK_K": 1024, "PREFETCH": True}, num_warps=4, num_stages=2)) == "16x1024 w4 s2"
    assert tile_name(triton.Config({"BLOCK_N": 8, "BLOCK_K": 512, "PREFETCH": False}, num_warps=2, num_stages=2)) == "8x512 w2 s2 no-prefetch"
    rows = triton.Config({"BLOCK_N": 8, "BLOCK_K": 1024, "PREFETCH": True, "ROWS_IN_THREAD": True}, num_warps=4, num_stages=2)
    assert tile_name(rows) == "8x1024 w4 s2 rows-in-thread"
    split = triton.Config({"BLOCK_N": 16, "BLOCK_K": 512, "PREFETCH": True, "SPLIT_K": 4}, num_warps=2, num_stages=2)
    assert tile_name(split) == "16x512 w2 s2 split4"
    assert tile_name(triton.Config({**split.kwargs, "SPLIT_K": 1}, num_warps=2, num_stages=2)) == "16x512 w2 s2"
    assert tile_name(triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=4, num_stages=3)) == "64x128x64 w4 s3"


def test_half2_tiles_are_named_by_their_switches_and_prefetch_two_is_theirs_alone():
    from autoq.kernels.triton_wq_gemv import gemv_tile

    assert tile_name(gemv_tile(8, 1024, 4, half2=True)) == "8x1024 w4 s2 rows-in-thread half2"
    assert tile_name(gemv_tile(8, 1024, 4, prefetch=2, half2=True)) == "8x1024 w4 s2 prefetch2 rows-in-thread half2"
    with pytest.raises(ValueError, match="prefetch=2"):
        gemv_tile(8, 1024, 4, prefetch=2)
    for prefetch in (3, 2.0):
        with pytest.raises(ValueError, match="0, 1 or 2"):
            gemv_tile(8, 1024, 4, prefetch=prefetch, half2=True)


def test_persistent_tiles_are_named_by_their_programs_an_sm_and_are_half2_tiles_that_load_ahead():
    from autoq.kernels.triton_wq_gemv import gemv_tile

    assert tile_name(gemv_tile(8, 2048, 8, prefetch=2, half2=True, persist=3)) == "8x2048 w8 s2 prefetch2 rows-in-thread half2 persist3"
    assert "PERSIST" not in gemv_tile(8, 2048, 8, half2=True).kwargs  # the other tiles' keywords are as they were
    assert tile_name(triton.Config({"BLOCK_N": 8, "BLOCK_K": 256, "PERSIST": 0}, num_warps=1, num_stages=2)) == "8x256 w1 s2"  # none at 0
    for kwargs in ({"half2": False}, {"half2": True, "prefetch": 0}):
        with pytest.raises(ValueError, match="HALF2 tile's that loads ahead"):
            gemv_tile(8, 1024, 4, persist=4, **kwargs)


def test_triton_autotuners_record_their_choice_and_timings_where_autoq_reads_them():
    from triton.runtime.autotuner import Autotuner

    source = inspect.getsource(Autotuner)
    assert "self.best_config = " in source and "self.configs_timings = " in source
    assert set(autotuners()) == {"wq_gemv_kernel", "wq_gemv_kernel split given", "wq_gemm_kernel", "wq_gemm_kernel split given",
                                 "quantize_rows_kernel", "int8_gemm_kernel"}
    assert all(isinstance(t, Autotuner) for t in autotuners().values())


def test_recording_keeps_what_the_launches_inside_the_block_chose(monkeypatch):
    tuners = autotuners()
    gemv, gemm = tuners["wq_gemv_kernel"], tuners["wq_gemm_kernel"]
    for tuner in tuners.values():  # restored after the test
        monkeypatch.setattr(tuner, "best_config", None, raising=False)
        monkeypatch.setattr(tuner, "configs_timings", None, raising=False)
    stale = gemm.configs[0]
    gemm.best_config, gemm.configs_timings = stale, {stale: [1.0, 0.9, 1.1]}  # from a launch before the block
    quantize = tuners["quantize_rows_kernel"]
    quantize.configs_timings = {quantize.configs[0]: [0.002]}  # timed at a launch before the block
    fast, slow, too_big, failed = gemv.configs[0], gemv.configs[1], gemv.configs[2], gemv.configs[3]
    with recording() as choices:
        gemv.best_config = fast
        gemv.configs_timings = {slow: [0.0042, 0.004, 0.0045], fast: (0.0031234, 0.003, 0.0033), too_big: [float("inf")] * 3,
                                failed: [float("nan")] * 3}  # quantiles as a list or a tuple
        quantize.best_config = quantize.configs[0]  # chosen earlier, from the cache: its old timings are not this choice's
    assert [c.kernel for c in choices] == ["wq_gemv_kernel", "quantize_rows_kernel"]
    assert choices[0].tile == tile_name(fast) == choices[0].timings_us[0][0]
    assert choices[0].timings_us == ((tile_name(fast), 3.123), (tile_name(slow), 4.2))  # ms -> us (to the ns), fastest first, no inf or NaN
    assert choices[1].timings_us == ()
