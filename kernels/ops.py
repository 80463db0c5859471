"""Entry points: ``y = x @ W.T`` for packed weights, on Triton or on the plain-torch reference path.

``backend="auto"`` runs Triton for CUDA tensors and torch otherwise (a CPU model never
crawls through the interpreter); ``"triton"`` insists on Triton (CUDA, or CPU tensors
under ``TRITON_INTERPRET=1``); ``"torch"`` is the reference: dequantize, then an fp32
matmul. Inputs may have any leading shape ``(..., K)``; fp16 and bf16 activations (fp32
too on the torch path). Bias is the caller's business.

``compile_only=True`` runs none of it: it compiles the Triton kernels the call would launch
for inputs of these shapes and dtypes, on any device (``meta`` tensors will do), and returns
an uninitialized output of the right shape (see :mod:`autoq.kernels.precompile`).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from autoq.errors import AutoqError
from autoq.kernels.capability import INT8_DOT_CAPABILITY, autotuning, cuda_sm_count, int8_dot_usable, require_triton, triton_usable
from autoq.kernels.formats import Int8Weight, PackedWeight
from autoq.kernels.gradient import with_input_gradient

GEMV_MAX_BATCH = 1  # batch sizes up to this use the GEMV kernel, larger ones the tiled GEMM
GEMM_MIN_BLOCK_M = 16  # the shortest GEMM tiles: the only ones autotuned for batches up to this (tiles.prune_gemm_configs)
BACKENDS = ("auto", "triton", "torch")
_TRITON_DTYPES = (torch.float16, torch.bfloat16)


def check_backend(backend: str) -> None:
    """Refuse a backend name other than ``auto``, ``triton`` or ``torch`` (the device is the tensors' own)."""
    if backend not in BACKENDS:
        raise AutoqError(f"unknown kernel backend {backend!r}; choose one of {BACKENDS} (the device is the tensors': "
                         "move a model with model.cuda())")


def _use_triton(device: torch.device, dtype: torch.dtype, backend: str) -> bool:
    """Whether to run Triton for activations of ``dtype`` on ``device`` (see the module docstring)."""
    check_backend(backend)
    if backend == "torch":
        return False
    if backend == "auto":
        return device.type == "cuda" and dtype in _TRITON_DTYPES and triton_usable(device)
    require_triton(device)
    if dtype not in _TRITON_DTYPES:
        raise AutoqError(f"Triton kernels take fp16 or bf16 activations, got {dtype}")
    return True


def _use_int8_triton(device: torch.device, dtype: torch.dtype, backend: str) -> bool:
    """`_use_triton` for the int8 GEMM, which needs a GPU of compute capability 8.0 or newer: ``auto`` takes the torch
    path below it, ``triton`` is refused there."""
    check_backend(backend)  # a typo is refused on any GPU, not taken for auto below 8.0
    if device.type == "cuda" and backend != "torch" and not int8_dot_usable(device):
        if backend == "triton":
            major, minor = torch.cuda.get_device_capability(device)
            raise AutoqError(f"the W8A8 int8 GEMM needs a GPU of compute capability {INT8_DOT_CAPABILITY[0]}.{INT8_DOT_CAPABILITY[1]} "
                             f"or newer (Ampere: A100, H100, ...); {device} is {major}.{minor}. Use backend='auto' or 'torch'")
        return False
    return _use_triton(device, dtype, backend)


def check_activations(x: torch.Tensor, k: int) -> None:
    """Refuse activations that are not floating point, or not ``k`` wide (:func:`check_features`), as an AutoqError
    saying so: integer inputs were multiplied in fp32 and cast back, and a loaded model answered
    ``tensor([[0, 0, 0, 0]])`` where the float model refused them."""
    if not x.is_floating_point():
        raise AutoqError(f"a quantized layer takes floating-point activations, got {x.dtype} (as nn.Linear refuses them): "
                         "pass x.float(), or the model's own dtype")
    check_features(x, k)


def check_features(x: torch.Tensor, k: int) -> None:
    """Refuse an input whose last dimension is not the layer's ``k`` inputs, as an AutoqError saying both."""
    if x.shape[-1] != k:
        raise AutoqError(f"activations have {x.shape[-1]} features but the weight expects {k}")


def split_k_for(n: int, k: int, block_n: int = 8, target_programs: int | None = None,
                device: torch.device | None = None) -> int:
    """K splits for the GEMV (or a GEMM's row of tiles) when even ``block_n``-row programs cannot fill the GPU (two programs per SM).

    The GEMV uses it only when it does not autotune: autotuning, it times splits with its tiles and keeps the fastest.

    Splitting costs an fp32 partial buffer and the adding of its slices, so it is only for narrow layers
    with long rows (each split keeps at least 512 columns). ``target_programs`` defaults to twice
    the SM count of ``device`` (see :func:`sm_count`).
    """
    if target_programs is None:
        target_programs = 2 * sm_count(device)
    programs = math.ceil(n / block_n)
    if programs == 0 or programs >= target_programs:  # no outputs (a weight of 0 rows): nothing to split
        return 1
    split = min(math.ceil(target_programs / programs), max(1, k // 512))
    return 1 << (split.bit_length() - 1)  # a power of two, rounded down


def gemm_split_k_for(m: int, n: int, k: int, target_programs: int | None = None, device: torch.device | None = None) -> int:
    """K splits for the tiled GEMM at batches up to 16 (``GEMM_MIN_BLOCK_M``), where its autotuner keeps only 16-row tiles;
    used where it does not autotune (autotuning, it times splits with its tiles and keeps the fastest).

    A batch of 16 over 4096 outputs makes 32 tiles of 16 x 128 (the tile with the fewest instructions a
    weight), for an H200's 132 SMs: split 8 ways over K it makes 256. Larger batches keep K whole: their
    tiles are taller and they reuse each weight more, and the fp32 partial sums grow with the batch.
    """
    return split_k_for(n, k, block_n=128, target_programs=target_programs, device=device) if m <= GEMM_MIN_BLOCK_M else 1


def sm_count(device: torch.device | None = None) -> int:
    """Streaming multiprocessors of the CUDA GPU that ``device`` names; the current GPU for ``None`` or ``meta``; 1 without one.

    The tensors' own GPU, not GPU 0: on a machine with mixed GPUs the split must fit the one that runs it.
    """
    if device is not None and device.type == "cuda":  # a launch's tensors: no availability check on this path
        return cuda_sm_count(torch.cuda.current_device() if device.index is None else device.index)
    if (device is None or device.type == "meta") and torch.cuda.is_available():
        return cuda_sm_count(torch.cuda.current_device())
    return 1


def wq_linear(x: torch.Tensor, w: PackedWeight, backend: str = "auto", kernel: str = "auto", split_k: int | None = None,
              compile_only: bool = False) -> torch.Tensor:
    """``x @ dequant(w).T`` for a weight-only packed weight; ``kernel`` is ``auto`` (by batch), ``gemv`` or ``gemm``;
    ``split_k`` splits K that many ways (default: the kernel's autotuner chooses, or, where it does not autotune,
    :func:`split_k_for` for the GEMV and :func:`gemm_split_k_for` for the GEMM)."""
    n, k = w.shape
    check_activations(x, k)
    if kernel not in ("auto", "gemv", "gemm"):
        raise AutoqError(f"unknown weight-only kernel {kernel!r}; choose auto, gemv or gemm")
    if split_k is not None and (isinstance(split_k, bool) or not isinstance(split_k, int) or split_k < 1):
        raise AutoqError(f"split_k must be a positive integer (or None: the kernel chooses), got {split_k!r}")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, k)
    if not compile_only and not _use_triton(x.device, x.dtype, backend):
        return (x2.float() @ w.dequantize().to(x.device).T).to(x.dtype).reshape(*lead, n)
    from autoq.kernels import triton_wq_gemm, triton_wq_gemv  # import Triton

    # the kernels assume unit stride along K and zeros laid out like scales: no-ops for PackedWeight's own tensors
    x2 = x2.contiguous()
    if not all(t.is_contiguous() for t in (w.qweight, w.scales, w.zeros) if t is not None):
        w = dataclasses.replace(w, qweight=w.qweight.contiguous(), scales=w.scales.contiguous(),
                                zeros=None if w.zeros is None else w.zeros.contiguous())  # the rest (counters) as they are
    if kernel == "gemv" or (kernel == "auto" and x2.shape[0] <= GEMV_MAX_BATCH):
        if split_k is None and not autotuning():  # autotuning, the GEMV's autotuner chooses the split with the tile
            split_k = split_k_for(n, k, device=x.device)

        def run(x2: torch.Tensor) -> torch.Tensor:
            return triton_wq_gemv.gemv(x2, w, split_k, compile_only, pdl=triton_wq_gemv.pdl_by_default(x.device, compile_only))[0]
    else:
        if split_k is None and not autotuning():  # autotuning, the GEMM's autotuner chooses the split with the tile
            split_k = gemm_split_k_for(x2.shape[0], n, k, device=x.device)

        def run(x2: torch.Tensor) -> torch.Tensor:
            return triton_wq_gemm.gemm(x2, w, split_k, compile_only)[0]
    return with_input_gradient(x2, run, w.dequantize).reshape(*lead, n)  # the kernels have no backward of their own


def quantize_tokens(x: torch.Tensor, backend: str = "auto", compile_only: bool = False,
                    static_scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 quantization per row (token): int8 codes ``(M, K)`` and fp32 scales ``(M,)``.

    Dynamic: ``scale = max|x_row| / 127`` (at least 1e-8); a row holding NaN or inf gets a NaN scale (its codes are
    then meaningless). ``static_scale`` (a calibrated range's ``max|range| / 127``): that scale for every row, one
    pass; inf clamps to the range, and a row holding NaN gets a NaN scale. Either way codes round half to even, as the
    search's simulation does, and a NaN scale makes the row's outputs NaN, as the simulation's.
    """
    x2 = x.reshape(-1, x.shape[-1])
    if not compile_only and not _use_triton(x.device, x.dtype, backend):
        xf = x2.float()
        if static_scale is None:
            scale = (xf.abs().amax(dim=1) / 127.0).clamp_min(1e-8)
            scale = torch.where(torch.isfinite(xf).all(dim=1), scale, torch.nan)
        else:
            scale = torch.where(torch.isnan(xf).any(dim=1), torch.nan, float(static_scale)).to(torch.float32)
        v = torch.nan_to_num(xf / scale[:, None], nan=0.0)  # NaN cast to int8 is undefined
        q = torch.round(v).clamp_(-127, 127)
        return q.to(torch.int8), scale
    from autoq.kernels import triton_w8a8  # imports Triton

    x2 = x2.contiguous()
    q = torch.empty(x2.shape, dtype=torch.int8, device=x.device)
    scale = torch.empty(x2.shape[0], dtype=torch.float32, device=x.device)
    triton_w8a8.launch_quantize_rows(x2, q, scale, compile_only, static_scale=static_scale)
    return q, scale


def int8_matmul(q: torch.Tensor, q_scale: torch.Tensor, w: Int8Weight, out_dtype: torch.dtype, backend: str = "auto",
                compile_only: bool = False) -> torch.Tensor:
    """``(q * q_scale[:, None]) @ (w.qweight * w.scales[:, None]).T`` with int32 accumulation: ``(M, N)`` in ``out_dtype``.

    ``q`` and ``q_scale`` are checked (as `quantize_tokens` makes them): the kernel read a scale per row past a short one."""
    if q.dim() != 2 or q.dtype != torch.int8:
        raise AutoqError(f"int8_matmul takes q as (M, K) int8 rows (quantize_tokens' first result), got a {q.dim()}-D {q.dtype} tensor")
    if tuple(q_scale.shape) != (q.shape[0],) or not q_scale.is_floating_point():
        raise AutoqError(f"q_scale must be one float scale per row of q, shape ({q.shape[0]},), got a {q_scale.dtype} tensor of shape "
                         f"{tuple(q_scale.shape)}")
    check_features(q, w.shape[1])
    if not compile_only and not _use_int8_triton(q.device, out_dtype, backend):
        acc = (q.double() @ w.qweight.to(q.device).double().T)  # exact: integer products in float64
        return (acc * q_scale.double()[:, None] * w.scales.to(q.device).double().reshape(1, -1)).to(out_dtype)
    from autoq.kernels import triton_w8a8  # imports Triton

    out = torch.empty(q.shape[0], w.shape[0], dtype=out_dtype, device=q.device)
    triton_w8a8.launch_int8_gemm(q.contiguous(), q_scale.contiguous(), w.qweight.contiguous(), w.scales.contiguous(), out,
                                 compile_only)
    return out


def w8a8_linear(x: torch.Tensor, w: Int8Weight, backend: str = "auto", compile_only: bool = False) -> torch.Tensor:
    """``x @ W.T`` with int8 weights and per-token int8 activations quantized on the fly."""
    n, k = w.shape
    check_activations(x, k)
    lead = x.shape[:-1]
    q, scale = quantize_tokens(x, backend, compile_only)
    return int8_matmul(q, scale, w, x.dtype, backend, compile_only).reshape(*lead, n)
