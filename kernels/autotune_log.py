"""Which tile each autotuned kernel chose for a launch, and what every candidate took, read from Triton's autotuners.

A benchmark wraps each case's first launch, where autotuning happens, in :func:`recording`. The
latency table then says which tile every timing ran with, and how the other candidates did as the
autotuner timed them: what a GPU session has to tell about the tiles (the 32-row GEMV tiles, the
prefetch, narrower steps) beyond the one number it keeps.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass


def tile_name(config) -> str:
    """A ``triton.Config`` in a few characters: its blocks, warps and stages (``16x1024 w4 s2``), then the GEMV's
    switches that differ from its main tile (``no-prefetch``, ``rows-in-thread``) and a split over K it chose (``split4``)."""
    blocks = "x".join(str(v) for k, v in config.kwargs.items() if k.startswith("BLOCK_"))
    split = config.kwargs.get("SPLIT_K", 1)
    return f"{blocks} w{config.num_warps} s{config.num_stages}{gemv_switches(config.kwargs)}" + (f" split{split}" if split > 1 else "")


def gemv_switches(kwargs: dict) -> str:
    """`` no-prefetch`` (or `` prefetch2``: two steps ahead), `` rows-in-thread``, `` half2`` and `` persist<n>`` (n
    programs an SM) where a GEMV tile's keywords turn them off or on, else ``""``."""
    prefetch = kwargs.get("PREFETCH", True)
    return ("" if prefetch else " no-prefetch") + (" prefetch2" if prefetch == 2 else "") + \
        (" rows-in-thread" if kwargs.get("ROWS_IN_THREAD") else "") + \
        (" half2" if kwargs.get("HALF2") else "") + (f" persist{kwargs['PERSIST']}" if kwargs.get("PERSIST") else "")


@dataclass(frozen=True)
class TileChoice:
    """One autotuned kernel's choice: its tile and every candidate's median in us, fastest first (empty when it was
    not timed here: a single candidate left after pruning, or a choice made by an earlier launch with the same
    autotune key; a candidate that could not run, too large for the GPU, say, is left out)."""

    kernel: str
    tile: str
    timings_us: tuple[tuple[str, float], ...] = ()


def autotuners() -> dict:
    """Every autotuner by its Triton function's name (imports Triton); the weight-only kernels have two each: one chooses
    the split over K with the tile (what launches use), the other tunes the tile of a split the caller names (``split given``)."""
    from autoq.kernels import triton_w8a8, triton_wq_gemm, triton_wq_gemv

    return {"wq_gemv_kernel": triton_wq_gemv._gemv_split_tuned, "wq_gemv_kernel split given": triton_wq_gemv._gemv_tuned,
            "wq_gemm_kernel": triton_wq_gemm._gemm_split_tuned, "wq_gemm_kernel split given": triton_wq_gemm._gemm_tuned,
            "quantize_rows_kernel": triton_w8a8._quant_tuned, "int8_gemm_kernel": triton_w8a8._gemm_tuned}


def _median_us(timing) -> float:
    """An autotuner's timing of one candidate (ms; a list of quantiles, the median first) in us."""
    return float(timing[0] if isinstance(timing, (list, tuple)) else timing) * 1e3


@contextlib.contextmanager
def recording() -> Iterator[list[TileChoice]]:
    """Collect, into the list it yields, the tile of every autotuned kernel launched inside the block.

    Each autotuner sets ``best_config`` at every launch and ``configs_timings`` when it times candidates
    (Triton 3.6 and 3.9 alike); both are cleared first, so what is set afterwards belongs to this block."""
    tuners = autotuners()
    for tuner in tuners.values():
        tuner.best_config = None
        tuner.configs_timings = None
    choices: list[TileChoice] = []
    yield choices
    for name, tuner in tuners.items():
        if tuner.best_config is None:
            continue
        timings = tuner.configs_timings if isinstance(tuner.configs_timings, dict) else {}
        timed = ((tile_name(c), round(_median_us(t), 3)) for c, t in timings.items())
        ranked = sorted(((tile, us) for tile, us in timed if math.isfinite(us)), key=lambda item: item[1])  # inf: could not run
        choices.append(TileChoice(name, tile_name(tuner.best_config), tuple(ranked)))
