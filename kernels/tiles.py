"""Tile ordering, autotune and launch helpers shared by the kernels (launches split over K: :mod:`autoq.kernels.splits`)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from autoq.kernels.capability import autotuning
from autoq.kernels.ops import GEMM_MIN_BLOCK_M
from autoq.kernels.timing import gpu_time_us


@triton.jit
def tile_offsets(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """Row and column offsets of this program's output tile.

    Programs walk the output in groups of ``GROUP_M`` tile rows, column by column
    inside a group, so tiles that run together share weight columns in L2.
    """
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * num_n
    first_m = (pid // per_group) * GROUP_M
    size_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % size_m
    pid_n = (pid % per_group) // size_m
    return pid_m * BLOCK_M + tl.arange(0, BLOCK_M), pid_n * BLOCK_N + tl.arange(0, BLOCK_N)


def batch_bucket(m: int) -> int:
    """The batch rounded up to a power of two: the autotune key, so nearby batches share a tuned config."""
    return 1 << max(0, (m - 1).bit_length())


AUTOTUNE_REP_MS = 10.0  # of paired graph replays a candidate: 10 pairs of 8 calls at least
AUTOTUNE_CALLS = 8


def autotune_bench(kernel_call, quantiles):
    """Time one candidate configuration for the autotuner: its GPU time in ms at ``quantiles``, by graph replay.

    Like the latency tables (:mod:`autoq.kernels.timing`): ``do_bench`` let the host's launch time in,
    and on an H200 its times were a median 1.44x the graph-timed ones at the default model's shapes
    (up to 4.3x), so tiles of a few microseconds were chosen partly by launch noise. The first call
    compiles the candidate outside the timing, so a tile that does not fit (``OutOfResources`` and the
    like) reaches Triton's autotuner, which skips it, as before.
    """
    kernel_call()
    wanted = (0.5,) if quantiles is None else tuple(quantiles)
    device = torch.device("cuda", torch.cuda.current_device())
    ms = [us / 1e3 for us in gpu_time_us(kernel_call, AUTOTUNE_REP_MS, device, AUTOTUNE_CALLS, wanted)]
    return ms[0] if quantiles is None else ms


def launch(kernel, grid, args: tuple, kwargs: dict, compile_only: bool = False) -> list:
    """``kernel[grid](*args, **kwargs)``, or with ``compile_only`` only compile what that launch would run.

    ``kernel`` is a ``triton.jit`` function or an autotuner over one; an autotuner compiles every
    configuration its pruning keeps, so a later launch of the same specialization finds them all in
    Triton's cache (see :mod:`autoq.kernels.precompile`). Returns Triton's compiled kernels (one per
    configuration) with ``compile_only``, else ``[]``: what the machine-code checks read.
    """
    # Fused multiply-adds, asked for: the GEMV's shift, and-or and FMA a weight count on them. Triton 3.9 fuses by
    # default but warns at the first compile that 3.10 will not; asking keeps the code and silences the warning.
    kwargs = {**kwargs, "enable_fp_fusion": True}
    if not compile_only:
        kernel[grid](*args, **kwargs)
        return []
    compiled = kernel.warmup(*args, grid=grid, **kwargs)
    return list(compiled) if isinstance(compiled, list) else [compiled]


def launch_tile(tuned, kernel, fixed: dict, tile, grid, args: tuple, meta: dict, compile_only: bool = False,
                steps: dict | None = None, sizes: dict | None = None) -> list:
    """One launcher's choice of tile: the autotuner ``tuned`` when autotuning and no ``tile`` is named, else ``kernel``
    with ``tile`` (a ``triton.Config``) or the ``fixed`` blocks, plus the constexprs the autotuner's heuristics would
    derive (``steps``: name -> rule over the launch's ``meta``, blocks and ``sizes``, such as ``K``). See :func:`launch`."""
    if tile is None and autotuning():
        return launch(tuned, grid, args, meta, compile_only)
    blocks = fixed if tile is None else tile_kwargs(tile)
    derived = {name: rule({**meta, **blocks, **(sizes or {})}) for name, rule in (steps or {}).items()}
    return launch(kernel, grid, args, {**meta, **derived, **blocks}, compile_only)


def tile_kwargs(tile) -> dict:
    """A ``triton.Config``'s launch keywords: its block sizes, warps and stages."""
    return {**tile.kwargs, "num_warps": tile.num_warps, "num_stages": tile.num_stages}


def prune_gemm_configs(configs, named_args, **kwargs):
    """Drop tiles much taller than the batch: they only multiply masked rows (the shortest, ``GEMM_MIN_BLOCK_M``, stay)."""
    m = named_args["M_BUCKET"]
    kept = [c for c in configs if c.kwargs["BLOCK_M"] <= max(GEMM_MIN_BLOCK_M, m)]
    return kept or configs[:1]
