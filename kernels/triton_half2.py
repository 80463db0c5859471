"""W4 dot products in packed halves (fp16x2) for the batch-1 GEMV's ``HALF2`` tiles: fewer instructions a weight.

The fp32 GEMV spends a shift, an and-or and an FMA on every weight (about 3.7 instructions a weight
in its loop), near what an H200 can issue while its memory streams W4 weights. Here
one 32-bit word of eight int4 codes becomes four fp16x2 pairs with four and-ors (``lop3``) and a
shift: or-ing a code into the mantissa of 1024.0h gives ``1024 + code`` exactly. One fp16x2 FMA a pair
maps that to ``(code - zero) / 64`` (exact: small multiples of 1/64), four more multiply the pairs by
the activations and sum them, and the two halves are added in fp32: 16 instructions for 8 weights (the two
shifts by the zero point, :func:`zero_pairs`, are made once a row per channel). On the H200 the first version,
17 instructions with one shift made in each word, made tiles 4-16% faster than the fp32 ones of the same shape
(``kernels/README.md``).

Rounding: each product is rounded to fp16 and a word's four products a lane are summed in fp16
before the fp32 accumulation, so a word's error stays within a few units of fp16 roundoff of its
``sum |scale * (code - zero) * x|``, the bound the kernel tests hold every GEMV to. The zero point
(integer-valued, as the format says) is subtracted before the product, exactly, so no ``zero * sum x``
correction (and no cancellation) follows. Dividing by 64 keeps a lane's partial sum of four products within
``0.94 * max |x|``, so no fp16 activation can overflow it (divided by 16, activations over 17000 did); the price
is that products under fp16's smallest normal number (6.1e-5), from activations under about 3e-3, are rounded
to within 2**-25: ``2e-6 * scale`` a weight once scaled back (a numpy emulation of the PTX: within 2.1 fp16
roundoffs of a word's ``sum |terms|`` for activations of N(0, 3), 5 for N(0, 1e-3), 50 for N(0, 1e-4)).

Activations come as int32 pairs (two fp16 each) of the word's eight: ``(x0, x1) .. (x6, x7)``;
:func:`pair_activations` regroups them once per word position as ``(x0, x4), (x1, x5), (x2, x6),
(x3, x7)``, the order the codes come out of a word, and is shared by every row a thread holds.

Under ``TRITON_INTERPRET=1`` (``ASM=False``) the same values are computed with Triton's integer and
fp32 operations, so the interpreter checks every index and the zero handling. The PTX strings themselves
run in a numpy emulator of their instructions in ``tests/kernels/test_half2_ptx.py`` (exactness, code order,
rounding, no overflow), and on a GPU in the kernel tests of ``benchmarks/gpu_session.py``.
"""

from __future__ import annotations

import triton
import triton.language as tl

from autoq.kernels.triton_gemv_loads import step_words, word_mask
from autoq.kernels.triton_row_sums import sum_rows
from autoq.kernels.triton_scales import load_masked

SYMMETRIC_NZ = tl.constexpr(-871838712)  # 0xCC08CC08 as int32: -(16 + 8 / 64) in both halves, a symmetric zero's pair
SYMMETRIC_NZH = tl.constexpr(-1132413824)  # 0xBC80BC80 as int32: -(1 + 8 / 64) in both halves, its odd codes' shift

# Regroup the activation pairs: byte selectors 0x5410 (low halves of a and b) and 0x7632 (their high halves).
_PAIR_ASM = tl.constexpr("""
prmt.b32 $0, $4, $6, 0x5410;
prmt.b32 $1, $4, $6, 0x7632;
prmt.b32 $2, $5, $7, 0x5410;
prmt.b32 $3, $5, $7, 0x7632;
""")

