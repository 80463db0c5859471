"""Weight-only low-bit Triton kernels: ``y = x @ dequant(W).T`` for packed W2/W3/W4/W8 (and W5/W6).

Imported only when a kernel runs (it imports Triton). Both kernels read the layout of
:mod:`autoq.kernels.formats` and dequantize in registers; ``w = scale * (code - zero)``.

* ``gemv`` (batch 1; memory-bound, no tensor cores): one program per ``BLOCK_N`` outputs, per
  row of ``x`` and per K split. Packed words are never unpacked into a tile: slot ``j`` of every
  word is turned into the float ``1 + code / 2**bits`` by a shift and an and-or and multiplied
  by ``x[word * C + j]`` (see ``_mantissa_codes``); each scale group's ``sum (code - zero) * x`` is
  recovered from ``sum m * x`` and ``sum x`` once per group and K step (once per row per channel).
  That is three instructions a weight where an int-to-float conversion and a subtraction would take five.
  With ``split_k > 1`` each split writes fp32 partial sums that the host adds.
* ``gemm``: tiled ``BLOCK_M x BLOCK_N`` with ``tl.dot`` on fp16/bf16 operands and fp32
  accumulation, grouped program order for L2 reuse; codes are unpacked to a tile, a shift and
  a mask each, in the thread that loaded their word, and dequantized in fp16 through the bits of ``1024 + code`` (``_dequant``);
  scales come once per row of a tile when a group spans the K block. Its ``BLOCK_K`` counts slots:
  a 2/4/8-bit word fills as many slots as it has codes, three, five or six 3/5/6-bit words (30 codes)
  fill 32, and the activations of the 2 spare slots are masked to 0 (``_codes_nk``).

On a GPU both are autotuned per (N, K, batch bucket); under ``TRITON_INTERPRET=1`` (or with
``AUTOQ_AUTOTUNE=0``) one large-block configuration is used directly.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from autoq.kernels.capability import autotuning, interpreting
from autoq.kernels.gemv_steps import even_k, gemm_slot_group, gemm_step_columns, step_columns, step_constexprs, wordwise
from autoq.kernels.tiles import autotune_bench, batch_bucket, launch, prune_gemm_configs, tile_kwargs, tile_offsets


@triton.jit
def _load_scale_zero(s_ptr, z_ptr, ptrs, mask, BITS: tl.constexpr, HAS_ZEROS: tl.constexpr):
    """fp32 scales and zero points at offsets ``ptrs``; a symmetric format's zero is ``2**(BITS-1)``."""
    scale = tl.load(s_ptr + ptrs, mask=mask, other=0.0).to(tl.float32)
    if HAS_ZEROS:
        zero = tl.load(z_ptr + ptrs, mask=mask, other=0.0).to(tl.float32)
    else:
        zero = tl.zeros_like(scale) + (1 << (BITS - 1))
    return scale, zero


@triton.jit
def _scale_zero_rows(s_ptr, z_ptr, offs_n, n_mask, g, stride_sn, stride_sg, BITS: tl.constexpr, HAS_ZEROS: tl.constexpr):
    """Scale and zero ``(BLOCK_N,)`` of group ``g`` (one group covers the whole K block)."""
    return _load_scale_zero(s_ptr, z_ptr, offs_n * stride_sn + g * stride_sg, n_mask, BITS, HAS_ZEROS)


@triton.jit
def _scale_zero_cols(s_ptr, z_ptr, offs_n, n_mask, g, g_mask, stride_sn, stride_sg, BITS: tl.constexpr, HAS_ZEROS: tl.constexpr):
    """Scale and zero ``(BLOCK_N, G)`` of the groups ``g`` ``(G,)`` (masked by ``g_mask``), for every row."""
    ptrs = offs_n[:, None] * stride_sn + g[None, :] * stride_sg
    return _load_scale_zero(s_ptr, z_ptr, ptrs, n_mask[:, None] & g_mask[None, :], BITS, HAS_ZEROS)


