"""Round-to-nearest with four range settings: min-max, MSE grid, LP-norm grid, percentile.

Min-max never clips; the grid searches shrink each group's range to trade clipping
error for rounding error (p = 2: mean squared error; p = 2.4: the LP-norm setting
Nagel et al. recommend at low bits); percentile clips each group at its 0.1% and 99.9%
quantiles, interpolated between order statistics (numpy's default), so that a group of
fewer than 1,000 weights is still clipped a little towards its second-largest value.
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
    """Round to nearest over each group's whole [min, max] range: nothing clipped."""
    lo, hi = minmax_range(weight, spec)
    return quantize(weight, spec, lo, hi)


@register_method("rtn-mse")
def rtn_mse(weight: torch.Tensor, spec: QuantSpec, stats: Any = None) -> QuantizedTensor:
    """Round to nearest over the range, per group, of least squared weight error (a grid of shrunk ranges)."""
    lo, hi = lp_search_range(weight, spec, p=2.0)
    return quantize(weight, spec, lo, hi)


@register_method("rtn-lp")
def rtn_lp(weight: torch.Tensor, spec: QuantSpec, stats: Any = None) -> QuantizedTensor:
    """Round to nearest over the range of least L2.4 weight error, per group (Nagel et al.'s low-bit setting)."""
    lo, hi = lp_search_range(weight, spec, p=LP_NORM_P)
    return quantize(weight, spec, lo, hi)


def _quantile(grouped: torch.Tensor, q: float) -> torch.Tensor:
    """Each row's ``q`` quantile, linear between the order statistics around ``q * (n - 1)`` (``torch.quantile``'s
    default, which refuses inputs over 16M elements, and nearest-rank would make every group under 500 weights min-max)."""
    n = grouped.shape[1]
    pos = q * (n - 1)
    below = min(int(pos), n - 1)
    value = torch.kthvalue(grouped, below + 1, dim=1).values
    frac = pos - below
    if frac <= 0 or below + 1 >= n:
        return value
    above = torch.kthvalue(grouped, below + 2, dim=1).values
    return value + frac * (above - value)


def percentile_range(weight: torch.Tensor, spec: QuantSpec, q: float = PERCENTILE) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group ``[quantile(1 - q), quantile(q)]``, interpolated; a ragged last group's over its real weights only
    (its padding repeats the last column, which would pull its quantiles towards that one weight)."""
    view = GroupView(tuple(weight.shape), spec)
    grouped = view.split(weight.detach().float())
    lo, hi = _quantile(grouped, 1.0 - q), _quantile(grouped, q)
    if view.pad:
        last = grouped.reshape(view.out_features, view.n_per_row, view.group)[:, -1, : view.group - view.pad]
        lo.view(view.out_features, view.n_per_row)[:, -1] = _quantile(last, 1.0 - q)
        hi.view(view.out_features, view.n_per_row)[:, -1] = _quantile(last, q)
    return lo, hi


@register_method("rtn-percentile")
def rtn_percentile(weight: torch.Tensor, spec: QuantSpec, stats: Any = None) -> QuantizedTensor:
    """Round to nearest over each group's 0.1% to 99.9% quantile range: the outliers clip."""
    lo, hi = percentile_range(weight, spec)
    return quantize(weight, spec, lo, hi)