# $0 (f32) = sum_j (code_j - zero) / 64 * x_j over the 8 codes of word $1; $2 holds -(16 + zero / 64) twice (fp16x2),
# $3 -(1 + zero / 64) twice, $4..$7 the regrouped activation pairs. lop3 0xEA is (a & b) | c. Even codes land as
# 1024 + c (scaled by 1/64, shifted by $2), odd ones as 1024 + 16c (scaled by 1/1024, shifted by $3): both give
# (c - zero) / 64. The two shifts come from outside (:func:`zero_pairs`): per channel they are a row's, made once.
_DOT_ASM = tl.constexpr("""
{
.reg .b32 w8, t0, t1, t2, t3, klo, khi, d;
.reg .f16 lo, hi;
.reg .f32 fl, fh;
mov.b32 klo, 0x24002400;
mov.b32 khi, 0x14001400;
lop3.b32 t0, $1, 0x000F000F, 0x64006400, 0xEA;
lop3.b32 t1, $1, 0x00F000F0, 0x64006400, 0xEA;
shr.u32 w8, $1, 8;
lop3.b32 t2, w8, 0x000F000F, 0x64006400, 0xEA;
lop3.b32 t3, w8, 0x00F000F0, 0x64006400, 0xEA;
fma.rn.f16x2 t0, t0, klo, $2;
fma.rn.f16x2 t1, t1, khi, $3;
fma.rn.f16x2 t2, t2, klo, $2;
fma.rn.f16x2 t3, t3, khi, $3;
mul.rn.f16x2 d, t0, $4;
fma.rn.f16x2 d, t1, $5, d;
fma.rn.f16x2 d, t2, $6, d;
fma.rn.f16x2 d, t3, $7, d;
mov.b32 {lo, hi}, d;
cvt.f32.f16 fl, lo;
cvt.f32.f16 fh, hi;
add.f32 $0, fl, fh;
}
""")


@triton.jit
def _half(pairs, HIGH: tl.constexpr):
    """The low or high fp16 of int32 ``pairs`` as fp32 (the interpreter's path)."""
    bits = (pairs >> 16) if HIGH else pairs
    return (bits & 0xFFFF).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def pair_activations(xa, xb, xc, xd, ASM: tl.constexpr):
    """``(x0, x4), (x1, x5), (x2, x6), (x3, x7)`` as int32 fp16 pairs from a word's activation pairs ``xa = (x0, x1)``,
    ``xb = (x2, x3)``, ``xc = (x4, x5)``, ``xd = (x6, x7)``."""
    if ASM:
        p0, p1, p2, p3 = tl.inline_asm_elementwise(_PAIR_ASM, "=r,=r,=r,=r,r,r,r,r", [xa, xb, xc, xd],
                                                   dtype=(tl.int32, tl.int32, tl.int32, tl.int32), is_pure=True, pack=1)
    else:
        p0 = (xa & 0xFFFF) | (xc << 16)
        p1 = ((xa >> 16) & 0xFFFF) | (xc & -65536)
        p2 = (xb & 0xFFFF) | (xd << 16)
        p3 = ((xb >> 16) & 0xFFFF) | (xd & -65536)
    return p0, p1, p2, p3


# $0 = -(16 + $2 / 64) and $1 = -(1 + $2 / 64) in both halves (fp16x2), from the fp16 zero point $2: word_dots' shifts.
_ZERO_ASM = tl.constexpr("""
{
.reg .b16 k, m, m1, t, u;
mov.b16 k, 0xA400;
mov.b16 m, 0xCC00;
mov.b16 m1, 0xBC00;
fma.rn.f16 t, $2, k, m;
fma.rn.f16 u, $2, k, m1;
mov.b32 $0, {t, t};
mov.b32 $1, {u, u};
}
""")


@triton.jit
def zero_pairs_f16(zero, ASM: tl.constexpr):
    """:func:`zero_pairs` of fp16 zero points in two half-precision FMAs a word (exact for integer zeros up to 255)."""
    if ASM:
        nz, nzh = tl.inline_asm_elementwise(_ZERO_ASM, "=r,=r,h", [zero], dtype=(tl.int32, tl.int32), is_pure=True, pack=1)
    else:
        nz, nzh = zero_pairs(zero.to(tl.float32))
    return nz, nzh


@triton.jit
def _both_halves(value):
    half = value.to(tl.float16).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
    return half | (half << 16)


@triton.jit
def zero_pairs(zero):
    """``-(16 + zero / 64)`` and ``-(1 + zero / 64)``, each in both halves of an int32: the shifts :func:`word_dots`
    takes for a word's even and odd codes (``zero`` fp32, any shape)."""
    return _both_halves(-(16.0 + zero * 0.015625)), _both_halves(-(1.0 + zero * 0.015625))


