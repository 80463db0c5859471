"""Weight-only low-bit Triton kernels: ``y = x @ dequant(W).T`` for packed W2/W3/W4/W8 (and W5/W6).

Imported only when a kernel runs (it imports Triton). Both kernels read the layout of
:mod:`autoq.kernels.formats` and dequantize in registers: a code is one load of its
int32 word, a shift by ``(k % C) * bits`` and a mask; ``w = scale * (code - zero)`` in
fp32. Scales come once per row of a tile when a group spans the whole K block (per channel,
or ``group_size`` a multiple of ``BLOCK_K``), else once per group in the tile.

* ``gemv``: one program per ``BLOCK_N`` outputs, per row of ``x`` and per K split; the
  products accumulate elementwise in an fp32 ``(BLOCK_N, BLOCK_K)`` tile reduced once at
  the end (no tensor cores: batch 1 is memory-bound). With ``split_k > 1`` each split writes fp32 partial sums that the host adds.
* ``gemm``: tiled ``BLOCK_M x BLOCK_N`` with ``tl.dot`` on fp16/bf16 operands and fp32
  accumulation, grouped program order for L2 reuse.

On a GPU both are autotuned per (N, K, batch bucket); under ``TRITON_INTERPRET=1`` (or with
``AUTOQ_AUTOTUNE=0``) one large-block configuration is used directly.
"""

from __future__ import annotations

import triton
import triton.language as tl

from autoq.kernels.capability import autotuning, interpreting
from autoq.kernels.tiles import autotune_bench, batch_bucket, prune_gemm_configs, tile_offsets


@triton.jit
def _scale_zero_rows(s_ptr, z_ptr, offs_n, n_mask, g, stride_sn, stride_sg, BITS: tl.constexpr, HAS_ZEROS: tl.constexpr):
    """Scale and zero ``(BLOCK_N,)`` of group ``g`` (one group covers the whole K block)."""
    ptrs = offs_n * stride_sn + g * stride_sg
    scale = tl.load(s_ptr + ptrs, mask=n_mask, other=0.0).to(tl.float32)
    if HAS_ZEROS:
        zero = tl.load(z_ptr + ptrs, mask=n_mask, other=0.0).to(tl.float32)
    else:
        zero = tl.zeros_like(scale) + (1 << (BITS - 1))
    return scale, zero


