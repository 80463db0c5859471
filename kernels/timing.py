"""GPU time of one call, with the host's launch cost left out and the weights read from HBM.

``triton.testing.do_bench`` puts events around each call, after an L2 flush. When the host
needs longer to launch a call (autoq's Python dispatch plus Triton's launcher) than the
flush keeps the GPU busy, the GPU waits between the events and the host's time is what gets
measured. Timed so on an H200 (2026-11-30, Triton 3.6), every weight-only kernel at LLaMA-7B
shapes took 55-300 us whatever its bytes, while the autotuner's timings of the same bare
kernels were 9-60 us.

Here both sides are CUDA graphs, as serving engines run a forward pass: one graph makes
``calls`` x (flush, call), the other ``calls`` x flush, replayed in turns with events
around each. One call's time is the difference over ``calls``, per pair of replays, so the
flush and the graph launch drop out and each call starts with a cold L2. Where capture fails,
:func:`gpu_time_us` falls back to ``do_bench`` and says so.

The flush is a 256 MB write just before each call, which no forward pass has: every call pays the
kernel's start after it and reads its weights while the flush's dirty lines leave the L2. On an H200
(2026-11-30) every W4 GEMV tile at 4096 x 4096 took 7.6-18.6 us, W2 no less than W4, and a line through
the three LLaMA shapes puts fp16 at 5.2 us plus a 3.3 TB/s stream (W4 3.4 us plus 2.2 TB/s): a fixed
cost per call that both sides of a speedup pay, part of which may be the flush's.
:func:`rotate_time_us` times calls as a forward pass runs layers instead: back to back in one graph,
each call on its own copy of the weights, enough copies (``copies_for``) that each copy has left the
L2 before it is read again. One call's time is the difference between a graph of two passes and one
of one pass, over the calls in a pass. Which of the two a latency table was measured by, it says.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence

import torch

FLUSH_BYTES = 256 * 1024 * 1024  # as do_bench: several times any GPU's L2
CALLS_PER_GRAPH = 16
ROTATE_BYTES = FLUSH_BYTES  # weight bytes one pass of rotated calls reads, at least: several times any GPU's L2
MAX_COPIES = 1024  # copies of a small layer's weights: 1024 of the default model's 384 x 384 in W4 are 76 MB
QUANTILES = (0.5, 0.2, 0.8)  # median, p20, p80: what the latency table keeps


def per_call_us(with_calls_ms: Sequence[float], flush_only_ms: Sequence[float], calls: int,
                quantiles: Sequence[float] = QUANTILES) -> tuple[float, ...]:
    """One call's time in us at ``quantiles`` (default: median, p20, p80), from paired replay times (ms) of the two graphs."""
    if len(with_calls_ms) != len(flush_only_ms) or not with_calls_ms or calls < 1:
        raise ValueError(f"need as many replays of each graph (got {len(with_calls_ms)} and {len(flush_only_ms)}, "
                         f"at least one) and calls >= 1 (got {calls})")
    diffs = (torch.tensor(with_calls_ms, dtype=torch.float64) - torch.tensor(flush_only_ms, dtype=torch.float64)) / calls * 1e3
    return tuple(diffs.quantile(torch.tensor(list(quantiles), dtype=torch.float64)).tolist())


def warm_up(device: torch.device, seconds: float = 0.5) -> None:
    """Keep the GPU busy for ``seconds`` so that its clocks are up before the first timing (it idles at 345 MHz)."""
    a = torch.randn(4096, 4096, device=device, dtype=torch.float16)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(20):
            a @ a
        torch.cuda.synchronize(device)


