"""Launches split over K: fp32 partial sums, one small kernel adding them, and the autotuners' choice of the split.

A split launch writes fp32 partial sums, one ``(M, N)`` slice a split laid out as the output, and
:func:`add_splits` adds them in fp32 and rounds once. The weight-only kernels' split-choosing autotuners
time each split candidate with that adding (:func:`add_splits_after_bench`, their post-hook), and
:func:`run_split` is the one launch path of both: output, partial sums, kernel, the split it ran added.
"""

from __future__ import annotations

import contextlib
import threading

import torch
import triton
import triton.language as tl

from autoq.errors import AutoqError
from autoq.kernels.capability import autotuning
from autoq.kernels.tiles import launch


@triton.jit
def _add_splits_kernel(part_ptr, out_ptr, numel, SPLIT_K: tl.constexpr, BLOCK: tl.constexpr):
    """``out = sum over s of part[s]``, added in fp32 in split order and rounded once to ``out``'s dtype."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    acc = tl.load(part_ptr + offs, mask=mask, other=0.0)
    for s in tl.static_range(1, SPLIT_K):
        acc += tl.load(part_ptr + s * numel + offs, mask=mask, other=0.0)
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


ADD_BLOCK = 1024  # outputs a program of the adding kernel: 4 warps, 8 a thread
SPLITS = (2, 4, 8)  # the splits over K the split-choosing autotuners try with each of their split tiles


def with_split(config, split: int):
    """``config`` (a ``triton.Config``) splitting K ``split`` ways: a candidate of a split-choosing autotuner."""
    return triton.Config({**config.kwargs, "SPLIT_K": split}, num_warps=config.num_warps, num_stages=config.num_stages)


def splits_of(configs) -> tuple[int, ...]:
    """The splits over K (more than 1) among ``configs``, in increasing order."""
    return tuple(sorted({c.kwargs["SPLIT_K"] for c in configs} - {1}))


def add_splits(part: torch.Tensor, split_k: int, out: torch.Tensor, compile_only: bool = False) -> None:
    """``out = sum of part[:split_k]`` for fp32 partial sums ``part`` laid out as ``out`` (contiguous), by one kernel.

    It adds in fp32 and rounds once to ``out``'s dtype, where ``part.sum(0).to(dtype)`` took two kernels and
    wrote and read the fp32 sum once more (a batch-16 W4 GEMM of 4096 x 4096 splits 8 ways). Not yet timed on a GPU.
    """
    numel = out.numel()
    launch(_add_splits_kernel, (triton.cdiv(numel, ADD_BLOCK),), (part, out, numel),
           dict(SPLIT_K=split_k, BLOCK=ADD_BLOCK, num_warps=4), compile_only)


def add_splits_after_bench(nargs: dict, exception) -> None:
    """Post-hook of the autotuners that choose a split over K: a split candidate's timing includes adding its partial
    sums, as every launch of it does (Triton calls it inside each candidate's timed call, never on a plain launch)."""
    if exception is None and nargs["SPLIT_K"] > 1:
        add_splits(nargs["part_ptr"], nargs["SPLIT_K"], nargs["out_ptr"])


# An autotuner that chooses the split is one object for every layer and records each launch's choice in best_config:
# a launch, the read of its choice and the adding hold this lock, or a launch in another thread could swap the choice
# in between (and under the interpreter, two threads' launches collide).
_SPLIT_CHOICE_LOCK = threading.Lock()


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


def run_split(launch, chooser, m: int, n: int, dtype: torch.dtype, device: torch.device, split_k: int | None,
              splits: tuple[int, ...], compile_only: bool = False) -> tuple[torch.Tensor, list]:
    """Allocate an ``(m, n)`` output and fp32 partial sums, run ``launch(out, part)`` and add the partial sums it wrote.

    ``part`` holds a slice for the largest of ``splits`` (``(splits, m, n)``, laid out as the output), and is
    fp32 even when nothing splits (then empty), so a whole tile specializes the same whichever path launches
    it. The split run is ``split_k``, or, for ``None``, what the autotuner ``chooser`` chose for this launch.
    With ``compile_only`` it compiles one adding kernel for each of ``splits``. Returns ``(out, launch's result)``.
    """
    out = torch.empty(m, n, dtype=dtype, device=device)
    most = max(splits, default=1)
    part = torch.empty(most if most > 1 else 0, m, n, dtype=torch.float32, device=device)
    chosen_by_tuner = split_k is None and not compile_only
    with _SPLIT_CHOICE_LOCK if chosen_by_tuner else contextlib.nullcontext():
        compiled = launch(out, part)
        chosen = chooser.best_config.kwargs["SPLIT_K"] if chosen_by_tuner else split_k
        if compile_only:
            for split in splits:
                if split > 1:
                    add_splits(part, split, out, compile_only=True)
        elif chosen > 1:
            add_splits(part, chosen, out)
    return out, compiled