@triton.jit
def _code(words, J: tl.constexpr):
    return ((words >> (4 * J)) & 15).to(tl.float32)


@triton.jit
def word_dots(words, nz, nzh, p0, p1, p2, p3, ASM: tl.constexpr):
    """``sum_j (code_j - zero) / 64 * x_j`` (fp32) over each int4 word's eight codes; ``nz`` and ``nzh`` from
    :func:`zero_pairs`, ``p0..p3`` from :func:`pair_activations`, all broadcast to the words' shape."""
    if ASM:
        dots = tl.inline_asm_elementwise(_DOT_ASM, "=r,r,r,r,r,r,r,r", [words, nz, nzh, p0, p1, p2, p3], dtype=tl.float32, is_pure=True,
                                         pack=1)
    else:  # the even codes' shift from nz, the odd ones' from nzh, as the PTX takes them: both are -zero / 64
        even = _half(nz, False) + 16.0
        odd = _half(nzh, False) + 1.0
        dots = (_code(words, 0) * 0.015625 + even) * _half(p0, False) + (_code(words, 4) * 0.015625 + even) * _half(p0, True)
        dots += (_code(words, 1) * 0.015625 + odd) * _half(p1, False) + (_code(words, 5) * 0.015625 + odd) * _half(p1, True)
        dots += (_code(words, 2) * 0.015625 + even) * _half(p2, False) + (_code(words, 6) * 0.015625 + even) * _half(p2, True)
        dots += (_code(words, 3) * 0.015625 + odd) * _half(p3, False) + (_code(words, 7) * 0.015625 + odd) * _half(p3, True)
    return dots


@triton.jit
def _load_pair(ptrs, cols, k_end, in_step, MASKED: tl.constexpr, PAST: tl.constexpr):
    """Two fp16 activations as one int32 from ``ptrs``, the first at column ``cols``: 0 past ``k_end`` in a partial step
    (``MASKED``; K is even), else, where the whole step may lie past the last (``PAST``), 0 where ``in_step`` is not."""
    if MASKED:
        pair = tl.load(ptrs, mask=cols < k_end, other=0)
    elif PAST:
        pair = tl.load(ptrs, mask=in_step, other=0)
    else:
        pair = tl.load(ptrs)
    return pair