@triton.jit
def _spread_codes(words, FIRST: tl.constexpr, STRIDE: tl.constexpr, COUNT: tl.constexpr, BITS: tl.constexpr, CPW: tl.constexpr,
                  CODES: tl.constexpr):
    """Codes ``FIRST, FIRST + STRIDE, ...`` (``COUNT``, a power of two) of every slot group, along new trailing dims of
    size 2 whose flattened index is the code's slot: joined pairwise, each thread keeps its words' codes in its own
    registers. ``words`` holds the group's word tiles in order; slot ``s`` is code ``s % CPW`` of word ``s // CPW``,
    and slots from ``CODES`` on (2 of 32 for 3/5/6 bits) are code 0."""
    if COUNT == 1:
        if FIRST < CODES:
            out = (words[FIRST // CPW] >> ((FIRST % CPW) * BITS)) & ((1 << BITS) - 1)
        else:
            out = tl.zeros_like(words[0])
    else:
        even = _spread_codes(words, FIRST, 2 * STRIDE, COUNT // 2, BITS, CPW, CODES)
        odd = _spread_codes(words, FIRST + STRIDE, 2 * STRIDE, COUNT // 2, BITS, CPW, CODES)
        out = tl.join(even, odd)
    return out


@triton.jit
def _slot_columns(k0, K, SG_CODES: tl.constexpr, SG_SLOTS: tl.constexpr, BLOCK_K: tl.constexpr):
    """The GEMM step's ``BLOCK_K`` slots (slot groups of ``SG_SLOTS`` slots holding ``SG_CODES`` columns, from column
    ``k0``): their columns and whether each holds a column of K. Without spare slots they are ``k0 + arange``."""
    s = tl.arange(0, BLOCK_K)
    if SG_SLOTS == SG_CODES:
        cols = k0 + s
        live = cols < K
    else:
        cols = k0 + (s // SG_SLOTS) * SG_CODES + s % SG_SLOTS
        live = (s % SG_SLOTS < SG_CODES) & (cols < K)
    return cols, live


@triton.jit
def _word_tile(w_ptr, offs_n, n_mask, first, n_words, stride_wn, R: tl.constexpr, SG_WORDS: tl.constexpr, EVEN_K: tl.constexpr):
    """Word ``R`` of every slot group (``first``: each group's first word) ``(BLOCK_N, groups)``; a dummy past ``SG_WORDS``."""
    if R < SG_WORDS:
        offs_w = first + R
        if EVEN_K:
            w_mask = n_mask[:, None]
        else:
            w_mask = n_mask[:, None] & (offs_w < n_words)[None, :]
        out = tl.load(w_ptr + offs_n[:, None] * stride_wn + offs_w[None, :], mask=w_mask, other=0)
    else:
        out = tl.zeros([1, 1], dtype=tl.int32)
    return out


@triton.jit
def _codes_nk(w_ptr, offs_n, w0, n_mask, n_words, stride_wn, BITS: tl.constexpr, CPW: tl.constexpr, SG_WORDS: tl.constexpr,
              SG_SLOTS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr):
    """Integer codes ``(BLOCK_N, BLOCK_K)`` (int32) of the ``BLOCK_K // SG_SLOTS`` slot groups from word ``w0``, slot by slot.

    A slot group is one word of 2/4/8-bit codes, or ``SG_WORDS`` words of 3/5/6-bit codes (3, 5 or 6 words:
    30 codes in 32 slots). Each word is loaded once and spread into its codes in the loading thread's
    registers (``_spread_codes``). A reshape of the shifted ``(BLOCK_N, words, CPW)`` tile went through shared
    memory (8.3 instructions a weight for int4 in the sm_90 SASS, now 4.9); gathering each column's word, as
    3/5/6 bits did, cost 10.3 for int3 per channel at batch 16 (17.2 with Triton 3.6), now 6.9 (9.5).
    ``EVEN_K``: the step lies inside K, so the load is masked by row alone and each thread's 2/4/8-bit words
    load as one vector.
    """
    first = w0 + tl.arange(0, BLOCK_K // SG_SLOTS) * SG_WORDS
    # a tuple of the most words a slot group has (6-bit: 6); the ones past SG_WORDS are never read
    words = (_word_tile(w_ptr, offs_n, n_mask, first, n_words, stride_wn, 0, SG_WORDS, EVEN_K),
             _word_tile(w_ptr, offs_n, n_mask, first, n_words, stride_wn, 1, SG_WORDS, EVEN_K),
             _word_tile(w_ptr, offs_n, n_mask, first, n_words, stride_wn, 2, SG_WORDS, EVEN_K),
             _word_tile(w_ptr, offs_n, n_mask, first, n_words, stride_wn, 3, SG_WORDS, EVEN_K),
             _word_tile(w_ptr, offs_n, n_mask, first, n_words, stride_wn, 4, SG_WORDS, EVEN_K),
             _word_tile(w_ptr, offs_n, n_mask, first, n_words, stride_wn, 5, SG_WORDS, EVEN_K))
    return tl.reshape(_spread_codes(words, 0, 1, SG_SLOTS, BITS, CPW, SG_WORDS * CPW), [BLOCK_N, BLOCK_K])


@triton.jit
def _dtype_params(scale, zero, HALF: tl.constexpr):
    """fp32 ``scale`` and ``zero`` as :func:`_dequant_with` takes them: fp16 ``scale`` and ``1024 + zero``, else as given."""
    if HALF:
        return scale.to(tl.float16), (zero + 1024.0).to(tl.float16)
    else:
        return scale, zero


@triton.jit
def _dequant_with(codes, scale, zero, HALF: tl.constexpr):
    """``scale * (code - zero)`` of integer codes in the activation dtype, ``scale`` and ``zero`` from :func:`_dtype_params`.

    fp16 (``HALF``): ``code | 0x6400`` is the fp16 ``1024 + code``, so ``(1024 + code) - (1024 + zero)`` is
    exact and one fp16 multiply rounds the product once, as the fp32 product rounded to fp16 would be,
    without an int-to-float conversion and with two weights an instruction. bf16 (8-bit significand)
    cannot hold ``128 + code`` for 8-bit codes, so it computes in fp32.
    """
    if HALF:
        w = ((codes | 0x6400).to(tl.int16).to(tl.float16, bitcast=True) - zero) * scale
    else:
        w = ((codes.to(tl.float32) - zero) * scale).to(tl.bfloat16)
    return w


@triton.jit
def _dequant(codes, scale, zero, HALF: tl.constexpr):
    """``scale * (code - zero)`` of integer codes, fp32 ``scale`` and ``zero`` broadcast as given, in the activation dtype."""
    scale, zero = _dtype_params(scale, zero, HALF)
    return _dequant_with(codes, scale, zero, HALF)


@triton.jit
def _dequant_groups(codes, s_ptr, z_ptr, offs_n, n_mask, k0, k_limit, stride_sn, stride_sg, BITS: tl.constexpr,
                    GROUP: tl.constexpr, HAS_ZEROS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, HALF: tl.constexpr):
    """Dequantized ``(BLOCK_N, BLOCK_K)`` tile of a 2/4/8-bit group format (GROUP > 0), in the activation dtype.

    A group at least as wide as the block gives one (scale, zero) per row; narrower groups
    (a power of two dividing BLOCK_K) view the tile as ``(BLOCK_N, BLOCK_K // GROUP, GROUP)``.
    """
    if GROUP % BLOCK_K == 0:
        scale, zero = _scale_zero_rows(s_ptr, z_ptr, offs_n, n_mask, k0 // GROUP, stride_sn, stride_sg, BITS, HAS_ZEROS)
        w = _dequant(codes, scale[:, None], zero[:, None], HALF)
    else:
        g = k0 // GROUP + tl.arange(0, BLOCK_K // GROUP)
        scale, zero = _scale_zero_cols(s_ptr, z_ptr, offs_n, n_mask, g, g * GROUP < k_limit, stride_sn, stride_sg, BITS, HAS_ZEROS)
        grouped = tl.reshape(codes, [BLOCK_N, BLOCK_K // GROUP, GROUP])
        w = tl.reshape(_dequant(grouped, scale[:, :, None], zero[:, :, None], HALF), [BLOCK_N, BLOCK_K])
    return w


@triton.jit
def _dequant_straddling(codes, cols, s_ptr, z_ptr, offs_n, n_mask, k0, k_limit, stride_sn, stride_sg, BITS: tl.constexpr,
                        GROUP: tl.constexpr, HAS_ZEROS: tl.constexpr, SG_CODES: tl.constexpr, SG_SLOTS: tl.constexpr,
                        BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, HALF: tl.constexpr):
    """Dequantized slots ``(BLOCK_N, BLOCK_K)`` of a 3/5/6-bit group format, whose slot groups can straddle scale groups.

    A slot group holds 30 columns and a scale group at least 32, so each slot group touches at most two:
    the one holding its first column (``lo``) and the next. Both groups' scales and zeros are loaded per row
    and slot group, in the dtype the dequantization uses, and each slot selects its own: a select a weight
    for each. (A dot a scale group, on the other group's activations masked to 0, dequantizes every slot twice
    and costs more: 15.9 instructions a weight for int3 g64 in a 16 x 128 x 32 tile of the sm_90 SASS, against 13.3.)
    """
    NSG: tl.constexpr = BLOCK_K // SG_SLOTS
    first = k0 + tl.arange(0, NSG) * SG_CODES  # each slot group's first column
    lo = first // GROUP
    s_lo, z_lo = _dtype_params(*_scale_zero_cols(s_ptr, z_ptr, offs_n, n_mask, lo, lo * GROUP < k_limit, stride_sn, stride_sg,
                                                 BITS, HAS_ZEROS), HALF)
    s_hi, z_hi = _dtype_params(*_scale_zero_cols(s_ptr, z_ptr, offs_n, n_mask, lo + 1, (lo + 1) * GROUP < k_limit, stride_sn,
                                                 stride_sg, BITS, HAS_ZEROS), HALF)
    # slot t is in the next scale group from t = (lo + 1) * GROUP - first on: one offset a slot group, not a column a slot
    later = (tl.arange(0, SG_SLOTS)[None, :] >= ((lo + 1) * GROUP - first)[:, None])[None, :, :]
    scale = tl.where(later, s_hi[:, :, None], s_lo[:, :, None])
    zero = tl.where(later, z_hi[:, :, None], z_lo[:, :, None])
    w = _dequant_with(tl.reshape(codes, [BLOCK_N, NSG, SG_SLOTS]), scale, zero, HALF)
    return tl.reshape(w, [BLOCK_N, BLOCK_K])


@triton.jit
def _mantissa_codes(words, one_f32, J: tl.constexpr, BITS: tl.constexpr):
    """Code ``J`` of every word as the fp32 ``1 + code / 2**BITS``: one shift and one and-or, no int-to-float.

    The code is moved to the top ``BITS`` mantissa bits and or-ed with ``one_f32``, the bits of
    1.0f (``ONE_F32``), so the value is exact; callers undo the affine map once per word. ``one_f32``
    is a kernel argument, not a literal: as a literal the compiler re-creates the and-mask in a
    register before every and-or (0.66 extra instructions a weight in the sm_90 SASS).
    """
    shift: tl.constexpr = J * BITS - (23 - BITS)
    if shift > 0:
        moved = words >> shift
    elif shift < 0:
        moved = words << (-shift)
    else:
        moved = words
    return ((moved & (((1 << BITS) - 1) << (23 - BITS))) | one_f32).to(tl.float32, bitcast=True)


@triton.jit
def _load_x(x_ptr, cols, k_end, EVEN_K: tl.constexpr):
    """Activations at ``cols`` as fp32 (zero past ``k_end`` unless the step is known to lie inside K)."""
    if EVEN_K:
        x = tl.load(x_ptr + cols)
    else:
        x = tl.load(x_ptr + cols, mask=cols < k_end, other=0.0)
    return x.to(tl.float32)


@triton.jit
def _load_words(w_ptr, offs_n, n_mask, w0, wi, w_end, k_end, stride_wn, CPW: tl.constexpr, EVEN_K: tl.constexpr):
    """Packed words ``(BLOCK_N, W)`` of the step starting at word ``w0`` (``wi = arange(W)``); 0 past N or K and,
    for a prefetch past the last step (``w0 >= w_end``), all 0 without touching memory."""
    w_ptrs = w_ptr + offs_n[:, None] * stride_wn + (w0 + wi)[None, :]
    if EVEN_K:  # whole steps: one predicate for the step keeps each thread's words a single vector load
        words = tl.load(w_ptrs, mask=n_mask[:, None] & (w0 + 0 * wi < w_end)[None, :], other=0)
    else:
        words = tl.load(w_ptrs, mask=n_mask[:, None] & ((w0 + wi) * CPW < k_end)[None, :], other=0)
    return words


@triton.jit
def _load_group_words(w_ptr, offs_n, n_mask, k0, u, k_end, stride_wn, CPW: tl.constexpr, GROUP: tl.constexpr, TW: tl.constexpr):
    """Words ``(BLOCK_N, NGS * TW)`` of the step at column ``k0``: lane ``u`` is word ``u % TW`` of group ``u // TW``
    counted from the word holding the group's first column; words with no column in their group are 0."""
    lo = (k0 // GROUP + u // TW) * GROUP
    widx = lo // CPW + u % TW
    live = widx * CPW < tl.minimum(lo + GROUP, k_end)
    return tl.load(w_ptr + offs_n[:, None] * stride_wn + widx[None, :], mask=n_mask[:, None] & live[None, :], other=0)


@triton.jit
def _group_sums(part, xs, s_ptr, z_ptr, offs_n, n_mask, g0, k_end, stride_sn, stride_sg, BITS: tl.constexpr, GROUP: tl.constexpr,
                HAS_ZEROS: tl.constexpr, BLOCK_N: tl.constexpr, NG: tl.constexpr, WPG: tl.constexpr):
    """``sum scale * (code - zero) * x`` ``(BLOCK_N, NG)`` of groups ``g0 ..`` from a step's per-word ``sum m * x``
    ``(BLOCK_N, NG * WPG)`` and ``sum x`` ``(NG * WPG,)``, ``WPG`` words a group (``m = 1 + code / 2**BITS``)."""
    ONE: tl.constexpr = 1 << BITS
    g = g0 + tl.arange(0, NG)
    scale, zero = _scale_zero_cols(s_ptr, z_ptr, offs_n, n_mask, g, g * GROUP < k_end, stride_sn, stride_sg, BITS, HAS_ZEROS)
    part_g = tl.sum(tl.reshape(part, [BLOCK_N, NG, WPG]), axis=2)
    xs_g = tl.sum(tl.reshape(xs, [NG, WPG]), axis=1)
    return scale * ONE * part_g - scale * (ONE + zero) * xs_g[None, :]


@triton.jit
def _as_slots(xw, BW: tl.constexpr, CPW: tl.constexpr):
    """A step's activations ``(BW * CPW,)`` as ``(BW, 2, ..., 2)``: the trailing dims index the slot of the word."""
    if CPW == 4:
        out = tl.reshape(xw, [BW, 2, 2])
    elif CPW == 8:
        out = tl.reshape(xw, [BW, 2, 2, 2])
    else:
        out = tl.reshape(xw, [BW, 2, 2, 2, 2])
    return out


@triton.jit
def _slot_products(part, xs, words, one_f32, x, FIRST: tl.constexpr, STRIDE: tl.constexpr, COUNT: tl.constexpr, BITS: tl.constexpr):
    """Adds ``m_j * x_j`` to ``part`` and ``x_j`` to ``xs`` for slots ``FIRST, FIRST + STRIDE, ...`` (``COUNT``) of
    ``x`` ``(BW, 2, ...)``, splitting its trailing dims pairwise so each slot's activations stay in their thread."""
    if COUNT == 1:
        part += _mantissa_codes(words, one_f32, FIRST, BITS) * x[None, :]
        xs += x
    else:
        even, odd = tl.split(x)
        part, xs = _slot_products(part, xs, words, one_f32, even, FIRST, 2 * STRIDE, COUNT // 2, BITS)
        part, xs = _slot_products(part, xs, words, one_f32, odd, FIRST + STRIDE, 2 * STRIDE, COUNT // 2, BITS)
    return part, xs


@triton.jit
def _gemv_word_groups(one_f32, x_ptr, w_ptr, s_ptr, z_ptr, offs_n, n_mask, row, w_begin, w_end, k_end, stride_xm, stride_wn,
                      stride_sn, stride_sg, BITS: tl.constexpr, CPW: tl.constexpr, GROUP: tl.constexpr, HAS_ZEROS: tl.constexpr,
                      EVEN_K: tl.constexpr, BLOCK_N: tl.constexpr, BW: tl.constexpr, PREFETCH: tl.constexpr):
    """``sum_k scale * (code - zero) * x`` over words ``[w_begin, w_end)``, ``BW`` words a step, when every scale
    group is whole words (2/4/8 bits, and any width per channel).

    The words tile ``(BLOCK_N, BW)`` stays in the layout it was loaded in: slot ``j`` of every word
    multiplies ``x[word * CPW + j]``, so no code moves between threads. With ``m = 1 + code / 2**BITS``,
    a group's ``sum (code - zero) * x`` is ``2**BITS * sum m * x - (2**BITS + zero) * sum x``: per weight a
    shift, an and-or and an FMA. Groups narrower than a step (``NG`` of ``WPG`` words) are summed per
    step; a 2-D tile, not a 3-D one, keeps Triton 3.6 from giving each thread a single row.

    With a power-of-two ``CPW`` (``SPLIT_X``) a step's activations load as one contiguous vector and are split
    pairwise into the slots (``_slot_products``), so they too stay in the thread that loaded them. Gathering
    each slot's activations instead loads 2 bytes at a time and, with Triton 3.6, moves them between threads
    through shared memory: 4.39 instructions a weight for int4 per channel in the sm_90 SASS, now 4.08.

    ``PREFETCH`` loads the next step's words before this step's arithmetic. Triton does not pipeline these
    loads (the sm_90 SASS is the same for 2 and 3 stages): without it each step waits a full memory latency,
    and a layer of 256 programs keeps about half the bytes in flight that an H200 needs. The autotuner tries both.
    """
    SPLIT_X: tl.constexpr = CPW == 4 or CPW == 8 or CPW == 16
    WPG: tl.constexpr = GROUP // CPW if GROUP > 0 and GROUP < BW * CPW else BW
    NG: tl.constexpr = BW // WPG
    ONE: tl.constexpr = 1 << BITS
    tl.static_assert(WPG * NG == BW, "BLOCK_K and the group size must be whole words")
    wi = tl.arange(0, BW)
    acc = tl.zeros([BLOCK_N, BW], dtype=tl.float32)  # per channel and whole-step groups: reduced after the loop
    acc_g = tl.zeros([BLOCK_N, NG], dtype=tl.float32)  # narrower groups
    corr = tl.zeros([BLOCK_N], dtype=tl.float32)  # whole-step groups: sum of scale * (2**BITS + zero) * sum x
    xsum = tl.zeros([BW], dtype=tl.float32)  # per channel: sum x over the whole range
    if PREFETCH:
        words = _load_words(w_ptr, offs_n, n_mask, w_begin, wi, w_end, k_end, stride_wn, CPW, EVEN_K)
    for w0 in range(w_begin, w_end, BW):
        cols = (w0 + wi) * CPW
        if PREFETCH:
            ahead = _load_words(w_ptr, offs_n, n_mask, w0 + BW, wi, w_end, k_end, stride_wn, CPW, EVEN_K)  # in flight during this step
        else:
            words = _load_words(w_ptr, offs_n, n_mask, w0, wi, w_end, k_end, stride_wn, CPW, EVEN_K)
        part = tl.zeros([BLOCK_N, BW], dtype=tl.float32)
        xs = tl.zeros([BW], dtype=tl.float32)
        if SPLIT_X:
            xw = _load_x(x_ptr + row * stride_xm, w0 * CPW + tl.arange(0, BW * CPW), k_end, EVEN_K)
            part, xs = _slot_products(part, xs, words, one_f32, _as_slots(xw, BW, CPW), 0, 1, CPW, BITS)
        else:
            for j in tl.static_range(CPW):
                xj = _load_x(x_ptr + row * stride_xm, cols + j, k_end, EVEN_K)
                part += _mantissa_codes(words, one_f32, j, BITS) * xj[None, :]
                xs += xj
        if GROUP == 0:
            acc += part
            xsum += xs
        elif NG == 1:
            scale, zero = _scale_zero_rows(s_ptr, z_ptr, offs_n, n_mask, w0 * CPW // GROUP, stride_sn, stride_sg, BITS, HAS_ZEROS)
            acc += (scale * ONE)[:, None] * part
            corr += scale * (ONE + zero) * tl.sum(xs, axis=0)
        else:
            acc_g += _group_sums(part, xs, s_ptr, z_ptr, offs_n, n_mask, w0 * CPW // GROUP, k_end, stride_sn, stride_sg,
                                 BITS, GROUP, HAS_ZEROS, BLOCK_N, NG, WPG)
        if PREFETCH:
            words = ahead
    if GROUP == 0:
        scale, zero = _scale_zero_rows(s_ptr, z_ptr, offs_n, n_mask, 0, stride_sn, stride_sg, BITS, HAS_ZEROS)
        y = scale * (ONE * tl.sum(acc, axis=1) - (ONE + zero) * tl.sum(xsum, axis=0))
    elif NG == 1:
        y = tl.sum(acc, axis=1) - corr
    else:
        y = tl.sum(acc_g, axis=1)
    return y


@triton.jit
def _gemv_group_words(one_f32, x_ptr, w_ptr, s_ptr, z_ptr, offs_n, n_mask, row, k_begin, k_end, stride_xm, stride_wn,
                      stride_sn, stride_sg, BITS: tl.constexpr, CPW: tl.constexpr, GROUP: tl.constexpr, HAS_ZEROS: tl.constexpr,
                      BLOCK_N: tl.constexpr, NGS: tl.constexpr, TW: tl.constexpr, PREFETCH: tl.constexpr):
    """The same sum for 3/5/6-bit group formats, ``NGS`` groups a step, each read as the ``TW`` words it touches.

    A word that straddles two groups is loaded for both (the second load hits the cache) and each copy
    multiplies only its own group's activations (the others are masked to 0), so a weight costs a shift,
    an and-or and an FMA, and every group's scale is loaded once, as in whole-word groups.
    """
    u = tl.arange(0, NGS * TW)
    acc_g = tl.zeros([BLOCK_N, NGS], dtype=tl.float32)
    if PREFETCH:
        words = _load_group_words(w_ptr, offs_n, n_mask, k_begin, u, k_end, stride_wn, CPW, GROUP, TW)
    for k0 in range(k_begin, k_end, NGS * GROUP):
        if PREFETCH:
            ahead = _load_group_words(w_ptr, offs_n, n_mask, k0 + NGS * GROUP, u, k_end, stride_wn, CPW, GROUP, TW)
        else:
            words = _load_group_words(w_ptr, offs_n, n_mask, k0, u, k_end, stride_wn, CPW, GROUP, TW)
        lo = (k0 // GROUP + u // TW) * GROUP
        hi = tl.minimum(lo + GROUP, k_end)
        cols = (lo // CPW + u % TW) * CPW
        part = tl.zeros([BLOCK_N, NGS * TW], dtype=tl.float32)
        xs = tl.zeros([NGS * TW], dtype=tl.float32)
        for j in tl.static_range(CPW):
            c = cols + j
            xj = tl.load(x_ptr + row * stride_xm + c, mask=(c >= lo) & (c < hi), other=0.0).to(tl.float32)
            part += _mantissa_codes(words, one_f32, j, BITS) * xj[None, :]
            xs += xj
        acc_g += _group_sums(part, xs, s_ptr, z_ptr, offs_n, n_mask, k0 // GROUP, k_end, stride_sn, stride_sg,
                             BITS, GROUP, HAS_ZEROS, BLOCK_N, NGS, TW)
        if PREFETCH:
            words = ahead
    return tl.sum(acc_g, axis=1)


@triton.jit
def wq_gemv_kernel(x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, one_f32, N, K, stride_xm, stride_wn, stride_sn, stride_sg, stride_os, stride_om,
                   BITS: tl.constexpr, CPW: tl.constexpr, GROUP: tl.constexpr, HAS_ZEROS: tl.constexpr, WORDWISE: tl.constexpr, SPLIT_K: tl.constexpr,
                   EVEN_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PREFETCH: tl.constexpr, STEP: tl.constexpr,
                   TW: tl.constexpr, NGS: tl.constexpr):
    """One program: ``BLOCK_N`` outputs of one row of ``x`` over one K split; how it walks K (``STEP``, ``TW``,
    ``NGS``, derived from ``BLOCK_K``) is :func:`autoq.kernels.gemv_steps.step_constexprs`."""
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    row = tl.program_id(2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    if WORDWISE or GROUP == 0:
        n_words = tl.cdiv(K, CPW)
        w_per_split = tl.cdiv(tl.cdiv(n_words, SPLIT_K), STEP) * STEP
        w_begin = pid_s * w_per_split
        w_end = tl.minimum(w_begin + w_per_split, n_words)
        y = _gemv_word_groups(one_f32, x_ptr, w_ptr, s_ptr, z_ptr, offs_n, n_mask, row, w_begin, w_end, tl.minimum(w_end * CPW, K),
                              stride_xm, stride_wn, stride_sn, stride_sg, BITS, CPW, GROUP, HAS_ZEROS, EVEN_K, BLOCK_N, STEP, PREFETCH)
    else:
        k_per_split = tl.cdiv(tl.cdiv(K, SPLIT_K), NGS * GROUP) * NGS * GROUP  # whole groups
        k_begin = pid_s * k_per_split
        y = _gemv_group_words(one_f32, x_ptr, w_ptr, s_ptr, z_ptr, offs_n, n_mask, row, k_begin, tl.minimum(k_begin + k_per_split, K),
                              stride_xm, stride_wn, stride_sn, stride_sg, BITS, CPW, GROUP, HAS_ZEROS, BLOCK_N, NGS, TW, PREFETCH)
    tl.store(out_ptr + pid_s * stride_os + row * stride_om + offs_n, y.to(out_ptr.dtype.element_ty), mask=n_mask)


@triton.jit
def wq_gemm_kernel(x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, M, N, K, M_BUCKET, stride_xm, stride_wn, stride_sn, stride_sg, stride_os, stride_om,
                   BITS: tl.constexpr, CPW: tl.constexpr, GROUP: tl.constexpr, HAS_ZEROS: tl.constexpr, WORDWISE: tl.constexpr, DOT_FP32: tl.constexpr,
                   SPLIT_K: tl.constexpr, EVEN_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                   GROUP_M: tl.constexpr, SG_WORDS: tl.constexpr, SG_SLOTS: tl.constexpr):
    """One program: a ``BLOCK_M x BLOCK_N`` output tile over one of ``SPLIT_K`` ranges of K, whole steps each (a split
    writes fp32 partial sums that the host adds, as the GEMV's do). ``SG_WORDS`` words fill a slot group of ``SG_SLOTS``
    slots (:func:`autoq.kernels.gemv_steps.gemm_slot_group`)."""
    offs_m, offs_n = tile_offsets(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    m_mask = offs_m < M
    n_mask = offs_n < N
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    HALF: tl.constexpr = x_ptr.dtype.element_ty == tl.float16  # else bf16
    SG_CODES: tl.constexpr = SG_WORDS * CPW  # the columns a slot group holds
    STEP: tl.constexpr = BLOCK_K // SG_SLOTS * SG_CODES  # columns of K a step
    n_words = tl.cdiv(K, CPW)
    if SPLIT_K == 1:  # plain bounds: a loop from 0 pipelines better (int4 per channel, 16 x 128 x 64: 5.67, not 6.02)
        k_begin = 0
        k_end = K
    else:
        k_per_split = tl.cdiv(tl.cdiv(K, STEP), SPLIT_K) * STEP
        k_begin = tl.program_id(1) * k_per_split
        k_end = tl.minimum(k_begin + k_per_split, K)
    if GROUP == 0:
        scale, zero = _scale_zero_rows(s_ptr, z_ptr, offs_n, n_mask, 0, stride_sn, stride_sg, BITS, HAS_ZEROS)
    for k0 in range(k_begin, k_end, STEP):
        cols, live = _slot_columns(k0, K, SG_CODES, SG_SLOTS, BLOCK_K)
        if EVEN_K and WORDWISE:  # 3/5/6 bits always mask: 2 slots of 32 are spare
            x_mask = m_mask[:, None]
        else:
            x_mask = m_mask[:, None] & live[None, :]
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + cols[None, :], mask=x_mask, other=0.0)
        codes = _codes_nk(w_ptr, offs_n, k0 // CPW, n_mask, n_words, stride_wn, BITS, CPW, SG_WORDS, SG_SLOTS, BLOCK_N, BLOCK_K, EVEN_K)
        if GROUP == 0:
            w = _dequant(codes, scale[:, None], zero[:, None], HALF)
        elif WORDWISE:
            w = _dequant_groups(codes, s_ptr, z_ptr, offs_n, n_mask, k0, K, stride_sn, stride_sg, BITS, GROUP, HAS_ZEROS, BLOCK_N, BLOCK_K, HALF)
        else:
            w = _dequant_straddling(codes, cols, s_ptr, z_ptr, offs_n, n_mask, k0, K, stride_sn, stride_sg, BITS, GROUP, HAS_ZEROS,
                                    SG_CODES, SG_SLOTS, BLOCK_N, BLOCK_K, HALF)
        if DOT_FP32:  # the interpreter: fp32 operands (the weights are already rounded to the activation dtype)
            acc += tl.dot(x.to(tl.float32), tl.trans(w.to(tl.float32)))
        else:
            acc += tl.dot(x, tl.trans(w))
    out_ptrs = out_ptr + tl.program_id(1) * stride_os + offs_m[:, None] * stride_om + offs_n[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


ONE_F32 = 0x3F800000  # the bits of 1.0f, passed to the GEMV (see ``_mantissa_codes``)

# One configuration each when not autotuning (see ``autotuning``): large blocks keep the number of programs and
# loop steps small under the interpreter, and are valid tiles on any GPU.
FIXED_GEMV = {"BLOCK_N": 64, "BLOCK_K": 128, "PREFETCH": True}
FIXED_GEMM = {"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 128, "GROUP_M": 8}

# Batch-1 tiles: 16 rows by 1024 columns over 128 threads puts 4 rows and 4 words in each thread, so each
# activation a thread loads and converts serves 4 rows (sm_90 SASS, Triton 3.9: 3.9 instructions a weight in
# the W4 main loop, 4.3 with groups of 128). Narrower K steps are for short rows, fewer rows for narrow layers.
# Every tile prefetches the next step's words; the three main ones are also tried without (see _gemv_word_groups).
# The two 32-row tiles put 8 rows in a thread: 7-20% fewer instructions a weight than the main tile for most formats
# (Triton 3.9: int4 per channel 3.66, g128 3.98; 3.6: 3.72 and 4.07; benchmarks/gemv_sass.py), but 168-255 registers
# for W4 (and a spill for int8 per channel) and half as many programs. Whether that pays is the GPU's to say.
_GEMV_CONFIGS = [
    triton.Config({"BLOCK_N": bn, "BLOCK_K": bk, "PREFETCH": pf}, num_warps=w, num_stages=s)
    for bn, bk, w, s, pf in [(16, 1024, 4, 2, True), (16, 1024, 4, 2, False), (16, 512, 2, 2, True), (16, 512, 2, 2, False),
                             (16, 2048, 8, 2, True), (8, 1024, 2, 2, True), (8, 1024, 2, 2, False), (32, 512, 4, 2, True),
                             (32, 256, 2, 2, True), (64, 256, 4, 2, True), (8, 512, 2, 2, True), (8, 256, 1, 2, True),
                             (32, 1024, 4, 2, True), (32, 2048, 8, 2, True)]
]
# The two smaller 16-row tiles were added when 3/5/6-bit codes were gathered column by column and every other 16-row
# tile spilled. With slot groups none does, and neither has the fewest instructions a weight for any format
# (16 x 128 x 64 or 16 x 64 x 128 has; benchmarks/gemm_sass.py). They stay as candidates: more programs for narrow layers.
_GEMM_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_warps=w, num_stages=s)
    for bm, bn, bk, w, s in [(16, 64, 128, 4, 3), (16, 128, 64, 4, 4), (16, 64, 64, 4, 3), (16, 128, 32, 4, 4),
                             (32, 64, 128, 4, 3), (32, 128, 64, 4, 4), (64, 64, 64, 4, 4), (64, 128, 64, 4, 3),
                             (64, 128, 32, 4, 4), (128, 128, 64, 8, 3), (128, 64, 64, 4, 4), (128, 256, 64, 8, 3)]
]


def prune_gemv_configs(configs, named_args, **kwargs):
    """Drop tiles whose K step is longer than the row (K rounded up to a power of two): their lanes only load masks.

    Short rows (a small model's 384 inputs) then autotune 3 to 7 tiles, not 14. Keeps the shortest step if none fits.
    Triton passes the positional arguments as ``named_args`` and the keyword ones (``CPW``) as ``kwargs``."""
    k = 1 << max(0, (named_args["K"] - 1).bit_length())
    kept = [c for c in configs if step_columns(c.kwargs["BLOCK_K"], kwargs["CPW"], kwargs["GROUP"]) <= k]
    return kept or [min(configs, key=lambda c: c.kwargs["BLOCK_K"])]


_GEMV_STEPS = {  # constexprs of how the GEMV walks K, from the block size and the format (see gemv_steps)
    "EVEN_K": lambda a: even_k(a["K"], step_columns(a["BLOCK_K"], a["CPW"], a["GROUP"]), a["SPLIT_K"]),
    **{name: (lambda a, name=name: step_constexprs(a["BLOCK_K"], a["CPW"], a["GROUP"])[name]) for name in ("STEP", "TW", "NGS")},
}
_gemv_tuned = triton.autotune(configs=_GEMV_CONFIGS, key=["N", "K", "SPLIT_K", "BITS", "GROUP", "HAS_ZEROS"], do_bench=autotune_bench,
                              prune_configs_by={"early_config_prune": prune_gemv_configs})(
    triton.heuristics(_GEMV_STEPS)(wq_gemv_kernel))
_GEMM_STEPS = {  # constexprs of how the GEMM walks K (see gemv_steps)
    "EVEN_K": lambda a: even_k(a["K"], gemm_step_columns(a["BLOCK_K"], a["CPW"]), a["SPLIT_K"]),
    "SG_WORDS": lambda a: gemm_slot_group(a["CPW"])[0],
    "SG_SLOTS": lambda a: gemm_slot_group(a["CPW"])[1],
}
_gemm_tuned = triton.autotune(configs=_GEMM_CONFIGS, key=["M_BUCKET", "N", "K", "SPLIT_K", "BITS", "GROUP", "HAS_ZEROS"],
                              prune_configs_by={"early_config_prune": prune_gemm_configs}, do_bench=autotune_bench)(
    triton.heuristics(_GEMM_STEPS)(wq_gemm_kernel))


def _row_stride(scales) -> int:
    """Row stride of ``scales``/``zeros``; 0 broadcasts a per-tensor ``(1, 1)`` scale to every output."""
    return 0 if scales.shape[0] == 1 else scales.stride(0)


def launch_gemv(x, qweight, scales, zeros, out, split_k: int, bits: int, cpw: int, group: int, compile_only: bool = False,
                tile: triton.Config | None = None) -> list:
    """Run the GEMV kernel: ``out`` is ``(M, N)`` when ``split_k == 1``, else fp32 ``(split_k, M, N)``.

    ``tile`` (one of ``_GEMV_CONFIGS``, say) runs that tile instead of autotuning. With ``compile_only``
    nothing runs: the kernels this launch needs are compiled and returned (see ``tiles.launch``)."""
    m, k = x.shape
    n = qweight.shape[0]
    stride_os = out.stride(0) if split_k > 1 else 0
    stride_om = out.stride(-2)
    args = (x, qweight, scales, scales if zeros is None else zeros, out, ONE_F32, n, k, x.stride(0), qweight.stride(0),
            _row_stride(scales), scales.stride(1), stride_os, stride_om)
    meta = dict(BITS=bits, CPW=cpw, GROUP=group, HAS_ZEROS=zeros is not None, WORDWISE=wordwise(cpw), SPLIT_K=split_k)
    if tile is None and autotuning():
        return launch(_gemv_tuned, lambda c: (triton.cdiv(n, c["BLOCK_N"]), split_k, m), args, meta, compile_only)
    blocks = FIXED_GEMV if tile is None else tile_kwargs(tile)
    steps = {name: rule({**meta, **blocks, "K": k}) for name, rule in _GEMV_STEPS.items()}
    return launch(wq_gemv_kernel, (triton.cdiv(n, blocks["BLOCK_N"]), split_k, m), args, {**meta, **steps, **blocks}, compile_only)


def launch_gemm(x, qweight, scales, zeros, out, split_k: int, bits: int, cpw: int, group: int, compile_only: bool = False,
                tile: triton.Config | None = None) -> list:
    """Run the tiled GEMM kernel: ``out`` is ``(M, N)`` when ``split_k == 1``, else fp32 ``(split_k, M, N)``; ``tile`` and
    ``compile_only`` as for :func:`launch_gemv`."""
    m, k = x.shape
    n = qweight.shape[0]
    bucket = batch_bucket(m)
    stride_os = out.stride(0) if split_k > 1 else 0
    args = (x, qweight, scales, scales if zeros is None else zeros, out, m, n, k, bucket, x.stride(0), qweight.stride(0),
            _row_stride(scales), scales.stride(1), stride_os, out.stride(-2))
    meta = dict(BITS=bits, CPW=cpw, GROUP=group, HAS_ZEROS=zeros is not None, WORDWISE=wordwise(cpw), SPLIT_K=split_k,
                DOT_FP32=interpreting())  # numpy computes the interpreter's dot: same products, fp32 operands (see the kernel)
    if tile is None and autotuning():
        return launch(_gemm_tuned, lambda c: (triton.cdiv(m, c["BLOCK_M"]) * triton.cdiv(n, c["BLOCK_N"]), split_k), args, meta,
                      compile_only)
    blocks = FIXED_GEMM if tile is None else tile_kwargs(tile)
    grid = (triton.cdiv(m, blocks["BLOCK_M"]) * triton.cdiv(n, blocks["BLOCK_N"]), split_k)
    steps = {name: rule({**meta, **blocks, "K": k}) for name, rule in _GEMM_STEPS.items()}
    return launch(wq_gemm_kernel, grid, args, {**meta, **steps, **blocks}, compile_only)


def _split_output(x, n: int, split_k: int) -> torch.Tensor:
    """What a launch split ``split_k`` ways over K writes: fp32 partial sums ``(split_k, M, N)``, or the output itself."""
    if split_k > 1:
        return torch.empty(split_k, x.shape[0], n, dtype=torch.float32, device=x.device)
    return torch.empty(x.shape[0], n, dtype=x.dtype, device=x.device)


def _reduce_splits(out: torch.Tensor, split_k: int, dtype: torch.dtype) -> torch.Tensor:
    """The output from :func:`_split_output`'s buffer: the partial sums added (in fp32, then rounded once), or itself."""
    return out.sum(dim=0).to(dtype) if split_k > 1 else out


def gemv(x, w, split_k: int, compile_only: bool = False, tile: triton.Config | None = None) -> tuple:
    """``x @ dequant(w).T`` by the GEMV for a ``PackedWeight`` ``w``: ``(out, compiled kernels)``.

    Allocates what :func:`launch_gemv` writes (fp32 partial sums when split over K, which it then adds)."""
    out = _split_output(x, w.shape[0], split_k)
    compiled = launch_gemv(x, w.qweight, w.scales, w.zeros, out, split_k, w.bits, w.codes_per_word, w.group_size, compile_only, tile)
    return _reduce_splits(out, split_k, x.dtype), compiled


def gemm(x, w, split_k: int = 1, compile_only: bool = False, tile: triton.Config | None = None) -> tuple:
    """``x @ dequant(w).T`` by the tiled GEMM for a ``PackedWeight`` ``w``: ``(out, compiled kernels)``; splits over K
    as :func:`gemv` does."""
    out = _split_output(x, w.shape[0], split_k)
    compiled = launch_gemm(x, w.qweight, w.scales, w.zeros, out, split_k, w.bits, w.codes_per_word, w.group_size, compile_only, tile)
    return _reduce_splits(out, split_k, x.dtype), compiled