@triton.jit
def _codes_nk(w_ptr, offs_n, k0, offs_k, n_mask, k_mask, k_limit, stride_wn, BITS: tl.constexpr, CPW: tl.constexpr,
              BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, WORDWISE: tl.constexpr, EVEN_K: tl.constexpr):
    """Unpacked codes ``(BLOCK_N, BLOCK_K)`` of columns ``k0 + arange(BLOCK_K)``, as fp32.

    ``WORDWISE`` (2/4/8 bits: a power-of-two number of codes per word) loads each word once,
    contiguously, and expands it to its ``CPW`` codes; otherwise (3/5/6 bits) each column
    gathers its own word (repeated addresses hit the cache). ``EVEN_K``: the block lies
    inside K, so the load is masked by row alone and each thread's words load as one vector.
    """
    if WORDWISE:
        offs_w = k0 // CPW + tl.arange(0, BLOCK_K // CPW)
        if EVEN_K:
            w_mask = n_mask[:, None]
        else:
            w_mask = n_mask[:, None] & (offs_w * CPW < k_limit)[None, :]
        words = tl.load(w_ptr + offs_n[:, None] * stride_wn + offs_w[None, :], mask=w_mask, other=0)
        shifts = tl.arange(0, CPW) * BITS
        codes = tl.reshape((words[:, :, None] >> shifts[None, None, :]) & ((1 << BITS) - 1), [BLOCK_N, BLOCK_K])
    else:
        if EVEN_K:
            mask = n_mask[:, None]
        else:
            mask = n_mask[:, None] & k_mask[None, :]
        words = tl.load(w_ptr + offs_n[:, None] * stride_wn + (offs_k // CPW)[None, :], mask=mask, other=0)
        codes = (words >> ((offs_k % CPW) * BITS)[None, :]) & ((1 << BITS) - 1)
    return codes.to(tl.float32)


@triton.jit
def _dequant_groups(codes, s_ptr, z_ptr, offs_n, n_mask, k0, k_limit, stride_sn, stride_sg, BITS: tl.constexpr,
                    GROUP: tl.constexpr, HAS_ZEROS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """``scale * (code - zero)`` of a ``(BLOCK_N, BLOCK_K)`` tile of a group format (GROUP > 0).

    A group at least as wide as the block gives one (scale, zero) per row; narrower groups
    (a power of two dividing BLOCK_K) view the tile as ``(BLOCK_N, BLOCK_K // GROUP, GROUP)``.
    """
    if GROUP % BLOCK_K == 0:
        scale, zero = _scale_zero_rows(s_ptr, z_ptr, offs_n, n_mask, k0 // GROUP, stride_sn, stride_sg, BITS, HAS_ZEROS)
        w = (codes - zero[:, None]) * scale[:, None]
    else:
        offs_g = k0 // GROUP + tl.arange(0, BLOCK_K // GROUP)
        ptrs = offs_n[:, None] * stride_sn + offs_g[None, :] * stride_sg
        mask = n_mask[:, None] & (offs_g * GROUP < k_limit)[None, :]
        scale = tl.load(s_ptr + ptrs, mask=mask, other=0.0).to(tl.float32)
        if HAS_ZEROS:
            zero = tl.load(z_ptr + ptrs, mask=mask, other=0.0).to(tl.float32)
        else:
            zero = tl.zeros_like(scale) + (1 << (BITS - 1))
        grouped = tl.reshape(codes, [BLOCK_N, BLOCK_K // GROUP, GROUP])
        w = tl.reshape((grouped - zero[:, :, None]) * scale[:, :, None], [BLOCK_N, BLOCK_K])
    return w


@triton.jit
def wq_gemv_kernel(x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, N, K, stride_xm, stride_wn, stride_sn, stride_sg, stride_os, stride_om,
                   BITS: tl.constexpr, CPW: tl.constexpr, GROUP: tl.constexpr, HAS_ZEROS: tl.constexpr, WORDWISE: tl.constexpr, SPLIT_K: tl.constexpr,
                   EVEN_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    row = tl.program_id(2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    k_per_split = tl.cdiv(tl.cdiv(K, SPLIT_K), BLOCK_K) * BLOCK_K
    k_begin = pid_s * k_per_split
    k_end = tl.minimum(k_begin + k_per_split, K)
    acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)  # reduced once after the loop
    if GROUP == 0:
        scale, zero = _scale_zero_rows(s_ptr, z_ptr, offs_n, n_mask, 0, stride_sn, stride_sg, BITS, HAS_ZEROS)
    for k0 in range(k_begin, k_end, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_mask = offs_k < k_end
        if EVEN_K:
            x = tl.load(x_ptr + row * stride_xm + offs_k).to(tl.float32)
        else:
            x = tl.load(x_ptr + row * stride_xm + offs_k, mask=k_mask, other=0.0).to(tl.float32)
        codes = _codes_nk(w_ptr, offs_n, k0, offs_k, n_mask, k_mask, k_end, stride_wn, BITS, CPW, BLOCK_N, BLOCK_K, WORDWISE, EVEN_K)
        if GROUP == 0:
            acc += (codes - zero[:, None]) * x[None, :]  # the row's one scale is applied after the loop
        else:
            w = _dequant_groups(codes, s_ptr, z_ptr, offs_n, n_mask, k0, k_end, stride_sn, stride_sg, BITS, GROUP, HAS_ZEROS, BLOCK_N, BLOCK_K)
            acc += w * x[None, :]
    y = tl.sum(acc, axis=1)
    if GROUP == 0:
        y = y * scale
    tl.store(out_ptr + pid_s * stride_os + row * stride_om + offs_n, y.to(out_ptr.dtype.element_ty), mask=n_mask)


@triton.jit
def wq_gemm_kernel(x_ptr, w_ptr, s_ptr, z_ptr, out_ptr, M, N, K, M_BUCKET, stride_xm, stride_wn, stride_sn, stride_sg, stride_om,
                   BITS: tl.constexpr, CPW: tl.constexpr, GROUP: tl.constexpr, HAS_ZEROS: tl.constexpr, WORDWISE: tl.constexpr, DOT_FP32: tl.constexpr,
                   EVEN_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    offs_m, offs_n = tile_offsets(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    m_mask = offs_m < M
    n_mask = offs_n < N
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    if GROUP == 0:
        scale, zero = _scale_zero_rows(s_ptr, z_ptr, offs_n, n_mask, 0, stride_sn, stride_sg, BITS, HAS_ZEROS)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_mask = offs_k < K
        if EVEN_K:
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :], mask=m_mask[:, None], other=0.0)
        else:
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :], mask=m_mask[:, None] & k_mask[None, :], other=0.0)
        codes = _codes_nk(w_ptr, offs_n, k0, offs_k, n_mask, k_mask, K, stride_wn, BITS, CPW, BLOCK_N, BLOCK_K, WORDWISE, EVEN_K)
        if GROUP == 0:
            w = (codes - zero[:, None]) * scale[:, None]
        else:
            w = _dequant_groups(codes, s_ptr, z_ptr, offs_n, n_mask, k0, K, stride_sn, stride_sg, BITS, GROUP, HAS_ZEROS, BLOCK_N, BLOCK_K)
        if DOT_FP32:  # the interpreter: fp32 operands, weights rounded to the activation dtype first
            acc += tl.dot(x.to(tl.float32), tl.trans(w.to(x_ptr.dtype.element_ty).to(tl.float32)))
        else:
            acc += tl.dot(x, tl.trans(w.to(x_ptr.dtype.element_ty)))
    out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


# One configuration each when not autotuning (see ``autotuning``): large blocks keep the number of programs and
# loop steps small under the interpreter, and are valid tiles on any GPU.
FIXED_GEMV = {"BLOCK_N": 64, "BLOCK_K": 128}
FIXED_GEMM = {"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 128, "GROUP_M": 8}

_GEMV_CONFIGS = [
    triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
    for bn, bk, w, s in [(8, 256, 4, 2), (16, 128, 4, 2), (16, 256, 4, 3), (32, 128, 4, 3), (32, 256, 8, 3),
                         (64, 64, 4, 3), (64, 128, 8, 2), (8, 512, 4, 2), (4, 512, 2, 2), (128, 64, 8, 2)]
]
# The two smaller 16-row tiles are there for 3/5/6 bits at batch <= 16: every other 16-row tile spills registers
# when its codes are gathered (112-384 bytes of stack in the sm_90 SASS; `compile_check --sass` shows it).
_GEMM_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_warps=w, num_stages=s)
    for bm, bn, bk, w, s in [(16, 64, 128, 4, 3), (16, 128, 64, 4, 4), (16, 64, 64, 4, 3), (16, 128, 32, 4, 4),
                             (32, 64, 128, 4, 3), (32, 128, 64, 4, 4), (64, 64, 64, 4, 4), (64, 128, 64, 4, 3),
                             (64, 128, 32, 4, 4), (128, 128, 64, 8, 3), (128, 64, 64, 4, 4), (128, 256, 64, 8, 3)]
]


def even_k(k: int, block_k: int, split_k: int = 1) -> bool:
    """Whether every K split is whole ``BLOCK_K`` blocks: then no load is masked along K (see ``_codes_nk``)."""
    return k % (block_k * split_k) == 0


_EVEN_K = {"EVEN_K": lambda a: even_k(a["K"], a["BLOCK_K"], a.get("SPLIT_K", 1))}
_gemv_tuned = triton.autotune(configs=_GEMV_CONFIGS, key=["N", "K", "SPLIT_K", "BITS", "GROUP", "HAS_ZEROS"],
                              do_bench=autotune_bench)(triton.heuristics(_EVEN_K)(wq_gemv_kernel))
_gemm_tuned = triton.autotune(configs=_GEMM_CONFIGS, key=["M_BUCKET", "N", "K", "BITS", "GROUP", "HAS_ZEROS"],
                              prune_configs_by={"early_config_prune": prune_gemm_configs},
                              do_bench=autotune_bench)(triton.heuristics(_EVEN_K)(wq_gemm_kernel))


def _wordwise(cpw: int) -> bool:
    """Whether words expand to their codes in registers (a power-of-two count divides every BLOCK_K)."""
    return cpw & (cpw - 1) == 0 and all(c.kwargs["BLOCK_K"] % cpw == 0 for c in _GEMV_CONFIGS + _GEMM_CONFIGS)


def _row_stride(scales) -> int:
    """Row stride of ``scales``/``zeros``; 0 broadcasts a per-tensor ``(1, 1)`` scale to every output."""
    return 0 if scales.shape[0] == 1 else scales.stride(0)


def launch_gemv(x, qweight, scales, zeros, out, split_k: int, bits: int, cpw: int, group: int) -> None:
    """Run the GEMV kernel: ``out`` is ``(M, N)`` when ``split_k == 1``, else fp32 ``(split_k, M, N)``."""
    m, k = x.shape
    n = qweight.shape[0]
    stride_os = out.stride(0) if split_k > 1 else 0
    stride_om = out.stride(-2)
    args = (x, qweight, scales, scales if zeros is None else zeros, out, n, k, x.stride(0), qweight.stride(0),
            _row_stride(scales), scales.stride(1), stride_os, stride_om)
    meta = dict(BITS=bits, CPW=cpw, GROUP=group, HAS_ZEROS=zeros is not None, WORDWISE=_wordwise(cpw), SPLIT_K=split_k)
    if autotuning():
        _gemv_tuned[lambda c: (triton.cdiv(n, c["BLOCK_N"]), split_k, m)](*args, **meta)
    else:
        grid = (triton.cdiv(n, FIXED_GEMV["BLOCK_N"]), split_k, m)
        wq_gemv_kernel[grid](*args, **meta, EVEN_K=even_k(k, FIXED_GEMV["BLOCK_K"], split_k), **FIXED_GEMV)


def launch_gemm(x, qweight, scales, zeros, out, bits: int, cpw: int, group: int) -> None:
    """Run the tiled GEMM kernel into ``out`` ``(M, N)``."""
    m, k = x.shape
    n = qweight.shape[0]
    bucket = batch_bucket(m)
    args = (x, qweight, scales, scales if zeros is None else zeros, out, m, n, k, bucket, x.stride(0), qweight.stride(0),
            _row_stride(scales), scales.stride(1), out.stride(0))
    meta = dict(BITS=bits, CPW=cpw, GROUP=group, HAS_ZEROS=zeros is not None, WORDWISE=_wordwise(cpw))
    dot_fp32 = interpreting()  # numpy computes the interpreter's dot: same products, fp32 operands (see the kernel)
    if autotuning():
        _gemm_tuned[lambda c: (triton.cdiv(m, c["BLOCK_M"]) * triton.cdiv(n, c["BLOCK_N"]),)](*args, **meta, DOT_FP32=dot_fp32)
    else:
        c = FIXED_GEMM
        grid = (triton.cdiv(m, c["BLOCK_M"]) * triton.cdiv(n, c["BLOCK_N"]),)
        wq_gemm_kernel[grid](*args, **meta, DOT_FP32=dot_fp32, EVEN_K=even_k(k, c["BLOCK_K"]), **c)
