"""kernels/timing.py: one call's GPU time from paired graph replays, the host's launch time left out."""

from __future__ import annotations

import time

import pytest
import torch

from autoq.kernels.timing import MAX_COPIES, ROTATE_BYTES, copies_for, gpu_time_us, per_call_us, rotate_time_us, time_calls_us


def test_one_calls_time_is_the_paired_difference_over_the_calls():
    gen = torch.Generator().manual_seed(0)
    flush = (1.0 + 0.05 * torch.rand(200, generator=gen, dtype=torch.float64)).tolist()  # ms, each replay's own
    call_us = (7.0 + torch.rand(200, generator=gen, dtype=torch.float64)).tolist()  # 7-8 us a call
    with_calls = [f + 16 * c * 1e-3 for f, c in zip(flush, call_us)]
    median, p20, p80 = per_call_us(with_calls, flush, calls=16)
    assert p20 <= median <= p80
    assert 7.0 <= p20 and p80 <= 8.0 and abs(median - 7.5) < 0.15  # the flush's own spread (50 us) drops out by pairing


def test_any_quantiles_in_the_order_asked():
    """The autotuner asks for (0.5, 0.2, 0.8) and Triton's do_bench contract returns them in that order."""
    flush = [1.0] * 101
    with_calls = [1.0 + 4 * (1.0 + i / 100) * 1e-3 for i in range(101)]  # 1-2 us a call, evenly
    assert per_call_us(with_calls, flush, 4, quantiles=(0.5, 0.2, 0.8)) == pytest.approx((1.5, 1.2, 1.8))
    assert per_call_us(with_calls, flush, 4, quantiles=(0.9,)) == pytest.approx((1.9,))


@pytest.mark.parametrize("a, b, calls", [([1.0], [1.0, 2.0], 4), ([], [], 4), ([1.0], [0.5], 0)])
def test_unpaired_or_empty_replays_are_refused(a, b, calls):
    with pytest.raises(ValueError, match="as many replays"):
        per_call_us(a, b, calls)


def test_rotated_copies_cover_several_l2s_within_bounds():
    w4_llama = 4096 * 4096 // 2 + 4096 * 4  # W4 per channel at 4096 x 4096: 8.4 MB -> 32 copies, 268 MB
    assert copies_for(w4_llama) == 32 and (copies_for(w4_llama) - 1) * w4_llama < ROTATE_BYTES <= 32 * w4_llama
    assert copies_for(2 * 11008 * 4096) == 3  # fp16 gate/up: 90 MB
    assert copies_for(ROTATE_BYTES) == 2 and copies_for(10 * ROTATE_BYTES) == 2  # two at least: a pass is not one call
    assert copies_for(384 * 384 // 2) == MAX_COPIES  # a small layer: bounded, 1024 x 74 KB
    assert copies_for(100, cycle_bytes=1000, most=8) == 8
    with pytest.raises(ValueError, match="positive"):
        copies_for(0)


def test_rotation_needs_two_copies_and_timing_is_one_of_two():
    with pytest.raises(ValueError, match="at least 2 calls on distinct copies, got 1"):
        rotate_time_us([lambda: None], 1.0, torch.device("cpu"))
    with pytest.raises(ValueError, match="unknown timing 'cold'; choose flush or rotate"):
        time_calls_us([lambda: None], "cold", 1.0, torch.device("cpu"))


@pytest.mark.gpu_timing
@pytest.mark.skipif(not torch.cuda.is_available(), reason="times copies on a GPU")
def test_rotated_calls_are_timed_each_on_its_copy():
    """16 MB copies, each call on its own pair of buffers: a call moves 32 MB, so it takes at least that over any GPU's
    bandwidth (8 TB/s) and, with no host time in it, under 1 ms (32 MB at 100 GB/s is 0.34 ms: a bound on the
    method, not on the GPU's speed); every copy ran."""
    device = torch.device("cuda", torch.cuda.current_device())
    pairs = [(torch.randn(4 * 1024 * 1024, device=device), torch.empty(4 * 1024 * 1024, device=device))
             for _ in range(copies_for(32 * 1024 * 1024))]
    median, p20, p80 = rotate_time_us([lambda s=s, d=d: d.copy_(s) for s, d in pairs], rep_ms=20, device=device)
    assert 32 * 2**20 / 8e12 * 1e6 < p20 <= median <= p80 < 1000
    assert all(torch.equal(s, d) for s, d in pairs)


@pytest.mark.gpu_timing
@pytest.mark.skipif(not torch.cuda.is_available(), reason="times a copy on a GPU")
def test_the_hosts_time_stays_out_of_the_measurement():
    """A call that sleeps 2 ms on the host before a 16 MB copy: its graph time is the copy's (under 1 ms on any GPU),
    not the sleep."""
    device = torch.device("cuda", torch.cuda.current_device())
    src = torch.randn(4 * 1024 * 1024, device=device)
    dst = torch.empty_like(src)

    def call():
        time.sleep(2e-3)
        dst.copy_(src)

    median, p20, p80 = gpu_time_us(call, rep_ms=20, device=device)
    assert 0 < p20 <= median <= p80 < 1000
    assert torch.equal(dst, src)


@pytest.mark.gpu_timing
@pytest.mark.skipif(not torch.cuda.is_available(), reason="times a kernel on a GPU")
def test_the_autotuners_bench_returns_ms_at_its_quantiles():
    from autoq.kernels.tiles import autotune_bench

    src = torch.randn(4 * 1024 * 1024, device="cuda")
    dst = torch.empty_like(src)
    median, p20, p80 = autotune_bench(lambda: dst.copy_(src), quantiles=(0.5, 0.2, 0.8))
    assert 0 < p20 <= median <= p80 < 1.0  # ms: a 32 MB copy takes some us (0.34 ms at 100 GB/s)
    assert 0 < autotune_bench(lambda: dst.copy_(src), quantiles=None) < 1.0
