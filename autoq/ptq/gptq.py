"""GPTQ (Frantar et al. 2022): quantize column by column, feeding each column's error forward.

With ``H = X^T X / n`` (+ dampening), the inverse Hessian's upper Cholesky factor
gives the optimal update of the not-yet-quantized columns after each column is
rounded. Blocked with lazy batch updates (columns in blocks of 128, the rest of
the matrix updated once per block). Group parameters are computed from the
already-updated weights when a group starts; with act-order (columns by
decreasing Hessian diagonal) they are fixed up front from the original weights
("static groups"), so every group keeps its contiguous columns.
"""

from __future__ import annotations

from typing import Any

import torch

from autoq.errors import AutoqError
from autoq.ptq.registry import register_method, require_stats
from autoq.quant import QuantizedTensor, QuantSpec
from autoq.quant.tensor import GroupView, params_from_range

BLOCK = 128
DAMP = 0.01


def _params(w: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max (scale, zero) per row of ``w`` as float32 (fp16-exact values)."""
    scale, zero = params_from_range(w.amin(dim=1), w.amax(dim=1), spec)
    return scale.float(), zero.float()


def _inverse_cholesky(h: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of ``(H + damp * mean(diag H) I)^-1``, float64 -> float32. Dampens ``h`` in place (the
    caller's own copy): at most three K x K float64 matrices live at once, where copies made six (9 GB at K = 14336)."""
    h.diagonal().add_(damp * float(h.diagonal().mean()))
    for attempt in range(5):
        chol, info = torch.linalg.cholesky_ex(h)
        if int(info) == 0:
            hinv = torch.cholesky_inverse(chol)
            del chol
            return torch.linalg.cholesky(hinv, upper=True).float()
        h.diagonal().add_(damp * float(h.diagonal().mean()) * 10**attempt)
    raise AutoqError("GPTQ: the layer Hessian is not positive definite even after dampening")


def gptq(weight: torch.Tensor, spec: QuantSpec, stats: Any, act_order: bool = False, block: int = BLOCK, damp: float = DAMP) -> QuantizedTensor:
    """GPTQ on the layer's input statistics (module docstring); ``act_order`` takes columns by falling Hessian diagonal."""
    stats = require_stats(stats, "gptq", weight, spec)
    if spec.granularity == "group" and (isinstance(block, bool) or not isinstance(block, int) or block <= 0 or block % spec.group_size):
        # a group spanning two blocks took its range from the first one's columns and clipped the rest, silently
        raise AutoqError(f"gptq: block={block!r} must be a positive multiple of the group size {spec.group_size} "
                         f"(the default, {BLOCK}, is a multiple of every supported group size)")
    w = weight.detach().float().clone()
    out_f, in_f = w.shape
    h = stats.hessian(torch.float64).to(w.device)  # a new matrix, dampened below; on the weight's device (a CUDA layer's stays there)
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0

    view = GroupView((out_f, in_f), spec)
    grouped = spec.granularity == "group"
    gs = spec.group_size or in_f
    n_per_row = view.n_per_row
    dev = w.device
    scale_m = torch.zeros(out_f, n_per_row, device=dev)
    zero_m = torch.zeros(out_f, n_per_row, device=dev)
    if spec.granularity == "tensor":
        s, z = _params(w.reshape(1, -1), spec)
        scale_m[:], zero_m[:] = s, z
    elif spec.granularity == "channel":
        s, z = _params(w, spec)
        scale_m[:, 0], zero_m[:, 0] = s, z
    elif act_order:  # static groups from the original weights
        for g in range(n_per_row):
            scale_m[:, g], zero_m[:, g] = _params(w[:, g * gs : (g + 1) * gs], spec)

    perm = torch.argsort(h.diagonal(), descending=True) if act_order else torch.arange(in_f, device=dev)
    w = w[:, perm]
    hinv = _inverse_cholesky(h[perm][:, perm] if act_order else h, damp)
    del h
    group_of = (perm // gs).tolist() if grouped else [0] * in_f  # a list: no device sync per column
    codes = torch.zeros(out_f, in_f, device=dev)
    for i1 in range(0, in_f, block):
        i2 = min(i1 + block, in_f)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            g = group_of[col]
            if grouped and not act_order and col % gs == 0:
                end = min(i + gs, i2 - i1)  # gs divides the block, so a group never spans two blocks
                scale_m[:, g], zero_m[:, g] = _params(w1[:, i:end], spec)
            s, z = scale_m[:, g], zero_m[:, g]
            q = torch.clamp(torch.round(w1[:, i] / s + z), spec.qmin, spec.qmax)
            codes[:, col] = q
            e = (w1[:, i] - s * (q - z)) / hinv1[i, i]
            w1[:, i:] -= e[:, None] * hinv1[i, i:][None, :]
            err1[:, i] = e
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    unperm = torch.empty_like(codes)
    unperm[:, perm] = codes
    if spec.granularity == "tensor":
        scale_m, zero_m = scale_m[:1, :1], zero_m[:1, :1]
    return QuantizedTensor(spec, unperm.to(torch.uint8), scale_m.reshape(-1).half(), zero_m.reshape(-1).half())


@register_method("gptq", needs_stats=True)
def gptq_method(weight: torch.Tensor, spec: QuantSpec, stats: Any = None) -> QuantizedTensor:
    """The ``gptq`` method: GPTQ with columns in their own order."""
    return gptq(weight, spec, stats)


@register_method("gptq-act", needs_stats=True)
def gptq_act_order(weight: torch.Tensor, spec: QuantSpec, stats: Any = None) -> QuantizedTensor:
    """The ``gptq-act`` method: GPTQ with columns by falling Hessian diagonal, groups fixed up front."""
    return gptq(weight, spec, stats, act_order=True)
