"""A packed weight's scales and zero points in Triton, as both weight-only kernels load them.

The GEMV (:mod:`autoq.kernels.triton_wq_gemv`) and the GEMM (:mod:`autoq.kernels.triton_wq_gemm`)
read the ``(N, groups)`` scales and zeros of :mod:`autoq.kernels.formats` the same way: one pair a
row when a group spans the whole K step, a ``(rows, groups)`` tile when groups are narrower.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def load_masked(ptrs, mask):
    """``ptrs`` loaded where ``mask`` holds, 0 elsewhere; ``mask=None`` loads every one (no predicate)."""
    if mask is None:
        values = tl.load(ptrs)
    else:
        values = tl.load(ptrs, mask=mask, other=0)
    return values


@triton.jit
def _load_f32(ptrs, mask):
    """``ptrs`` as fp32, 0 where ``mask`` is false; ``mask=None`` loads every one (no predicate)."""
    return load_masked(ptrs, mask).to(tl.float32)


@triton.jit
def load_scale_zero(s_ptr, z_ptr, ptrs, mask, BITS: tl.constexpr, HAS_ZEROS: tl.constexpr):
    """fp32 scales and zero points at offsets ``ptrs`` (``mask=None``: all in bounds); a symmetric format's zero is
    ``2**(BITS-1)``."""
    scale = _load_f32(s_ptr + ptrs, mask)
    if HAS_ZEROS:
        zero = _load_f32(z_ptr + ptrs, mask)
    else:
        zero = tl.zeros_like(scale) + (1 << (BITS - 1))
    return scale, zero


@triton.jit
def scale_zero_rows(s_ptr, z_ptr, offs_n, n_mask, g, stride_sn, stride_sg, BITS: tl.constexpr, HAS_ZEROS: tl.constexpr):
    """Scale and zero ``(BLOCK_N,)`` of group ``g`` (one group covers the whole K block)."""
    return load_scale_zero(s_ptr, z_ptr, offs_n * stride_sn + g * stride_sg, n_mask, BITS, HAS_ZEROS)


@triton.jit
def scale_zero_cols(s_ptr, z_ptr, offs_n, n_mask, g, g_mask, stride_sn, stride_sg, BITS: tl.constexpr, HAS_ZEROS: tl.constexpr):
    """Scale and zero ``(BLOCK_N, G)`` of the groups ``g`` ``(G,)`` (masked by ``g_mask``), for every row."""
    ptrs = offs_n[:, None] * stride_sn + g[None, :] * stride_sg
    return load_scale_zero(s_ptr, z_ptr, ptrs, n_mask[:, None] & g_mask[None, :], BITS, HAS_ZEROS)


def scale_row_stride(scales) -> int:
    """Row stride of ``scales``/``zeros``; 0 broadcasts a per-tensor ``(1, 1)`` scale to every output."""
    return 0 if scales.shape[0] == 1 else scales.stride(0)
