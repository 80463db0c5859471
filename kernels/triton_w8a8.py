"""W8A8 Triton kernels: per-token int8 activation quantization and an int8 GEMM with int32 accumulation.

Imported only when a kernel runs (it imports Triton).

* ``quantize_rows``: one program per row; pass 1 finds ``max|x|``, pass 2 writes
  ``round(x / scale)`` (half to even, as ``torch.round``; a correctly rounded division) as int8
  with ``scale = max|x| / 127`` (NaN for a row holding NaN or inf: its outputs are NaN, as the
  search's simulation gives). With a static scale (a calibrated range), the second pass alone.
* ``int8_gemm``: ``acc = q @ W.T`` in int32 on int8 tensor cores (``tl.dot``), then
  ``y = acc * scale_x[m] * scale_w[n]`` in fp32, stored as fp16/bf16. Per-tensor weight
  scales use stride 0.
"""

from __future__ import annotations

import triton
import triton.language as tl

from autoq.kernels.tiles import autotune_bench, batch_bucket, launch_tile, prune_gemm_configs, tile_offsets


@triton.jit
def _int8_codes(v):
    """``round(v)`` half to even, as torch.round and the search's simulation round (a tie goes down when odd), clamped
    to [-127, 127]."""
    q = tl.floor(v + 0.5)
    q = tl.where(((q - v) == 0.5) & ((q - 2.0 * tl.floor(q * 0.5)) != 0.0), q - 1.0, q)
    return tl.minimum(tl.maximum(q, -127.0), 127.0)


@triton.jit
def quantize_rows_kernel(x_ptr, q_ptr, s_ptr, K, stride_xm, stride_qm, static_scale, BLOCK_K: tl.constexpr, STATIC: tl.constexpr):
    row = tl.program_id(0)
    if STATIC:  # one calibrated scale for every row: one pass; inf clamps to the range, NaN makes the row's scale NaN
        scale = static_scale
        nan = tl.zeros([BLOCK_K], dtype=tl.float32)
    else:
        amax = tl.zeros([BLOCK_K], dtype=tl.float32)
        nonfinite = tl.zeros([BLOCK_K], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            offs = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + row * stride_xm + offs, mask=offs < K, other=0.0).to(tl.float32)
            amax = tl.maximum(amax, tl.abs(x))
            nonfinite += x - x  # 0 where x is finite, NaN where it is NaN or infinite (tl.maximum skips NaN)
        # a row holding NaN or inf gets a NaN scale, so its outputs are NaN as the simulation's: int8 codes cannot carry it
        scale = tl.maximum(tl.max(amax, axis=0) / 127.0, 1e-8) + tl.sum(nonfinite, axis=0)
    for k0 in range(0, K, BLOCK_K):
        offs = k0 + tl.arange(0, BLOCK_K)
        mask = offs < K
        x = tl.load(x_ptr + row * stride_xm + offs, mask=mask, other=0.0).to(tl.float32)
        if STATIC:
            nan += tl.where(x != x, x, 0.0)
            x = tl.where(x != x, 0.0, x)  # NaN cast to int8 is undefined
        # rounded division, as torch divides: '/' is approximate on NVIDIA GPUs (2 ulp), and a code could differ by one
        q = _int8_codes(tl.math.div_rn(x, scale))
        tl.store(q_ptr + row * stride_qm + offs, q.to(tl.int8), mask=mask)
    if STATIC:
        tl.store(s_ptr + row, scale + tl.sum(nan, axis=0))
    else:
        tl.store(s_ptr + row, scale)