def copies_for(weight_bytes: int, cycle_bytes: int = ROTATE_BYTES, most: int = MAX_COPIES) -> int:
    """Copies of a weight of ``weight_bytes`` that :func:`rotate_time_us` cycles through: ``cycle_bytes`` in all, 2 to ``most``."""
    if weight_bytes <= 0:
        raise ValueError(f"weight_bytes must be positive, got {weight_bytes}")
    return max(2, min(most, -(-cycle_bytes // weight_bytes)))


def copies_needed(timing: str, weight_bytes: int) -> int:
    """Copies of a weight that ``timing`` times a call on: one for ``flush``, :func:`copies_for` for ``rotate``."""
    return copies_for(weight_bytes) if timing == "rotate" else 1


def _capture(work: Callable[[], None]) -> torch.cuda.CUDAGraph:
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        work()
    return graph


def _warm(fns: Sequence[Callable[[], object]], device: torch.device) -> None:
    """Run each ``fn`` twice on a side stream, as capture wants (allocations and lazy set-up done before it)."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(2):
            for fn in fns:
                fn()
    torch.cuda.current_stream(device).wait_stream(side)
    torch.cuda.synchronize(device)


def _paired_replays(long: torch.cuda.CUDAGraph, short: torch.cuda.CUDAGraph, rep_ms: float,
                    device: torch.device) -> tuple[list[float], list[float]]:
    """Replay times (ms) of ``long`` and ``short``, in turns, for about ``rep_ms`` (10 to 1000 pairs)."""
    def replays(n: int) -> tuple[list[float], list[float]]:
        events = [[torch.cuda.Event(enable_timing=True) for _ in range(3)] for _ in range(n)]
        short.replay()  # the GPU is then always behind the host: no launch gap inside the events
        for start, mid, end in events:
            start.record()
            long.replay()
            mid.record()
            short.replay()
            end.record()
        torch.cuda.synchronize(device)
        return [s.elapsed_time(m) for s, m, _ in events], [m.elapsed_time(e) for _, m, e in events]

    first = replays(2)
    pair_ms = max(1e-3, (max(first[0]) + max(first[1])))
    return replays(int(min(1000, max(10, rep_ms / pair_ms))))


def graph_time_us(fn: Callable[[], object], rep_ms: float, device: torch.device, calls: int = CALLS_PER_GRAPH,
                  quantiles: Sequence[float] = QUANTILES) -> tuple[float, ...]:
    """One ``fn()``'s GPU time in us at ``quantiles``, by paired graph replays for about ``rep_ms``: L2 flushed before each call."""
    flush = torch.empty(FLUSH_BYTES // 4, dtype=torch.int32, device=device)
    _warm([fn], device)

    def flushes(with_calls: bool) -> Callable[[], None]:
        def work() -> None:
            for _ in range(calls):
                flush.zero_()
                if with_calls:
                    fn()
        return work

    with_calls, flush_only = _capture(flushes(True)), _capture(flushes(False))
    return per_call_us(*_paired_replays(with_calls, flush_only, rep_ms, device), calls, quantiles)


def rotate_time_us(fns: Sequence[Callable[[], object]], rep_ms: float, device: torch.device,
                   quantiles: Sequence[float] = QUANTILES) -> tuple[float, ...]:
    """One call's GPU time in us at ``quantiles`` when ``fns`` (the same call, each on its own copy of the
    weights: see :func:`copies_for`) run back to back, as layers do in a forward pass; no flush."""
    if len(fns) < 2:
        raise ValueError(f"rotate_time_us needs at least 2 calls on distinct copies, got {len(fns)}")
    _warm(fns, device)

    def passes(count: int) -> Callable[[], None]:
        def work() -> None:
            for _ in range(count):
                for fn in fns:
                    fn()
        return work

    two, one = _capture(passes(2)), _capture(passes(1))
    return per_call_us(*_paired_replays(two, one, rep_ms, device), len(fns), quantiles)


def _or_do_bench(measure: Callable[[], tuple[float, ...]], fn: Callable[[], object], rep_ms: float, device: torch.device,
                 quantiles: Sequence[float]) -> tuple[float, ...]:
    """``measure()``, or ``fn`` timed by ``do_bench`` (host launch cost included) with a warning where capture fails."""
    try:
        return measure()
    except Exception as exc:  # noqa: BLE001 - a measurement run must go on; the warning says why, and the GPU test fails
        first = (str(exc).splitlines() or [""])[0]
        print(f"autoq: kernel timing: warning: timing by CUDA graph failed ({type(exc).__name__}: {first}); timed with do_bench, "
              "which includes the host's launch time", file=sys.stderr, flush=True)
        torch.cuda.synchronize(device)
        from triton.testing import do_bench

        return tuple(ms * 1e3 for ms in do_bench(fn, rep=max(1, int(rep_ms)), quantiles=list(quantiles)))


def gpu_time_us(fn: Callable[[], object], rep_ms: float, device: torch.device, calls: int = CALLS_PER_GRAPH,
                quantiles: Sequence[float] = QUANTILES) -> tuple[float, ...]:
    """:func:`graph_time_us`, or ``do_bench`` with a warning where capture fails."""
    return _or_do_bench(lambda: graph_time_us(fn, rep_ms, device, calls, quantiles), fn, rep_ms, device, quantiles)


def time_calls_us(fns: Sequence[Callable[[], object]], timing: str, rep_ms: float, device: torch.device,
                  quantiles: Sequence[float] = QUANTILES) -> tuple[float, ...]:
    """One call's GPU time by ``timing``: ``flush`` times ``fns[0]`` (:func:`graph_time_us`), ``rotate`` cycles through
    ``fns`` (:func:`rotate_time_us`); ``do_bench`` on ``fns[0]`` with a warning where capture fails."""
    if timing == "flush":
        return gpu_time_us(fns[0], rep_ms, device, quantiles=quantiles)
    if timing == "rotate":
        return _or_do_bench(lambda: rotate_time_us(fns, rep_ms, device, quantiles), fns[0], rep_ms, device, quantiles)
    raise ValueError(f"unknown timing {timing!r}; choose flush or rotate")
