"""Persistent HALF2 GEMV tiles: a grid of a few programs an SM, each walking several row tiles with its loads ahead.

The H200's timings (``benchmarks/results/gpu_session_nvidia-h200_2026-12-04_half2``) put the W4 GEMV's cost in its
fixed part and its marginal rate, not its arithmetic: 4096 x 4096 per channel took 5.58 us and 11008 x 4096 10.64 us,
so the 14.2 MB between them streamed at 2.8 TB/s, where fp16 ``F.linear`` streamed at about 4.8. A 4096 x 4096 layer
of 8-row tiles is 512 programs, each of two 2048-column steps: a program issues its loads, waits a memory latency,
reduces its rows and ends, and the programs after it start cold. At 11008 rows (1376 programs, about 1.7 waves of
those that fit) the memory pipe drains between waves. 4096 x 11008, with one wave of programs each streaming 5 whole
steps and a partial one, ran at a better rate (2.26 against 2.12 TB/s in all).

Here the grid is ``PERSIST`` programs an SM (as many as the layer has tiles at most), and program ``p`` takes tiles
``p, p + G, p + 2G, ...`` (``G`` programs). Its loads run ``PREFETCH`` steps ahead over the flat sequence of its
(tile, step) positions, across the tiles' boundaries: the first steps of its next tile are in flight while it sums
and stores the rows of the one before, and per channel the next tile's scales and zeros load a whole tile ahead.
The arithmetic is :mod:`autoq.kernels.triton_half2`'s, step for step.

Whole K steps only (``K`` a multiple of ``BLOCK_K``; the autotuner prunes these tiles elsewhere) and no split over
K: a step's position then needs no mask along K, and each tile's rows are summed by one program. A prefetch past
the program's last position reads the layer's last tile again (in bounds, from L2, thrown away).
"""

from __future__ import annotations

import triton
import triton.language as tl

from autoq.kernels.triton_half2 import SYMMETRIC_NZ, SYMMETRIC_NZH, _fetch, step_scaled, zero_pairs_f16
from autoq.kernels.triton_row_sums import sum_rows
from autoq.kernels.triton_scales import load_masked


