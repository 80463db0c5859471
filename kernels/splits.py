"""Launches split over K: fp32 partial sums that the last split of each output tile adds, in the same kernel.

A split launch writes one ``(M, N)`` fp32 slice of partial sums per split, laid out as the output. Each
program then counts its arrival on its output tile's counter (one int32 of ``counters``), and the last to
arrive adds every slice in split order, rounds once, stores the output and sets the counter back to 0
(:func:`store_split`). So a split launch is one kernel, as an unsplit one is: a second kernel to add the
slices cost a launch, which at batch 1 is a large share of a layer's few microseconds (kernels/README.md).
It is the scheme of Marlin's W4 kernels (a lock per tile in a zeroed workspace the layer keeps).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from autoq.errors import AutoqError
from autoq.kernels.capability import autotuning
from autoq.kernels.formats import split_counters

SPLITS = (2, 4, 8)  # the splits over K the split-choosing autotuners try with each of their split tiles


@triton.jit
def store_split(y, out_ptr, part_ptr, count_ptr, offs, mask, slice_size, tile, SPLIT_K: tl.constexpr):
    """Store a program's fp32 result ``y`` at output offsets ``offs`` (``mask``): to ``out_ptr`` when K is whole; else to
    its split's slice of ``part_ptr`` (slices ``slice_size`` apart), and, from the last split of output tile ``tile``
    to arrive, the slices' sum in split order, rounded once, to ``out_ptr`` (the same bits whichever split is last)."""
    if SPLIT_K == 1:
        tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        tl.store(part_ptr + tl.program_id(1) * slice_size + offs, y, mask=mask)
        tl.debug_barrier()  # every thread's partial sums are stored before the count below releases them
        arrived = tl.atomic_add(count_ptr + tile, 1, sem="acq_rel", scope="gpu")
        if arrived == SPLIT_K - 1:
            acc = tl.load(part_ptr + offs, mask=mask, other=0.0, cache_modifier=".cg")  # from L2: other SMs wrote them
            for s in tl.static_range(1, SPLIT_K):
                acc += tl.load(part_ptr + s * slice_size + offs, mask=mask, other=0.0, cache_modifier=".cg")
            tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)
            tl.atomic_xchg(count_ptr + tile, 0, sem="relaxed", scope="gpu")  # zero again for the next launch


def with_split(config, split: int):
    """``config`` (a ``triton.Config``) splitting K ``split`` ways: a candidate of a split-choosing autotuner."""
    return triton.Config({**config.kwargs, "SPLIT_K": split}, num_warps=config.num_warps, num_stages=config.num_stages)


def splits_of(configs) -> tuple[int, ...]:
    """The splits over K (more than 1) among ``configs``, in increasing order."""
    return tuple(sorted({c.kwargs["SPLIT_K"] for c in configs} - {1}))


def resolved_split(split_k: int | None, tile) -> int | None:
    """The split over K a launch runs: ``split_k``; for ``None``, the split of the ``tile`` named (its ``SPLIT_K``, 1
    without one), or ``None`` when autotuning with no tile named: the split-choosing autotuner then picks it."""
    if split_k is None:
        if tile is None:
            return None if autotuning() else 1
        return tile.kwargs.get("SPLIT_K", 1)
    if tile is not None and tile.kwargs.get("SPLIT_K", split_k) != split_k:
        raise AutoqError(f"tile {tile} splits K {tile.kwargs['SPLIT_K']} ways, not {split_k}: pass split_k=None")
    return split_k


def run_split(launch, m: int, n: int, dtype: torch.dtype, device: torch.device, splits: tuple[int, ...], row_tiles: int,
              counters: torch.Tensor | None = None) -> tuple[torch.Tensor, list]:
    """Allocate an ``(m, n)`` output and fp32 partial sums and run ``launch(out, part, counters)``: ``(out, its result)``.

    ``part`` holds a slice for the largest of ``splits`` (``(splits, m, n)``, laid out as the output), and is fp32
    even when nothing splits (then empty), so a whole tile specializes the same whichever path launches it.
    ``counters`` (int32, zero, at least ``row_tiles * n``) are the weight's own (``PackedWeight.counters``); where
    they are missing or too short, a split launch gets zeroed ones of its own (one more memset on the stream).
    """
    out = torch.empty(m, n, dtype=dtype, device=device)
    most = max(splits, default=1)
    part = torch.empty(most if most > 1 else 0, m, n, dtype=torch.float32, device=device)
    if most == 1:
        counters = torch.empty(0, dtype=torch.int32, device=device)
    elif counters is None or counters.numel() < row_tiles * n or counters.device != out.device:
        counters = split_counters(row_tiles * n, device)
    return out, launch(out, part, counters)