@triton.jit
def _word_scales(s_ptr, z_ptr, rows, row_mask, w0, wcols, w_whole, k_end, stride_sn, stride_sg, CPW: tl.constexpr, GROUP: tl.constexpr,
                 HAS_ZEROS: tl.constexpr, MASKED: tl.constexpr, EVEN_N: tl.constexpr, PAST: tl.constexpr):
    """Each word's own group's scale and zero in the step at word ``w0`` (flat, as stored; zero 0 when symmetric),
    masked as :func:`_fetch` masks the words."""
    flat_cols = (w0 + wcols) * CPW
    offs = rows.to(tl.int64) * stride_sn + (flat_cols // GROUP) * stride_sg
    if MASKED:
        mask = word_mask(row_mask, flat_cols, k_end, False, EVEN_N)
    elif not PAST:
        mask = word_mask(row_mask, flat_cols, k_end, True, EVEN_N)
    elif EVEN_N:
        mask = w0 + 0 * wcols < w_whole
    else:
        mask = row_mask & (w0 + 0 * wcols < w_whole)
    scale = load_masked(s_ptr + offs, mask)
    if HAS_ZEROS:
        zero = load_masked(z_ptr + offs, mask)
    else:
        zero = 0
    return scale, zero


@triton.jit
def _fetch(x_pairs, w_ptr, s_ptr, z_ptr, rows, row_mask, w0, wi, wcols, w_whole, k_end, stride_wn, stride_sn, stride_sg,
           CPW: tl.constexpr, GROUP: tl.constexpr, HAS_ZEROS: tl.constexpr, MASKED: tl.constexpr, EVEN_N: tl.constexpr,
           BLOCK_N: tl.constexpr, BW: tl.constexpr, SCALES: tl.constexpr, PAST: tl.constexpr):
    """The loads of the step at word ``w0`` that a prefetch puts in flight together: the words ``(BLOCK_N, BW)``, the
    words' activations as 4 int32 pairs ``(1, BW)`` each and, in groups with ``SCALES``, :func:`_word_scales` (else 0, 0).

    A whole step (not ``MASKED``) that may lie at or past ``w_whole`` (``PAST``: a prefetch before the loop, which may
    not run) loads nothing there (zeros). In the loop a prefetch is of a step inside, clamped to the last whole one
    (read again, from cache, past it), without a predicate: with the predicates and the zeros they set, the main loop of
    8 x 2048 per channel took 182 and 184 instructions a step, 168 and 169 now (sm_90 SASS, Triton 3.9 and 3.6). A partial
    last step (``MASKED``) is read word by word and pair by pair up to ``k_end``. In the sm_90 SASS each step
    began by waiting for its own activations, an L2 round trip under the weights' stream, when they were loaded in
    the step. ptxas issues a prefetch's loads late in the step before (after the arithmetic they would otherwise
    share registers with), so only two steps ahead overlaps a whole step's arithmetic: groups' scales ride along
    there alone (``SCALES``), as with one step ahead they would cost instructions (16-bit values carried through
    the loop: 7% more a weight with Triton 3.6) for no overlap."""
    words = step_words(w_ptr, rows, row_mask, w0, wcols, w_whole, k_end, stride_wn, CPW, not MASKED, EVEN_N, BLOCK_N, BW, True,
                       not MASKED and not PAST)
    in_step = (w0 + 0 * wi < w_whole)[None, :]
    cols = ((w0 + wi) * CPW)[None, :]
    xw = x_pairs + ((w0 + wi) * 4)[None, :]  # the word's 8 activations as 4 pairs, a (1, BW) tile each, laid out as the words
    xa = _load_pair(xw, cols, k_end, in_step, MASKED, PAST)
    xb = _load_pair(xw + 1, cols + 2, k_end, in_step, MASKED, PAST)
    xc = _load_pair(xw + 2, cols + 4, k_end, in_step, MASKED, PAST)
    xd = _load_pair(xw + 3, cols + 6, k_end, in_step, MASKED, PAST)
    if GROUP > 0 and SCALES:
        scale, zero = _word_scales(s_ptr, z_ptr, rows, row_mask, w0, wcols, w_whole, k_end, stride_sn, stride_sg, CPW, GROUP, HAS_ZEROS,
                                   MASKED, EVEN_N, PAST)
    else:  # per channel the rows' are loaded once, before the loop; in groups one step ahead or none, in the step
        scale = 0
        zero = 0
    return words, xa, xb, xc, xd, scale, zero


@triton.jit
def _step(acc, words, xa, xb, xc, xd, scale, zero, nz, nzh, BLOCK_N: tl.constexpr, BW: tl.constexpr, GROUP: tl.constexpr,
          HAS_ZEROS: tl.constexpr, ASM: tl.constexpr):
    """``acc`` plus one K step's dots ``(BLOCK_N, BW)`` from its loads (:func:`_fetch`): ``sum (code - zero) * x / 64``,
    in groups times each word's own group's scale, per channel (``nz``, ``nzh``: the rows' shifts) scaled after the loop."""
    p0, p1, p2, p3 = pair_activations(xa, xb, xc, xd, ASM)
    if GROUP == 0:
        acc += word_dots(words, nz, nzh, p0, p1, p2, p3, ASM)
    else:  # the zero stays fp16
        if HAS_ZEROS:
            nz, nzh = zero_pairs_f16(zero.to(tl.float16), ASM)
            nz = tl.reshape(nz, [BLOCK_N, BW])
            nzh = tl.reshape(nzh, [BLOCK_N, BW])
        else:  # zero 8
            nz = tl.zeros_like(words) + SYMMETRIC_NZ
            nzh = tl.zeros_like(words) + SYMMETRIC_NZH
        acc += tl.reshape(scale.to(tl.float32), [BLOCK_N, BW]) * word_dots(words, nz, nzh, p0, p1, p2, p3, ASM)
    return acc


@triton.jit
def step_scaled(acc, words, xa, xb, xc, xd, sc, zr, nz, nzh, s_ptr, z_ptr, rows, row_mask, w0, wcols, w_whole, k_end, stride_sn, stride_sg,
                CPW: tl.constexpr, GROUP: tl.constexpr, HAS_ZEROS: tl.constexpr, EVEN_N: tl.constexpr, BLOCK_N: tl.constexpr,
                BW: tl.constexpr, AHEAD: tl.constexpr, ASM: tl.constexpr):
    """:func:`_step` of a whole step at word ``w0`` whose loads are in hand: in groups its scales and zeros either came
    with them (``AHEAD``: ``sc``, ``zr``) or load here, from ``rows``; per channel the rows' shifts ``nz``, ``nzh``."""
    if GROUP > 0 and not AHEAD:
        s_step, z_step = _word_scales(s_ptr, z_ptr, rows, row_mask, w0, wcols, w_whole, k_end, stride_sn, stride_sg, CPW, GROUP, HAS_ZEROS,
                                      False, EVEN_N, False)
        acc = _step(acc, words, xa, xb, xc, xd, s_step, z_step, nz, nzh, BLOCK_N, BW, GROUP, HAS_ZEROS, ASM)
    else:
        acc = _step(acc, words, xa, xb, xc, xd, sc, zr, nz, nzh, BLOCK_N, BW, GROUP, HAS_ZEROS, ASM)
    return acc


@triton.jit
def gemv_half2(x_ptr, w_ptr, s_ptr, z_ptr, n0, N, offs_n, n_mask, row, w_begin, w_end, k_end, stride_xm, stride_wn, stride_sn, stride_sg,
               BITS: tl.constexpr, CPW: tl.constexpr, GROUP: tl.constexpr, HAS_ZEROS: tl.constexpr, EVEN_N: tl.constexpr,
               BLOCK_N: tl.constexpr, BW: tl.constexpr, PREFETCH: tl.constexpr, ASM: tl.constexpr):
    """``sum_k scale * (code - zero) * x`` ``(BLOCK_N,)`` over words ``[w_begin, w_end)`` of W4 rows, ``BW`` words a step.

    The layout is the fp32 GEMV's rows in a thread (one word of every row of the tile in each thread, lanes paired
    ``i ^ 1``; see ``autoq.kernels.triton_wq_gemv``): each word's activations load as 4 int32 pairs in that layout,
    are regrouped once and serve every row the thread holds. Whole steps run unmasked (a prefetch before the loop
    is predicated, one in the loop clamped to the last whole step); a partial last step is masked word by word and
    pair by pair. ``PREFETCH`` is how many steps' loads (:func:`_fetch`: words, activations and, two ahead, groups'
    scales) are in flight during a step's arithmetic (0, 1 or 2): on the H200 a tile without took twice as long as
    with one (12.7 against 7.2 us at 4096 x 4096, when only the words were prefetched), so two is offered to the
    autotuner too. The rows' sums after the loop: :func:`autoq.kernels.triton_row_sums.sum_rows`.
    """
    tl.static_assert(BITS == 4 and CPW == 8, "HALF2 tiles read int4 words")
    wi = tl.arange(0, BW) ^ 1
    flat = tl.arange(0, BLOCK_N * BW)
    rows = n0 + flat // BW
    row_mask = rows < N
    wcols = (flat % BW) ^ 1
    x_pairs = (x_ptr + row * stride_xm).to(tl.pointer_type(tl.int32))  # fp16 activations two at a time
    if GROUP == 0:  # per channel: a row's scale and shifts for the whole K
        scale = load_masked(s_ptr + offs_n * stride_sn, n_mask).to(tl.float32)
        if HAS_ZEROS:  # from the fp16 zeros as stored, in the PTX: in fp32 it took 75 more instructions a thread (8 x 2048)
            nz, nzh = zero_pairs_f16(load_masked(z_ptr + offs_n * stride_sn, n_mask).to(tl.float16), ASM)
            nz = nz[:, None]
            nzh = nzh[:, None]
        else:  # zero 8
            nz = SYMMETRIC_NZ
            nzh = SYMMETRIC_NZH
    else:  # in groups: each word's own, loaded with its words (_fetch)
        nz = 0
        nzh = 0
    acc = tl.zeros([BLOCK_N, BW], dtype=tl.float32)
    # where the whole steps end: steps of words wholly inside K (a last word past K must be read masked, pair by pair)
    w_whole = w_begin + tl.maximum(k_end // CPW - w_begin, 0) // BW * BW
    AHEAD: tl.constexpr = PREFETCH == 2  # groups' scales and zeros load with the words two steps ahead, else in the step (_fetch)
    if PREFETCH >= 1:
        words, xa, xb, xc, xd, sc, zr = _fetch(x_pairs, w_ptr, s_ptr, z_ptr, rows, row_mask, w_begin, wi, wcols, w_whole, k_end, stride_wn,
                                               stride_sn, stride_sg, CPW, GROUP, HAS_ZEROS, False, EVEN_N, BLOCK_N, BW, AHEAD, True)
    if PREFETCH == 2:
        words1, xa1, xb1, xc1, xd1, sc1, zr1 = _fetch(x_pairs, w_ptr, s_ptr, z_ptr, rows, row_mask, w_begin + BW, wi, wcols, w_whole, k_end,
                                                      stride_wn, stride_sn, stride_sg, CPW, GROUP, HAS_ZEROS, False, EVEN_N, BLOCK_N, BW,
                                                      AHEAD, True)
    last = w_whole - BW  # the last whole step, where the loop's prefetches are clamped (_fetch)
    for w0 in range(w_begin, w_whole, BW):
        # PREFETCH steps ahead in flight during this step's arithmetic (past the whole steps, the last one again)
        if PREFETCH == 2:
            words2, xa2, xb2, xc2, xd2, sc2, zr2 = _fetch(x_pairs, w_ptr, s_ptr, z_ptr, rows, row_mask, tl.minimum(w0 + 2 * BW, last), wi,
                                                          wcols, w_whole, k_end, stride_wn, stride_sn, stride_sg, CPW, GROUP, HAS_ZEROS,
                                                          False, EVEN_N, BLOCK_N, BW, AHEAD, False)
        elif PREFETCH == 1:
            words1, xa1, xb1, xc1, xd1, sc1, zr1 = _fetch(x_pairs, w_ptr, s_ptr, z_ptr, rows, row_mask, tl.minimum(w0 + BW, last), wi, wcols,
                                                          w_whole, k_end, stride_wn, stride_sn, stride_sg, CPW, GROUP, HAS_ZEROS, False,
                                                          EVEN_N, BLOCK_N, BW, AHEAD, False)
        else:
            words, xa, xb, xc, xd, sc, zr = _fetch(x_pairs, w_ptr, s_ptr, z_ptr, rows, row_mask, w0, wi, wcols, w_whole, k_end, stride_wn,
                                                   stride_sn, stride_sg, CPW, GROUP, HAS_ZEROS, False, EVEN_N, BLOCK_N, BW, AHEAD, False)
        acc = step_scaled(acc, words, xa, xb, xc, xd, sc, zr, nz, nzh, s_ptr, z_ptr, rows, row_mask, w0, wcols, w_whole, k_end, stride_sn,
                          stride_sg, CPW, GROUP, HAS_ZEROS, EVEN_N, BLOCK_N, BW, AHEAD, ASM)
        if PREFETCH >= 1:
            words, xa, xb, xc, xd, sc, zr = words1, xa1, xb1, xc1, xd1, sc1, zr1
        if PREFETCH == 2:
            words1, xa1, xb1, xc1, xd1, sc1, zr1 = words2, xa2, xb2, xc2, xd2, sc2, zr2
    if w_whole < w_end:  # the partial last step, masked, its scales with it
        # names of its own: a scale loaded here must not redefine the loop's (0 when not loaded ahead)
        t_words, t_xa, t_xb, t_xc, t_xd, t_sc, t_zr = _fetch(x_pairs, w_ptr, s_ptr, z_ptr, rows, row_mask, w_whole, wi, wcols, w_end, k_end,
                                                             stride_wn, stride_sn, stride_sg, CPW, GROUP, HAS_ZEROS, True, EVEN_N, BLOCK_N,
                                                             BW, True, True)
        acc = _step(acc, t_words, t_xa, t_xb, t_xc, t_xd, t_sc, t_zr, nz, nzh, BLOCK_N, BW, GROUP, HAS_ZEROS, ASM)
    sums = sum_rows(acc, BLOCK_N, BW)  # a butterfly halving the rows a lane holds each level: 8 rows on 8 warps, 12 shuffles not 64
    if GROUP == 0:
        y = scale * 64.0 * sums
    else:
        y = 64.0 * sums
    return y