@triton.jit
def int8_gemm_kernel(a_ptr, sa_ptr, w_ptr, sw_ptr, out_ptr, M, N, K, M_BUCKET, stride_am, stride_wn, stride_sw, stride_om,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    offs_m, offs_n = tile_offsets(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    m_mask = offs_m < M
    n_mask = offs_n < N
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_mask = offs_k < K
        a = tl.load(a_ptr + offs_m[:, None] * stride_am + offs_k[None, :], mask=m_mask[:, None] & k_mask[None, :], other=0)
        b = tl.load(w_ptr + offs_n[None, :] * stride_wn + offs_k[:, None], mask=n_mask[None, :] & k_mask[:, None], other=0)
        acc += tl.dot(a, b, out_dtype=tl.int32)
    sa = tl.load(sa_ptr + offs_m, mask=m_mask, other=0.0)
    sw = tl.load(sw_ptr + offs_n * stride_sw, mask=n_mask, other=0.0).to(tl.float32)
    y = acc.to(tl.float32) * sa[:, None] * sw[None, :]
    tl.store(out_ptr + offs_m[:, None] * stride_om + offs_n[None, :], y.to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


# One configuration each when not autotuning (the interpreter, or AUTOQ_AUTOTUNE=0).
FIXED_QUANT = {"BLOCK_K": 256}
FIXED_GEMM = {"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 128, "GROUP_M": 8}

_QUANT_CONFIGS = [triton.Config({"BLOCK_K": bk}, num_warps=w) for bk, w in [(512, 4), (1024, 4), (2048, 8), (4096, 8)]]
_GEMM_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_warps=w, num_stages=s)
    for bm, bn, bk, w, s in [(16, 64, 128, 4, 4), (16, 128, 128, 4, 3), (32, 64, 128, 4, 4), (32, 128, 128, 4, 3),
                             (64, 64, 128, 4, 4), (64, 128, 128, 4, 3), (128, 128, 128, 8, 3), (128, 256, 128, 8, 3),
                             (128, 128, 64, 4, 4), (64, 256, 128, 8, 3)]
]


_quant_tuned = triton.autotune(configs=_QUANT_CONFIGS, key=["K"], do_bench=autotune_bench)(quantize_rows_kernel)
_gemm_tuned = triton.autotune(configs=_GEMM_CONFIGS, key=["M_BUCKET", "N", "K"], prune_configs_by={"early_config_prune": prune_gemm_configs},
                              do_bench=autotune_bench)(int8_gemm_kernel)


def launch_quantize_rows(x, q, scale, compile_only: bool = False, tile: triton.Config | None = None,
                         static_scale: float | None = None) -> list:
    """Quantize each row of ``x`` ``(M, K)`` into ``q`` (int8) and ``scale`` (fp32 ``(M,)``): by each row's own
    ``max|x| / 127``, or with ``static_scale``, one calibrated scale for all (in one pass over ``x``).

    ``tile`` runs that configuration instead of autotuning; ``compile_only`` compiles and returns the kernels."""
    m, k = x.shape
    args = (x, q, scale, k, x.stride(0), q.stride(0), 1.0 if static_scale is None else float(static_scale))
    return launch_tile(_quant_tuned, quantize_rows_kernel, FIXED_QUANT, tile, (m,), args, {"STATIC": static_scale is not None}, compile_only)


def launch_int8_gemm(a, a_scale, w, w_scale, out, compile_only: bool = False, tile: triton.Config | None = None) -> list:
    """``out = (a @ w.T) * a_scale[:, None] * w_scale[None, :]`` with int8 ``a`` ``(M, K)`` and ``w`` ``(N, K)``.

    ``tile`` runs that configuration instead of autotuning. With ``compile_only`` nothing runs: the
    kernels this launch needs are compiled and returned."""
    m, k = a.shape
    n = w.shape[0]
    bucket = batch_bucket(m)
    stride_sw = 0 if w_scale.numel() == 1 else w_scale.stride(0)
    args = (a, a_scale, w, w_scale, out, m, n, k, bucket, a.stride(0), w.stride(0), stride_sw, out.stride(0))
    grid = lambda c: (triton.cdiv(m, c["BLOCK_M"]) * triton.cdiv(n, c["BLOCK_N"]),)  # noqa: E731
    return launch_tile(_gemm_tuned, int8_gemm_kernel, FIXED_GEMM, tile, grid, args, {}, compile_only)
