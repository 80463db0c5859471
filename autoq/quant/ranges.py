"""Range setting: which ``[lo, hi]`` each group is quantized with.

Min-max keeps every weight inside the grid (no clipping error, large rounding
error at low bits); the MSE search shrinks the range per group and keeps the
shrink factor with the lowest ``sum |w - w_hat|^p`` (p = 2: mean squared error),
trading a little clipping error for finer rounding.
"""

from __future__ import annotations

import torch

from autoq.quant.spec import QuantSpec
from autoq.quant.tensor import GroupView, finite_weight, params_from_range, quantize_grouped


def minmax_range(w: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    grouped = GroupView(tuple(w.shape), spec).split(finite_weight(w, "minmax_range"))
    return grouped.amin(dim=1), grouped.amax(dim=1)


def lp_search_range(
    w: torch.Tensor,
    spec: QuantSpec,
    p: float = 2.0,
    grid: int = 40,
    max_shrink: float = 0.6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group range minimising the Lp reconstruction error over shrink factors.

    The candidates are ``alpha * [min, max]`` for ``grid`` values of alpha evenly
    spaced in ``[1 - max_shrink, 1]``; alpha = 1 (min-max) is always a candidate,
    so the result is never worse than min-max under this error.
    """
    view = GroupView(tuple(w.shape), spec)
    grouped = view.split(finite_weight(w, "lp_search_range"))
    mask = view.mask(grouped.device)
    lo0, hi0 = grouped.amin(dim=1), grouped.amax(dim=1)
    best_err = torch.full_like(lo0, float("inf"))
    best_lo, best_hi = lo0.clone(), hi0.clone()
    buffer = torch.empty_like(grouped)  # every candidate's codes and error, computed in place
    for alpha in torch.linspace(1.0, 1.0 - max_shrink, grid).tolist():
        lo, hi = lo0 * alpha, hi0 * alpha
        scale, zero = params_from_range(lo, hi, spec)
        codes = quantize_grouped(grouped, scale, zero, spec, out=buffer)
        err = codes.sub_(zero.float()[:, None]).mul_(scale.float()[:, None]).sub_(grouped).abs_().pow_(p)
        if mask is not None:
            err.mul_(mask)
        err = err.sum(dim=1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_lo = torch.where(better, lo, best_lo)
        best_hi = torch.where(better, hi, best_hi)
    return best_lo, best_hi
