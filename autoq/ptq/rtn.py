"""Round-to-nearest, with min-max or MSE-searched ranges."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from autoq.ptq.registry import register_method
from autoq.quant import (
    QuantizedTensor,
    QuantSpec,
    lp_search_range,
    minmax_range,
    quantize,
)


@register_method("rtn-minmax")
def rtn_minmax(weight: torch.Tensor, spec: QuantSpec, stats: Mapping[str, Any] | None = None) -> QuantizedTensor:
    lo, hi = minmax_range(weight, spec)
    return quantize(weight, spec, lo, hi)


@register_method("rtn-mse")
def rtn_mse(weight: torch.Tensor, spec: QuantSpec, stats: Mapping[str, Any] | None = None) -> QuantizedTensor:
    lo, hi = lp_search_range(weight, spec, p=2.0)
    return quantize(weight, spec, lo, hi)
