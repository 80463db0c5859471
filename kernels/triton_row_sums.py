"""Sums of a tile's rows for the batch-1 GEMV: 9 shuffles for 8 rows across a warp's lanes instead of 40.

With the rows in a thread (:mod:`autoq.kernels.triton_half2`) each thread ends its loop holding one partial sum of
each of its ``R`` rows; ``tl.sum`` then reduces every row on its own across the 32 lanes (``5 R`` shuffles) and
across the warps (3 more per row through shared memory for 8 warps). That was about 190 instructions a thread in
8 x 2048 on 8 warps (sm_90 SASS), as many as one of its two K steps at 4096 x 4096. Here each butterfly level
halves the rows a lane holds: the lane whose bit ``b`` is set keeps the odd rows of its pairs and sends the even
ones to its partner (lane ``^ 2**b``), which does the opposite, so 8 rows take 4 + 2 + 1 exchanges and each lane
ends with one row's partial sum (row ``lane % R``). The lanes that share a row, and the warps, are then summed
by ``tl.sum``. ``tl.gather`` along the lanes expresses the exchange: it is a Triton operation with a meaning
independent of layout (the interpreter runs it as such), and where the gathered axis lies in one warp's lanes,
as when a step has as many words as the tile has threads, Triton lowers it to warp shuffles. Where it has fewer
(HALF2 32 x 1024 on 8 warps, W2 16 x 1024 on 4), part of the exchange goes through shared memory, and the kernel is
still shorter than with ``tl.sum`` (sm_90 SASS, Triton 3.9: 1225 to 1016 and 813 to 732 instructions).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _fold(v, lane, BIT: tl.constexpr, R: tl.constexpr, NW: tl.constexpr):
    """``v`` ``(NW, 32, R)`` (warps, lanes, rows) to ``(NW, 32, 1)``: at level ``BIT`` lanes pair up as ``i ^ 2**BIT`` and
    each keeps the half of its row pairs its bit names (odd rows where set) plus its partner's partial sums of them."""
    even, odd = tl.split(tl.reshape(v, [NW, 32, R // 2, 2]))
    high = ((lane >> BIT) & 1) != 0
    keep = tl.where(high, odd, even)
    send = tl.where(high, even, odd)
    partner = tl.broadcast_to(lane ^ (1 << BIT), [NW, 32, R // 2])
    v = keep + tl.gather(send, partner, axis=1)
    if R // 2 > 1:
        v = _fold(v, lane, BIT + 1, R // 2, NW)
    return v


@triton.jit
def row_sums(acc, R: tl.constexpr, BW: tl.constexpr):
    """``tl.sum(acc, axis=1)`` of ``acc`` ``(R, BW)``, ``R`` a power of two up to 32 and ``BW`` a multiple of 32, summed
    by the halving butterfly above: column ``c`` is taken as lane ``c % 32`` of warp ``c // 32``, as the GEMV's rows in
    a thread lay it out when ``BW`` is its thread count (any other layout gives the same sums, maybe more slowly)."""
    tl.static_assert(R >= 2 and R <= 32 and R & (R - 1) == 0 and BW % 32 == 0, "row_sums takes 2-32 rows (a power of two), BW % 32 == 0")
    NW: tl.constexpr = BW // 32
    v = tl.permute(tl.reshape(acc, [R, NW, 32]), (1, 2, 0))
    lane = tl.arange(0, 32)[None, :, None]
    v = _fold(v, lane, 0, R, NW)  # lane l now holds a partial sum of row l % R
    v = tl.reshape(v, [NW, 32 // R, R])
    return tl.sum(tl.sum(v, axis=1), axis=0)


@triton.jit
def sum_rows(acc, R: tl.constexpr, BW: tl.constexpr):
    """``tl.sum(acc, axis=1)`` of a rows-in-a-thread tile ``(R, BW)``: by :func:`row_sums` where it applies (2-32 rows, a
    power of two, and ``BW`` a multiple of 32), else by ``tl.sum``."""
    if R >= 2 and R <= 32 and (R & (R - 1)) == 0 and BW % 32 == 0:
        sums = row_sums(acc, R, BW)
    else:
        sums = tl.sum(acc, axis=1)
    return sums
