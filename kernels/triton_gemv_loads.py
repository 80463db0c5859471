"""Loads shared by the batch-1 GEMV's fp32 path (:mod:`autoq.kernels.triton_wq_gemv`) and its packed-half W4 path
(:mod:`autoq.kernels.triton_half2`): a K step's packed words, and one scale and zero a word with rows in a thread."""

from __future__ import annotations

import triton
import triton.language as tl

from autoq.kernels.triton_scales import load_masked, load_scale_zero


@triton.jit
def load_words(w_ptr, rows, row_mask, w0, wcols, w_end, k_end, stride_wn, CPW: tl.constexpr, EVEN_K: tl.constexpr,
               EVEN_N: tl.constexpr, INSIDE: tl.constexpr = False):
    """Packed words of rows ``rows`` at words ``w0 + wcols`` of the step starting at word ``w0`` (the two broadcast
    together); 0 past N or K and, for a prefetch past the last step (``w0 >= w_end``), all 0 without touching memory.
    ``EVEN_N`` (whole tiles of rows) drops the rows' mask: a predicate a load fewer, 16 a step with rows in a thread.
    ``INSIDE``: the step is known to lie within K (a prefetch clamped to the last whole step), so nothing along K is
    masked: a predicated load sets its registers to 0 first, instructions every step."""
    w_ptrs = w_ptr + rows * stride_wn + (w0 + wcols)
    if INSIDE:
        in_k = None
    elif EVEN_K:  # whole steps: one predicate for the step keeps each thread's words a single vector load
        in_k = w0 + 0 * wcols < w_end
    else:
        in_k = (w0 + wcols) * CPW < k_end
    if EVEN_N:
        mask = in_k
    elif INSIDE:
        mask = row_mask
    else:
        mask = row_mask & in_k
    return load_masked(w_ptrs, mask)


@triton.jit
def step_words(w_ptr, rows, row_mask, w0, wcols, w_end, k_end, stride_wn, CPW: tl.constexpr, EVEN_K: tl.constexpr,
               EVEN_N: tl.constexpr, BLOCK_N: tl.constexpr, BW: tl.constexpr, ROWS_IN_THREAD: tl.constexpr, INSIDE: tl.constexpr = False):
    """The words tile ``(BLOCK_N, BW)`` of the step at word ``w0``; with ``ROWS_IN_THREAD`` loaded flat (``rows`` and
    ``wcols`` are ``(BLOCK_N * BW,)``, word-fastest) and reshaped, so no Triton version has a 2-D tie to break.
    ``INSIDE``: see :func:`load_words`."""
    words = load_words(w_ptr, rows, row_mask, w0, wcols, w_end, k_end, stride_wn, CPW, EVEN_K, EVEN_N, INSIDE)
    if ROWS_IN_THREAD:
        words = tl.reshape(words, [BLOCK_N, BW])
    return words


@triton.jit
def word_mask(row_mask, cols, k_end, EVEN_K: tl.constexpr, EVEN_N: tl.constexpr):
    """The mask of one value a word with rows in a thread, or ``None``: the rows and the words' first columns ``cols``,
    each only where a tile or step can be partial (a mask is a predicate and a compare a load)."""
    if EVEN_K and EVEN_N:
        mask = None
    elif EVEN_K:
        mask = row_mask
    elif EVEN_N:
        mask = cols < k_end
    else:
        mask = row_mask & (cols < k_end)
    return mask


@triton.jit
def word_scales(s_ptr, z_ptr, offs, row_mask, cols, k_end, BITS: tl.constexpr, HAS_ZEROS: tl.constexpr, EVEN_K: tl.constexpr,
                EVEN_N: tl.constexpr):
    """Scales and zeros at ``offs``, one a word with rows in a thread (fp32), masked as :func:`word_mask` says."""
    return load_scale_zero(s_ptr, z_ptr, offs, word_mask(row_mask, cols, k_end, EVEN_K, EVEN_N), BITS, HAS_ZEROS)
