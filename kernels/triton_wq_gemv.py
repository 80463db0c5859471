"""The weight-only GEMV in Triton: ``y = x @ dequant(W).T`` for packed W2-W8 at batch 1 (memory-bound, no tensor cores).

Imported only when a kernel runs (it imports Triton); :func:`autoq.kernels.ops.wq_linear` chooses it
for batch 1 and :mod:`autoq.kernels.triton_wq_gemm` for larger batches. It reads the layout of
:mod:`autoq.kernels.formats` and dequantizes in registers; ``w = scale * (code - zero)``.

One program per ``BLOCK_N`` outputs, per row of ``x`` and per K split. Packed words are never
unpacked into a tile: slot ``j`` of every word is turned into the float ``1 + code / 2**bits`` by a
shift and an and-or and multiplied by ``x[word * C + j]`` (see ``_mantissa_codes``); each scale group's
``sum (code - zero) * x`` is recovered from ``sum m * x`` and ``sum x`` once per group and K step (once
per row per channel). That is three instructions a weight where an int-to-float conversion and a
subtraction would take five. Split over K, each split writes fp32 partial sums and the last split of
each tile to finish adds them (:func:`autoq.kernels.splits.store_split`).

On a GPU it is autotuned per (N, K, format), the split over K with the tile (or per split, where the
caller names one); under ``TRITON_INTERPRET=1`` (or with ``AUTOQ_AUTOTUNE=0``) one large-block
configuration (``FIXED_GEMV``) is used directly, split as :func:`autoq.kernels.ops.split_k_for` says.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait  # programmatic dependent launch (Hopper and later)

from autoq.errors import AutoqError
from autoq.kernels.capability import cuda_sm_count, interpreting
from autoq.kernels.gemv_steps import even_k, step_columns, step_constexprs, wordwise
from autoq.kernels.splits import SPLITS, resolved_split, run_split, splits_of, store_split, with_split
from autoq.kernels.tiles import autotune_bench, launch_tile
from autoq.kernels.triton_gemv_loads import step_words, word_scales
from autoq.kernels.triton_half2 import gemv_half2
from autoq.kernels.triton_half2_persistent import gemv_half2_persistent, persistent_grid
from autoq.kernels.triton_row_sums import sum_rows
from autoq.kernels.triton_scales import scale_row_stride, scale_zero_cols, scale_zero_rows


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
    scale, zero = scale_zero_cols(s_ptr, z_ptr, offs_n, n_mask, g, g * GROUP < k_end, stride_sn, stride_sg, BITS, HAS_ZEROS)
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
def _gemv_word_groups(one_f32, x_ptr, w_ptr, s_ptr, z_ptr, n0, N, offs_n, n_mask, row, w_begin, w_end, k_end, stride_xm, stride_wn,
                      stride_sn, stride_sg, BITS: tl.constexpr, CPW: tl.constexpr, GROUP: tl.constexpr, HAS_ZEROS: tl.constexpr,
                      EVEN_K: tl.constexpr, EVEN_N: tl.constexpr, BLOCK_N: tl.constexpr, BW: tl.constexpr, PREFETCH: tl.constexpr,
                      ROWS_IN_THREAD: tl.constexpr):
    """``sum_k scale * (code - zero) * x`` over words ``[w_begin, w_end)``, ``BW`` words a step, when every scale
    group is whole words (2/4/8 bits, and any width per channel).

    The words tile ``(BLOCK_N, BW)`` stays in the layout it was loaded in: slot ``j`` of every word
    multiplies ``x[word * CPW + j]``, so no code moves between threads. With ``m = 1 + code / 2**BITS``,
    a group's ``sum (code - zero) * x`` is ``2**BITS * sum m * x - (2**BITS + zero) * sum x``: per weight a
    shift, an and-or and an FMA. Groups narrower than a step (``NG`` of ``WPG`` words) are summed per
    step; a 2-D tile, not a 3-D one, keeps Triton 3.6 from giving each thread a single row.

    With a power-of-two ``CPW`` (``SPLIT_X``) a step's activations load as one contiguous vector and are split
    pairwise into the slots (``_slot_products``): 4.08 instructions a weight for int4 per channel with Triton 3.6,
    where gathering each slot's activations took 4.39. The split slots are still not laid out as the words'
    tile, though: Triton passes each through shared memory, a store, a load and two barriers a slot (below).

    ``PREFETCH`` loads the next step's words before this step's arithmetic. Triton does not pipeline these
    loads (the sm_90 SASS is the same for 2 and 3 stages): without it each step waits a full memory latency,
    and a layer of 256 programs keeps about half the bytes in flight that an H200 needs. The autotuner tries both.

    ``ROWS_IN_THREAD`` gives each thread one word of every row of the tile instead of 4 words of 4 rows.
    Triton lays a load out by its addresses: 4 contiguous words become one 16-byte vector a thread, and the
    activations those words need are then loaded by other threads, so every slot's activations went through
    shared memory: 8 store/load pairs and 16 barriers a step for W4 per channel in the sm_90 SASS (Triton 3.9;
    20 with 3.6). Here the words load flat, word-fastest, with lanes paired as ``i ^ 1`` so that no contiguity
    is left to vectorize, and are reshaped to the tile: one 4-byte word per row in each thread, the same layout
    with Triton 3.6 and 3.9 (a 2-D load is a tie that the two versions break differently). Each slot's
    activations load as a ``(1, BW)`` tile in that layout, and in group formats each word takes its own group's
    scale: the loop has no barrier and moves nothing between threads. Fewer rows a thread make more threads
    (several warps a scheduler at LLaMA shapes) for more instructions a weight. ``EVEN_N`` drops the rows' mask.
    """
    SPLIT_X: tl.constexpr = CPW == 4 or CPW == 8 or CPW == 16
    WPG: tl.constexpr = GROUP // CPW if GROUP > 0 and GROUP < BW * CPW else BW
    NG: tl.constexpr = BW // WPG
    ONE: tl.constexpr = 1 << BITS
    tl.static_assert(WPG * NG == BW, "BLOCK_K and the group size must be whole words")
    if ROWS_IN_THREAD:  # word i of the step in lane i ^ 1: no contiguity for Triton to vectorize (see above)
        tl.static_assert(BW % 2 == 0 and (WPG % 2 == 0 or NG == 1), "ROWS_IN_THREAD pairs words within a step and a group")
        wi = tl.arange(0, BW) ^ 1
        flat = tl.arange(0, BLOCK_N * BW)
        rows = n0 + flat // BW
        row_mask = rows < N
        wcols = (flat % BW) ^ 1
    else:
        wi = tl.arange(0, BW)
        rows = offs_n[:, None]
        row_mask = n_mask[:, None]
        wcols = wi[None, :]
    acc = tl.zeros([BLOCK_N, BW], dtype=tl.float32)  # per channel and whole-step groups: reduced after the loop
    acc_g = tl.zeros([BLOCK_N, NG], dtype=tl.float32)  # narrower groups
    corr = tl.zeros([BLOCK_N], dtype=tl.float32)  # whole-step groups: sum of scale * (2**BITS + zero) * sum x
    xsum = tl.zeros([BW], dtype=tl.float32)  # per channel: sum x over the whole range
    if PREFETCH:
        words = step_words(w_ptr, rows, row_mask, w_begin, wcols, w_end, k_end, stride_wn, CPW, EVEN_K, EVEN_N, BLOCK_N, BW, ROWS_IN_THREAD)
    for w0 in range(w_begin, w_end, BW):
        cols = (w0 + wi) * CPW
        if PREFETCH:
            ahead = step_words(w_ptr, rows, row_mask, w0 + BW, wcols, w_end, k_end, stride_wn, CPW, EVEN_K, EVEN_N, BLOCK_N, BW,
                                ROWS_IN_THREAD)  # in flight during this step
        else:
            words = step_words(w_ptr, rows, row_mask, w0, wcols, w_end, k_end, stride_wn, CPW, EVEN_K, EVEN_N, BLOCK_N, BW, ROWS_IN_THREAD)
        part = tl.zeros([BLOCK_N, BW], dtype=tl.float32)
        xs = tl.zeros([BW], dtype=tl.float32)
        if ROWS_IN_THREAD:  # each slot's activations as a (1, BW) tile: laid out as the words' tile, one a thread
            for j in tl.static_range(CPW):
                xj = _load_x(x_ptr + row * stride_xm, cols[None, :] + j, k_end, EVEN_K)
                part += _mantissa_codes(words, one_f32, j, BITS) * xj
                xs += tl.sum(xj, axis=0)
        elif SPLIT_X:
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
            scale, zero = scale_zero_rows(s_ptr, z_ptr, offs_n, n_mask, w0 * CPW // GROUP, stride_sn, stride_sg, BITS, HAS_ZEROS)
            acc += (scale * ONE)[:, None] * part
            corr += scale * (ONE + zero) * tl.sum(xs, axis=0)
        elif ROWS_IN_THREAD:  # each word's own group's scale, as the words are laid out: no sum across lanes in the loop
            # 64-bit offsets: with the constexpr row stride, Triton 3.9 folds each row's into the load's immediate
            flat_cols = (w0 + wcols) * CPW
            scale, zero = word_scales(s_ptr, z_ptr, rows.to(tl.int64) * stride_sn + (flat_cols // GROUP) * stride_sg, row_mask, flat_cols,
                                       k_end, BITS, HAS_ZEROS, EVEN_K, EVEN_N)
            acc += tl.reshape(scale, [BLOCK_N, BW]) * (ONE * part - tl.reshape(ONE + zero, [BLOCK_N, BW]) * xs[None, :])
        else:
            acc_g += _group_sums(part, xs, s_ptr, z_ptr, offs_n, n_mask, w0 * CPW // GROUP, k_end, stride_sn, stride_sg,
                                 BITS, GROUP, HAS_ZEROS, BLOCK_N, NG, WPG)
        if PREFETCH:
            words = ahead
    if ROWS_IN_THREAD:  # a butterfly that halves the rows a lane holds each level (autoq.kernels.triton_row_sums)
        sums = sum_rows(acc, BLOCK_N, BW)
    else:
        sums = tl.sum(acc, axis=1)
    if GROUP == 0:
        scale, zero = scale_zero_rows(s_ptr, z_ptr, offs_n, n_mask, 0, stride_sn, stride_sg, BITS, HAS_ZEROS)
        y = scale * (ONE * sums - (ONE + zero) * tl.sum(xsum, axis=0))
    elif NG == 1:
        y = sums - corr
    elif ROWS_IN_THREAD:
        y = sums
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
def wq_gemv_kernel(x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, part_ptr, count_ptr, one_f32, N, K, stride_xm, stride_wn: tl.constexpr, stride_sn: tl.constexpr,
                   stride_sg, stride_om,
                   BITS: tl.constexpr, CPW: tl.constexpr, GROUP: tl.constexpr, HAS_ZEROS: tl.constexpr, WORDWISE: tl.constexpr, SPLIT_K: tl.constexpr,
                   EVEN_K: tl.constexpr, EVEN_N: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PREFETCH: tl.constexpr,
                   STEP: tl.constexpr, TW: tl.constexpr, NGS: tl.constexpr, ROWS_IN_THREAD: tl.constexpr, PDL: tl.constexpr,
                   HALF2: tl.constexpr = False, H2_ASM: tl.constexpr = False, PERSIST: tl.constexpr = 0):
    """One program: ``BLOCK_N`` outputs of one row of ``x`` over one K split (written to ``out_ptr`` when K is not split,
    else as fp32 to ``part_ptr``, one ``(M, N)`` slice a split, added by the last split: ``store_split``); how it walks K (``STEP``, ``TW``,
    ``NGS``, derived from ``BLOCK_K``) is :func:`autoq.kernels.gemv_steps.step_constexprs`. The row strides of the
    words and scales are constexprs: a thread's rows are then one address plus immediate offsets (one GEMV a row length).
    ``PDL`` (launched with ``launch_pdl``, sm_90 and later): the program starts while the previous kernel in the stream
    ends, waits for it before its first load or store, and lets the next kernel start likewise (see :func:`gemv`)."""
    if PDL:
        gdc_wait()
        gdc_launch_dependents()
    if PERSIST:  # a few programs an SM, each walking row tiles (HALF2, whole K steps, no split: the launcher checks)
        gemv_half2_persistent(x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, N, K, tl.program_id(2), stride_xm, stride_wn, stride_sn, stride_sg,
                              stride_om, BITS, CPW, GROUP, HAS_ZEROS, EVEN_N, BLOCK_N, STEP, PREFETCH, H2_ASM)
    else:
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
            if HALF2:
                y = gemv_half2(x_ptr, w_ptr, s_ptr, z_ptr, pid_n * BLOCK_N, N, offs_n, n_mask, row, w_begin, w_end, tl.minimum(w_end * CPW, K),
                               stride_xm, stride_wn, stride_sn, stride_sg, BITS, CPW, GROUP, HAS_ZEROS, EVEN_N, BLOCK_N, STEP, PREFETCH, H2_ASM)
            else:
                y = _gemv_word_groups(one_f32, x_ptr, w_ptr, s_ptr, z_ptr, pid_n * BLOCK_N, N, offs_n, n_mask, row, w_begin, w_end,
                                      tl.minimum(w_end * CPW, K), stride_xm, stride_wn, stride_sn, stride_sg, BITS, CPW, GROUP, HAS_ZEROS, EVEN_K,
                                      EVEN_N, BLOCK_N, STEP, PREFETCH, ROWS_IN_THREAD)
        else:
            k_per_split = tl.cdiv(tl.cdiv(K, SPLIT_K), NGS * GROUP) * NGS * GROUP  # whole groups
            k_begin = pid_s * k_per_split
            y = _gemv_group_words(one_f32, x_ptr, w_ptr, s_ptr, z_ptr, offs_n, n_mask, row, k_begin, tl.minimum(k_begin + k_per_split, K),
                                  stride_xm, stride_wn, stride_sn, stride_sg, BITS, CPW, GROUP, HAS_ZEROS, BLOCK_N, NGS, TW, PREFETCH)
        store_split(y, out_ptr, part_ptr, count_ptr, row * stride_om + offs_n, n_mask, tl.num_programs(2) * stride_om,
                    row * tl.num_programs(0) + pid_n, SPLIT_K)


ONE_F32 = 0x3F800000  # the bits of 1.0f, passed to the GEMV (see ``_mantissa_codes``)


def gemv_tile(block_n: int, block_k: int, warps: int, stages: int = 2, prefetch: bool | int = True, rows_in_thread: bool = False,
              half2: bool = False, persist: int = 0):
    """A GEMV tile as a ``triton.Config``: every launch keyword of the kernel's tile, in one place (``half2``: packed-half
    W4 dots, :mod:`autoq.kernels.triton_half2`, always with the rows in a thread; ``prefetch=2``, two steps ahead, only
    there; ``persist``: that many programs an SM, each walking row tiles, :mod:`autoq.kernels.triton_half2_persistent`)."""
    if not isinstance(prefetch, int) or prefetch not in (0, 1, 2):
        raise ValueError(f"prefetch is how many K steps ahead the words load: 0, 1 or 2 (or a bool), not {prefetch!r}")
    if prefetch == 2 and not half2:
        raise ValueError("prefetch=2 (two steps ahead) is a HALF2 tile's; the fp32 GEMV prefetches one step or none")
    if persist and not (half2 and prefetch):
        raise ValueError(f"persist={persist} (programs an SM walking row tiles) is a HALF2 tile's that loads ahead: half2=True, prefetch 1 or 2")
    persistent = {"PERSIST": persist} if persist else {}  # absent otherwise: the other tiles' keywords (and names) stay as they were
    return triton.Config({"BLOCK_N": block_n, "BLOCK_K": block_k, "PREFETCH": prefetch, "ROWS_IN_THREAD": rows_in_thread or half2,
                          "HALF2": half2, **persistent}, num_warps=warps, num_stages=stages)


def persist_problem(tile: triton.Config, k: int, split: int | None) -> str | None:
    """Why the persistent tile ``tile`` cannot run rows of ``k`` columns split ``split`` ways, or ``None``: it walks
    whole K steps, unsplit (:mod:`autoq.kernels.triton_half2_persistent`)."""
    step = step_columns(tile.kwargs["BLOCK_K"], 8)
    if split not in (None, 1):
        return f"persistent GEMV tiles (PERSIST) sum each row tile in one program: split_k must be 1, not {split}"
    if k % step:
        return f"persistent GEMV tiles (PERSIST) walk whole K steps: K={k} must be a multiple of their {step} columns (BLOCK_K)"
    return None


def resident_slots(device: torch.device) -> int:
    """What a persistent tile's ``PERSIST`` multiplies: the GPU's SMs; 2 elsewhere (the interpreter), so that
    tests there see programs walking several row tiles."""
    if device.type != "cuda" or interpreting():
        return 2
    return cuda_sm_count(device.index if device.index is not None else torch.cuda.current_device())


def _pairs_misaligned(x: torch.Tensor) -> bool:
    """Whether a row of fp16 activations ``x`` starts off a 4-byte boundary, where HALF2 tiles cannot read it in pairs."""
    return bool(x.data_ptr() % 4 or (x.shape[0] > 1 and x.stride(0) % 2))


def half2_problem(x: torch.Tensor, k: int, bits: int) -> str | None:
    """Why a ``HALF2`` tile cannot run this launch, or ``None``: it reads W4 codes against fp16 activations two at a time
    (4-byte aligned rows of ``x``, an even K)."""
    if bits != 4:
        return f"HALF2 GEMV tiles read 4-bit codes, not {bits}-bit"
    if x.dtype != torch.float16:
        return f"HALF2 GEMV tiles take fp16 activations, not {x.dtype}"
    if _pairs_misaligned(x):
        return "HALF2 GEMV tiles read activations in 4-byte pairs: rows must start 4-byte aligned"
    if k % 2:
        return f"HALF2 GEMV tiles read activations in pairs: K={k} must be even"
    return None


# One configuration when not autotuning (see ``autotuning``): a large block keeps the number of programs and
# loop steps small under the interpreter, and it is a valid tile on any GPU.
FIXED_GEMV = gemv_tile(64, 128, 4).kwargs

# Batch-1 tiles: 16 rows by 1024 columns over 128 threads puts 4 rows and 4 words in each thread, so each
# activation a thread loads and converts serves 4 rows (sm_90 SASS, Triton 3.9: 3.9 instructions a weight in
# the W4 main loop, 4.3 with groups of 128). Narrower K steps are for short rows, fewer rows for narrow layers.
# Every tile prefetches the next step's words; the three main ones are also tried without (see _gemv_word_groups).
# The two 32-row tiles put 8 rows in a thread: 7-20% fewer instructions a weight than the main tile for most formats
# (Triton 3.9: int4 per channel 3.66, g128 3.98; 3.6: 3.72 and 4.07; benchmarks/gemv_sass.py), but 168-255 registers
# for W4 (and a spill for int8 per channel) and half as many programs. Whether that pays is the GPU's to say.
# The last four hold the rows in a thread (ROWS_IN_THREAD: no barrier in the loop), one word of 16, 8 or 4 rows each:
# the fewer rows, the more warps (4096 rows: 1024, 2048, 4096 and, with 2048-column steps, 4096) and the more
# instructions a weight (W4 per channel: 3.73, 4.03, 4.66, 4.03 with Triton 3.9; g128 4.69 to 5.81). The H200's autotune timings
# suggest why that may pay: the other tiles make 512-2048 warps for a 4096 x 4096 W4 layer, 1-4 for each scheduler,
# and each K step added about 0.3-1 us whatever its size (W4 g128, 32 x 256 to 32 x 2048: 20.8, 12.6, 8.6, 7.5 us).
_GEMV_CONFIGS = [gemv_tile(bn, bk, w, s, pf) for bn, bk, w, s, pf in [
    (16, 1024, 4, 2, True), (16, 1024, 4, 2, False), (16, 512, 2, 2, True), (16, 512, 2, 2, False), (16, 2048, 8, 2, True),
    (8, 1024, 2, 2, True), (8, 1024, 2, 2, False), (32, 512, 4, 2, True), (32, 256, 2, 2, True), (64, 256, 4, 2, True),
    (8, 512, 2, 2, True), (8, 256, 1, 2, True), (32, 1024, 4, 2, True), (32, 2048, 8, 2, True)]]
_GEMV_CONFIGS += [gemv_tile(bn, bk, w, rows_in_thread=True) for bn, bk, w in [(16, 1024, 4), (8, 1024, 4), (4, 1024, 4), (8, 2048, 8)]]
# HALF2 (W4 with fp16 activations only; pruned otherwise): rows in a thread, each word's 8 codes dotted in packed halves,
# 2.5-2.9 instructions a weight per channel in the sm_90 SASS (Triton 3.9 and 3.6) where the fp32 rows-in-thread tiles
# take 3.7, 3.3-3.7 in groups of 128 against 4.7 (see autoq.kernels.triton_half2). The same row counts, 2048-column steps
# on 8 warps, and short steps for short rows. On the H200 (2026-12-04, calls back to back, 4096 x 4096 per channel) the
# four with an fp32 rows-in-thread twin (4-16 rows, 1024- and 2048-column steps) were 4-16% faster than it (8 x 2048:
# 5.62 against 6.68 us), 8 x 256 about even with the fp32 8 x 256 and 16 x 512 slower than the fp32 16 x 512; the
# autotuner chose them for most W4 layers. One without prefetch took 12.7 us and is not in the list.
_GEMV_CONFIGS += [gemv_tile(bn, bk, w, half2=True) for bn, bk, w in [
    (16, 1024, 4), (8, 1024, 4), (4, 1024, 4), (16, 2048, 8), (8, 2048, 8), (32, 1024, 8), (16, 512, 2), (8, 256, 1)]]
# The same with two steps' loads in flight (not yet timed on a GPU): without prefetch a HALF2 tile took twice as long as
# with one step ahead, and the layer's time then was about a memory latency plus its arithmetic, run one after the other.
# In the sm_90 SASS ptxas issues a prefetch late in the step before the one using it, so two ahead is where a whole
# step's arithmetic overlaps the loads (``triton_half2._fetch``); 8 x 2048, the fastest one-ahead tile, is among them.
_GEMV_CONFIGS += [gemv_tile(bn, bk, w, prefetch=2, half2=True) for bn, bk, w in [(16, 1024, 4), (8, 1024, 4), (4, 1024, 4), (8, 512, 2),
                                                                                  (8, 2048, 8)]]
# Persistent HALF2 tiles (not yet timed on a GPU; whole K steps, unsplit: pruned elsewhere): ``PERSIST`` programs an SM,
# each walking row tiles with its loads running ahead across them (autoq.kernels.triton_half2_persistent). On the H200
# the W4 GEMV's marginal rate between 4096 and 11008 rows was 2.8 TB/s: programs of two K steps that start cold, in
# waves. Per channel each count fits on an SM at once (sm_90 SASS, registers with Triton 3.6 / 3.9: 8 x 2048 one ahead
# 59 / 48, two ahead 94 / 72; 8 x 1024 two ahead 64 / 56; 4 x 1024 48 / 40), so no program waits for another to end.
# In groups the 8-row tiles two ahead take 80-98 registers: there the counts may not all fit, and programs beyond them start late.
_GEMV_CONFIGS += [gemv_tile(bn, bk, w, prefetch=pf, half2=True, persist=per) for bn, bk, w, pf, per in [
    (8, 2048, 8, 1, 2), (8, 2048, 8, 1, 4), (8, 2048, 8, 2, 2), (8, 1024, 4, 2, 4), (8, 1024, 4, 2, 8), (4, 1024, 4, 2, 8)]]

# The autotuner that also chooses the split over K (what a batch-1 launch uses on a GPU): every tile above whole,
# and six (two of them HALF2) split 2, 4 and 8 ways where each split keeps a whole step (prune_gemv_configs). The H200 timings read as
# a fixed latency a K step that too few warps hide (kernels/README.md); a split gives 2-8x the programs, each with
# fewer steps. A split tile adds its partial sums in the same kernel (splits.store_split), so its timing includes them.
_SPLIT_TILES = [(16, 1024, 4, 2, True, False), (8, 1024, 4, 2, True, True), (16, 512, 2, 2, True, False), (8, 256, 1, 2, True, False),
                (16, 1024, 4, 2, True, True, True), (8, 1024, 4, 2, True, True, True)]
_GEMV_SPLIT_CONFIGS = [with_split(c, 1) for c in _GEMV_CONFIGS]
_GEMV_SPLIT_CONFIGS += [with_split(gemv_tile(*tile), split) for tile in _SPLIT_TILES for split in SPLITS]


def prune_gemv_configs(configs, named_args, **kwargs):
    """Drop tiles whose K step is longer than the row (K rounded up to a power of two): their lanes only load masks;
    split tiles whose splits would not each get a whole step of K; and persistent tiles where K is not whole steps or
    the launch is split (``SPLIT_K`` among ``kwargs``: the autotuner of a split the caller names).

    Short rows (a small model's 384 inputs) then autotune 3 to 7 tiles, not 14. Keeps the shortest step if none fits.
    Triton passes the positional arguments as ``named_args`` and the keyword ones (``CPW``) as ``kwargs``."""
    k = named_args["K"]
    x = named_args.get("x_ptr")
    k_pow2 = 1 << max(0, (k - 1).bit_length())

    def fits(c) -> bool:
        step = step_columns(c.kwargs["BLOCK_K"], kwargs["CPW"], kwargs["GROUP"])
        split = c.kwargs.get("SPLIT_K", 1)
        if c.kwargs.get("HALF2") and (x is None or half2_problem(x, k, kwargs["BITS"])):
            return False
        if c.kwargs.get("PERSIST") and persist_problem(c, k, c.kwargs.get("SPLIT_K", kwargs.get("SPLIT_K", 1))):  # or the launch's split
            return False
        return step <= k_pow2 if split == 1 else split * step <= k

    kept = [c for c in configs if fits(c)]
    return kept or [min((c for c in configs if c.kwargs.get("SPLIT_K", 1) == 1 and not c.kwargs.get("HALF2")), key=lambda c: c.kwargs["BLOCK_K"])]


@functools.cache
def gemv_splits(k: int, cpw: int, group: int) -> tuple[int, ...]:
    """The splits over K (more than 1) the split-choosing autotuner may pick for rows of ``k`` columns (cached: every
    launch asks, and pruning the list in Python takes about 10 us)."""
    return splits_of(prune_gemv_configs(_GEMV_SPLIT_CONFIGS, {"K": k}, CPW=cpw, GROUP=group))


_GEMV_STEPS = {  # constexprs of how the GEMV walks K, from the block size and the format (see gemv_steps)
    "EVEN_K": lambda a: even_k(a["K"], step_columns(a["BLOCK_K"], a["CPW"], a["GROUP"]), a["SPLIT_K"]),
    "EVEN_N": lambda a: a["N"] % a["BLOCK_N"] == 0,
    **{name: (lambda a, name=name: step_constexprs(a["BLOCK_K"], a["CPW"], a["GROUP"])[name]) for name in ("STEP", "TW", "NGS")},
}
_gemv_heuristic = triton.heuristics(_GEMV_STEPS)(wq_gemv_kernel)
_gemv_tuned = triton.autotune(configs=_GEMV_CONFIGS, key=["N", "K", "SPLIT_K", "BITS", "GROUP", "HAS_ZEROS"], do_bench=autotune_bench,
                              prune_configs_by={"early_config_prune": prune_gemv_configs})(_gemv_heuristic)
_gemv_split_tuned = triton.autotune(configs=_GEMV_SPLIT_CONFIGS, key=["N", "K", "BITS", "GROUP", "HAS_ZEROS"], do_bench=autotune_bench,
                                    prune_configs_by={"early_config_prune": prune_gemv_configs})(_gemv_heuristic)


def launch_gemv(x, qweight, scales, zeros, out, part, counters, split_k: int | None, bits: int, cpw: int, group: int,
                compile_only: bool = False, tile: triton.Config | None = None, pdl: bool = False) -> list:
    """Run the GEMV kernel into ``out`` ``(M, N)``; split over K, through fp32 partial sums in ``part`` ``(splits, M, N)``
    (contiguous, with ``out``'s row stride; empty where nothing splits) and zeroed int32 ``counters``, one per
    ``BLOCK_N`` outputs of a row (``M * N`` always suffice; see :func:`autoq.kernels.splits.store_split`).

    ``split_k=None`` lets the autotuner choose the split with the tile (``_gemv_split_tuned``; ``part`` then holds a
    slice for the largest split it may choose, :func:`gemv_splits`). ``tile`` (one of ``_GEMV_CONFIGS``, say) runs
    that tile instead of autotuning. With ``compile_only`` nothing runs: the kernels this launch needs are
    compiled and returned (see ``tiles.launch``). ``pdl``: a programmatic dependent launch (see :func:`gemv`)."""
    m, k = x.shape
    n = qweight.shape[0]
    args = (x, qweight, scales, scales if zeros is None else zeros, out, part, counters, ONE_F32, n, k, x.stride(0), qweight.stride(0),
            scale_row_stride(scales), scales.stride(1), out.stride(-2))
    meta = dict(BITS=bits, CPW=cpw, GROUP=group, HAS_ZEROS=zeros is not None, WORDWISE=wordwise(cpw), PDL=pdl, H2_ASM=not interpreting())
    if tile is not None and tile.kwargs.get("HALF2"):
        split = split_k if split_k is not None else tile.kwargs.get("SPLIT_K", 1)
        problem = half2_problem(x, k, bits) or (persist_problem(tile, k, split) if tile.kwargs.get("PERSIST") else None)
        if problem:
            raise AutoqError(problem)
    if pdl:
        meta["launch_pdl"] = True
    if split_k is not None:
        meta["SPLIT_K"] = split_k
    tuned = _gemv_tuned if split_k is not None else _gemv_split_tuned
    slots = resident_slots(x.device)

    def grid(c):  # a persistent tile: a few programs an SM, each walking row tiles
        tiles = triton.cdiv(n, c["BLOCK_N"])
        return (persistent_grid(tiles, m, slots, c["PERSIST"]), 1, m) if c.get("PERSIST") else (tiles, c["SPLIT_K"], m)

    return launch_tile(tuned, wq_gemv_kernel, FIXED_GEMV, tile, grid, args, meta, compile_only, _GEMV_STEPS, {"N": n, "K": k})


def gemv(x, w, split_k: int | None, compile_only: bool = False, tile: triton.Config | None = None, pdl: bool = False) -> tuple:
    """``x @ dequant(w).T`` by the GEMV for a ``PackedWeight`` ``w``: ``(out, compiled kernels)``.

    ``split_k=None``: the autotuner chooses the split over K with the tile (on a GPU), or ``tile`` says it (its
    ``SPLIT_K``, else 1). Allocates what :func:`launch_gemv` writes; a split counts on ``w.counters``.

    ``pdl=True`` (Hopper or later): a programmatic dependent launch. Its programs may start while the stream's
    previous kernel ends and wait for it (``griddepcontrol.wait``) before any load or store, so launching overlaps
    the previous kernel's tail; each lets the next kernel launch early too. ``ops.wq_linear`` asks for it only where
    :func:`pdl_by_default` says (``AUTOQ_GEMV_PDL=1``; ``benchmarks/gemv_floor.py`` times tiles with and without)."""
    problem = pdl_problem(x.device, compile_only) if pdl else None
    if problem:
        raise AutoqError(problem)
    if w.bits == 4 and x.dtype == torch.float16 and x.shape[1] % 2 == 0 and _pairs_misaligned(x):
        # HALF2 tiles read activations as int32 pairs, and the autotuner's key (shapes, dtypes) cannot tell a view
        # 2 bytes into a buffer from an aligned one: a tile chosen for one would fault on the other. A copy is aligned.
        x = x.clone(memory_format=torch.contiguous_format)
    m, n = x.shape[0], w.shape[0]
    split = resolved_split(split_k, tile)
    splits = gemv_splits(w.shape[1], w.codes_per_word, w.group_size) if split is None else (split,)

    def launch(out, part, counters):
        return launch_gemv(x, w.qweight, w.scales, w.zeros, out, part, counters, split, w.bits, w.codes_per_word, w.group_size,
                           compile_only, tile, pdl)

    return run_split(launch, m, n, x.dtype, x.device, splits, m, w.counters)


def pdl_problem(device, compile_only: bool = False) -> str | None:
    """Why a programmatic dependent launch cannot run on ``device``, or ``None``: the interpreter, or a GPU before
    Hopper (compiling for a target is the caller's choice)."""
    if compile_only:
        return None
    if interpreting() or device.type != "cuda":
        return "programmatic dependent launch needs a GPU; Triton's interpreter cannot run it (TRITON_INTERPRET=1)"
    major, minor = torch.cuda.get_device_capability(device)
    return None if major >= 9 else f"programmatic dependent launch needs a Hopper GPU or later (sm_90+); this one is sm_{major}{minor}"


def pdl_by_default(device, compile_only: bool = False) -> bool:
    """Whether ``ops.wq_linear`` launches the GEMV as a programmatic dependent launch: only with ``AUTOQ_GEMV_PDL=1``,
    and then on Hopper and later (for ``compile_only``, when Triton's current target is).

    Off by default since the H200 session of 2026-12-04 (``benchmarks/results/gpu_session_nvidia-h200_2026-12-04_half2``):
    launched so by default, the autotuned W4 GEMV was no faster (4096 x 4096 per channel: 5.66 us, 5.61 without),
    while the LLaMA benchmark's W2 and W3 rows at batch 1 were 2-34% slower than the session before. Each program
    lets the next kernel start at once, whose waiting programs may hold SM slots the running one could use."""
    if os.environ.get("AUTOQ_GEMV_PDL", "0") != "1":
        return False
    if compile_only:
        try:
            target = triton.runtime.driver.active.get_current_target()
        except Exception:  # noqa: BLE001 - no driver to ask: no PDL
            return False
        return target.backend == "cuda" and isinstance(target.arch, int) and target.arch >= 90
    return device.type == "cuda" and _pdl_capable(device.index if device.index is not None else torch.cuda.current_device())


@functools.cache
def _pdl_capable(index: int) -> bool:
    """Whether CUDA device ``index`` runs programmatic dependent launches (cached: every batch-1 launch asks)."""
    return not interpreting() and torch.cuda.get_device_capability(index)[0] >= 9