def persistent_grid(n_tiles: int, rows: int, slots: int, per_slot: int) -> int:
    """Programs along N of a persistent launch: ``per_slot`` a slot (an SM; ``slots`` of them) shared by the batch's
    ``rows``, at least one and no more than the ``n_tiles`` row tiles (a program without a tile would only wait)."""
    return max(1, min(n_tiles, slots * per_slot // max(1, rows)))


@triton.jit
def _channels(s_ptr, z_ptr, tile, N, stride_sn, BLOCK_N: tl.constexpr, HAS_ZEROS: tl.constexpr, EVEN_N: tl.constexpr):
    """Row tile ``tile``'s per-channel scales and zeros ``(BLOCK_N,)`` as stored (fp16; zero 0 when symmetric): loaded a
    tile ahead and carried so, not as the shifts :func:`_shifts` makes of them (16 registers more a thread for 8 rows)."""
    offs = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = None if EVEN_N else offs < N
    scale = load_masked(s_ptr + offs * stride_sn, mask)
    if HAS_ZEROS:
        zero = load_masked(z_ptr + offs * stride_sn, mask)
    else:
        zero = 0
    return scale, zero


@triton.jit
def _shifts(zero, HAS_ZEROS: tl.constexpr, ASM: tl.constexpr):
    """The rows' shifts ``(BLOCK_N, 1)`` for :func:`autoq.kernels.triton_half2.word_dots` from their zeros (constants
    when symmetric)."""
    if HAS_ZEROS:
        nz, nzh = zero_pairs_f16(zero.to(tl.float16), ASM)
        nz = nz[:, None]
        nzh = nzh[:, None]
    else:
        nz = SYMMETRIC_NZ
        nzh = SYMMETRIC_NZH
    return nz, nzh


@triton.jit
def _advance(pt, ps, S, G):
    """The flat position after (tile ``pt``, step ``ps``): the next step, or the first step of the program's next tile."""
    wrap = (ps + 1 == S).to(tl.int32)
    return pt + wrap * G, ps + 1 - wrap * S


@triton.jit
def _fetch_at(x_pairs, w_ptr, s_ptr, z_ptr, pt, ps, last_tile, N, flat, wi, wcols, w_whole, K, stride_wn, stride_sn, stride_sg,
              CPW: tl.constexpr, GROUP: tl.constexpr, HAS_ZEROS: tl.constexpr, EVEN_N: tl.constexpr, BLOCK_N: tl.constexpr,
              BW: tl.constexpr, SCALES: tl.constexpr):
    """:func:`autoq.kernels.triton_half2._fetch` of step ``ps`` of row tile ``pt`` (clamped to the layer's last tile),
    without predicates along K: every step is whole. The tile's rows are addressed from its first (:func:`_tile_base`)."""
    tile = tl.minimum(pt, last_tile)
    w_tile, s_tile, z_tile, local, row_mask = _tile_base(w_ptr, s_ptr, z_ptr, tile, N, flat, stride_wn, stride_sn, BLOCK_N, BW)
    return _fetch(x_pairs, w_tile, s_tile, z_tile, local, row_mask, ps * BW, wi, wcols, w_whole, K, stride_wn, stride_sn, stride_sg,
                  CPW, GROUP, HAS_ZEROS, False, EVEN_N, BLOCK_N, BW, SCALES, False)


@triton.jit
def _tile_base(w_ptr, s_ptr, z_ptr, tile, N, flat, stride_wn, stride_sn, BLOCK_N: tl.constexpr, BW: tl.constexpr):
    """The words', scales' and zeros' pointers at row tile ``tile``'s first row, each thread's rows from there
    (``0 .. BLOCK_N - 1``) and their mask. From the tile's first row the rows' offsets are constants: the scales'
    addresses of 8 rows, made from each row's 64-bit offset, took 55 instructions more a step in groups (sm_90 SASS)."""
    first = tl.cast(tile, tl.int64) * BLOCK_N  # (the interpreter walks tiles as Python ints)
    local = flat // BW
    return w_ptr + first * stride_wn, s_ptr + first * stride_sn, z_ptr + first * stride_sn, local, tile * BLOCK_N + local < N


@triton.jit
def gemv_half2_persistent(x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, N, K, row, stride_xm, stride_wn, stride_sn, stride_sg, stride_om,
                          BITS: tl.constexpr, CPW: tl.constexpr, GROUP: tl.constexpr, HAS_ZEROS: tl.constexpr, EVEN_N: tl.constexpr,
                          BLOCK_N: tl.constexpr, BW: tl.constexpr, PREFETCH: tl.constexpr, ASM: tl.constexpr):
    """Store ``x[row] @ dequant(W).T`` for the row tiles ``program_id(0) + i * num_programs(0)`` (``BLOCK_N`` outputs
    each) to row ``row`` of ``out_ptr``; K is whole steps of ``BW`` words (see the module's docstring)."""
    tl.static_assert(BITS == 4 and CPW == 8, "HALF2 tiles read int4 words")
    tl.static_assert(PREFETCH == 1 or PREFETCH == 2, "a persistent tile loads ahead: PREFETCH 1 or 2")
    wi = tl.arange(0, BW) ^ 1
    flat = tl.arange(0, BLOCK_N * BW)
    wcols = (flat % BW) ^ 1
    x_pairs = (x_ptr + row * stride_xm).to(tl.pointer_type(tl.int32))
    n_tiles = tl.cdiv(N, BLOCK_N)
    last_tile = n_tiles - 1
    S = K // (CPW * BW)  # whole steps a tile
    w_whole = S * BW
    G = tl.num_programs(0)
    AHEAD: tl.constexpr = PREFETCH == 2  # groups' scales with the words two steps ahead, else in the step
    pt = tl.program_id(0)
    ps = 0
    words, xa, xb, xc, xd, sc, zr = _fetch_at(x_pairs, w_ptr, s_ptr, z_ptr, pt, ps, last_tile, N, flat, wi, wcols, w_whole, K, stride_wn,
                                              stride_sn, stride_sg, CPW, GROUP, HAS_ZEROS, EVEN_N, BLOCK_N, BW, AHEAD)
    pt, ps = _advance(pt, ps, S, G)
    if PREFETCH == 2:
        words1, xa1, xb1, xc1, xd1, sc1, zr1 = _fetch_at(x_pairs, w_ptr, s_ptr, z_ptr, pt, ps, last_tile, N, flat, wi, wcols, w_whole, K,
                                                         stride_wn, stride_sn, stride_sg, CPW, GROUP, HAS_ZEROS, EVEN_N, BLOCK_N, BW, AHEAD)
        pt, ps = _advance(pt, ps, S, G)
    if GROUP == 0:
        scale, zero = _channels(s_ptr, z_ptr, tl.program_id(0), N, stride_sn, BLOCK_N, HAS_ZEROS, EVEN_N)
    for tile in range(tl.program_id(0), n_tiles, G):
        if GROUP == 0:  # this tile's shifts; the next tile's scales and zeros, a whole tile ahead
            nz, nzh = _shifts(zero, HAS_ZEROS, ASM)
            scale_n, zero_n = _channels(s_ptr, z_ptr, tl.minimum(tile + G, last_tile), N, stride_sn, BLOCK_N, HAS_ZEROS, EVEN_N)
        else:  # each word's own, loaded with its words
            nz = 0
            nzh = 0
        # where a step loads its own scales (groups, one ahead), from this tile's first row; unused (and not compiled) elsewhere
        _, s_tile, z_tile, local, row_mask = _tile_base(w_ptr, s_ptr, z_ptr, tile, N, flat, stride_wn, stride_sn, BLOCK_N, BW)
        acc = tl.zeros([BLOCK_N, BW], dtype=tl.float32)
        for w0 in range(0, w_whole, BW):
            if PREFETCH == 2:
                words2, xa2, xb2, xc2, xd2, sc2, zr2 = _fetch_at(x_pairs, w_ptr, s_ptr, z_ptr, pt, ps, last_tile, N, flat, wi, wcols, w_whole,
                                                                 K, stride_wn, stride_sn, stride_sg, CPW, GROUP, HAS_ZEROS, EVEN_N, BLOCK_N,
                                                                 BW, AHEAD)
            else:
                words1, xa1, xb1, xc1, xd1, sc1, zr1 = _fetch_at(x_pairs, w_ptr, s_ptr, z_ptr, pt, ps, last_tile, N, flat, wi, wcols, w_whole,
                                                                 K, stride_wn, stride_sn, stride_sg, CPW, GROUP, HAS_ZEROS, EVEN_N, BLOCK_N,
                                                                 BW, AHEAD)
            pt, ps = _advance(pt, ps, S, G)
            acc = step_scaled(acc, words, xa, xb, xc, xd, sc, zr, nz, nzh, s_tile, z_tile, local, row_mask, w0, wcols, w_whole, K, stride_sn,
                              stride_sg, CPW, GROUP, HAS_ZEROS, EVEN_N, BLOCK_N, BW, AHEAD, ASM)
            words, xa, xb, xc, xd, sc, zr = words1, xa1, xb1, xc1, xd1, sc1, zr1
            if PREFETCH == 2:
                words1, xa1, xb1, xc1, xd1, sc1, zr1 = words2, xa2, xb2, xc2, xd2, sc2, zr2
        sums = sum_rows(acc, BLOCK_N, BW)
        offs_n = tile * BLOCK_N + tl.arange(0, BLOCK_N)
        if GROUP == 0:
            y = scale.to(tl.float32) * 64.0 * sums
            scale = scale_n
            zero = zero_n
        else:
            y = 64.0 * sums
        tl.store(out_ptr + row * stride_om + offs_n, y.to(out_ptr.dtype.element_ty), mask=None if EVEN_N else offs_n < N)
