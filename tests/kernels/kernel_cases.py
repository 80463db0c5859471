"""Shared by the kernel tests: where kernels run, random packed weights, and the float64 check with fp16/bf16 error bounds.

Error bounds follow from fp16/bf16 operands: the output is rounded once to the activation
dtype (unit roundoff u = 2**-11 for fp16, 2**-8 for bf16) and the GEMM also rounds the
dequantized weights to that dtype, so ``|y - ref| <= 2u * (|x| @ |W|.T)`` elementwise;
the checks allow twice that.
"""

from __future__ import annotations

import math

import torch

from autoq.kernels.capability import interpreting
from autoq.kernels.formats import PackedWeight, pack_weight, split_counters
from autoq.quant import QuantSpec

DEVICE = torch.device("cpu" if interpreting() else "cuda")
UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}


def random_packed(spec: QuantSpec, n: int, k: int, gen: torch.Generator) -> PackedWeight:
    """Random codes, positive scales spread over a decade, and (asymmetric) random integer zero points; with the
    counters a layer keeps for launches split over K."""
    g = 1 if spec.granularity in ("tensor", "channel") else math.ceil(k / spec.group_size)
    rows = 1 if spec.granularity == "tensor" else n
    codes = torch.randint(0, spec.qmax + 1, (n, k), generator=gen).to(torch.uint8)
    scales = (10 ** (torch.rand(rows, g, generator=gen) - 2)).half()
    zeros = None if spec.symmetric else torch.randint(0, spec.qmax + 1, (rows, g), generator=gen).half()
    return PackedWeight(spec, (n, k), pack_weight(codes, spec.bits), scales, zeros, split_counters(n)).to(DEVICE)


def assert_close_to_reference(y: torch.Tensor, x: torch.Tensor, w64: torch.Tensor, dtype: torch.dtype) -> None:
    assert y.dtype == dtype and y.shape == (*x.shape[:-1], w64.shape[0])
    ref = x.double() @ w64.T
    bound = 4 * UNIT_ROUNDOFF[dtype] * (x.double().abs() @ w64.abs().T) + 1e-6
    err = (y.double() - ref).abs()
    assert torch.isfinite(y).all()
    assert (err <= bound).all(), f"max error {err.max():.3g}, worst ratio to bound {(err / bound).max():.3g}"
