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
flush and the graph launch drop out and each call starts with a cold L2, as a layer does in a
forward pass. Where capture fails, :func:`gpu_time_us` falls back to ``do_bench`` and says so.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence

import torch

FLUSH_BYTES = 256 * 1024 * 1024  # as do_bench: several times any GPU's L2
CALLS_PER_GRAPH = 16
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


def _capture(fn: Callable[[], object], flush: torch.Tensor, calls: int, with_calls: bool) -> torch.cuda.CUDAGraph:
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            flush.zero_()
            if with_calls:
                fn()
    return graph


def graph_time_us(fn: Callable[[], object], rep_ms: float, device: torch.device, calls: int = CALLS_PER_GRAPH,
                  quantiles: Sequence[float] = QUANTILES) -> tuple[float, ...]:
    """One ``fn()``'s GPU time in us at ``quantiles``, by paired graph replays for about ``rep_ms``."""
    flush = torch.empty(FLUSH_BYTES // 4, dtype=torch.int32, device=device)
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # capture wants the work warmed up on a side stream
        for _ in range(2):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    torch.cuda.synchronize(device)
    with_calls = _capture(fn, flush, calls, with_calls=True)
    flush_only = _capture(fn, flush, calls, with_calls=False)

    def replays(n: int) -> tuple[list[float], list[float]]:
        events = [[torch.cuda.Event(enable_timing=True) for _ in range(3)] for _ in range(n)]
        flush_only.replay()  # the GPU is then always behind the host: no launch gap inside the events
        for start, mid, end in events:
            start.record()
            with_calls.replay()
            mid.record()
            flush_only.replay()
            end.record()
        torch.cuda.synchronize(device)
        return [s.elapsed_time(m) for s, m, _ in events], [m.elapsed_time(e) for _, m, e in events]

    first = replays(2)
    pair_ms = max(1e-3, (max(first[0]) + max(first[1])))
    n = int(min(1000, max(10, rep_ms / pair_ms)))
    a, b = replays(n)
    return per_call_us(a, b, calls, quantiles)


def gpu_time_us(fn: Callable[[], object], rep_ms: float, device: torch.device, calls: int = CALLS_PER_GRAPH,
                quantiles: Sequence[float] = QUANTILES) -> tuple[float, ...]:
    """:func:`graph_time_us`, or ``do_bench`` (host launch cost included) with a warning where capture fails."""
    try:
        return graph_time_us(fn, rep_ms, device, calls, quantiles)
    except Exception as exc:  # noqa: BLE001 - a measurement run must go on; the warning says why, and the GPU test fails
        first = (str(exc).splitlines() or [""])[0]
        print(f"autoq: kernel timing: warning: timing by CUDA graph failed ({type(exc).__name__}: {first}); timed with do_bench, "
              "which includes the host's launch time", file=sys.stderr, flush=True)
        torch.cuda.synchronize(device)
        from triton.testing import do_bench

        return tuple(ms * 1e3 for ms in do_bench(fn, rep=max(1, int(rep_ms)), quantiles=list(quantiles)))
