"""Round-to-nearest with four range settings: min-max, MSE grid, LP-norm grid, percentile.

Min-max never clips; the grid searches shrink each group's range to trade clipping
error for rounding error (p = 2: mean squared error; p = 2.4: the LP-norm setting
Nagel et al. recommend at low bits); percentile clips the most extreme 0.1% of a
group's weights on each side.
"""

from __future__ import annotations

from typing import Any

import torch

from autoq.ptq.registry import register_method
from autoq.quant import QuantizedTensor, QuantSpec, lp_search_range, minmax_range, quantize
from autoq.quant.tensor import GroupView

PERCENTILE = 0.999
LP_NORM_P = 2.4


@register_method("rtn-minmax")
def rtn_minmax(weight: torch.Tensor, spec: QuantSpec, stats: Any = None) -> QuantizedTensor:
    lo, hi = minmax_range(weight, spec)
    return quantize(weight, spec, lo, hi)


@register_method("rtn-mse")
def rtn_mse(weight: torch.Tensor, spec: QuantSpec, stats: Any = None) -> QuantizedTensor:
    lo, hi = lp_search_range(weight, spec, p=2.0)
    return quantize(weight, spec, lo, hi)


@register_method("rtn-lp")
def rtn_lp(weight: torch.Tensor, spec: QuantSpec, stats: Any = None) -> QuantizedTensor:
    lo, hi = lp_search_range(weight, spec, p=LP_NORM_P)
    return quantize(weight, spec, lo, hi)


def percentile_range(weight: torch.Tensor, spec: QuantSpec, q: float = PERCENTILE) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group ``[quantile(1 - q), quantile(q)]`` (order statistics, no interpolation)."""
    grouped = GroupView(tuple(weight.shape), spec).split(weight.detach().float())
    n = grouped.shape[1]
    k_hi = min(n, max(1, round(q * n)))
    k_lo = max(1, n + 1 - k_hi)
    lo = torch.kthvalue(grouped, k_lo, dim=1).values
    hi = torch.kthvalue(grouped, k_hi, dim=1).values
    return lo, hi


@register_method("rtn-percentile")
def rtn_percentile(weight: torch.Tensor, spec: QuantSpec, stats: Any = None) -> QuantizedTensor:
    lo, hi = percentile_range(weight, spec)
    return quantize(weight, spec, lo, hi)
