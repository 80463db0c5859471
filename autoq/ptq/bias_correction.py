"""Empirical bias correction (Nagel et al. 2019): remove the mean output shift that rounding causes.

Quantization changes the expected output by ``(W_hat - W) E[x]``; adding
``-(W_hat - W) E[x]`` to the bias (per output channel) cancels it on the
calibration distribution. Weights are rounded with the MSE-searched range. A
layer without a bias gets no correction (the weights alone are returned).
"""

from __future__ import annotations

from typing import Any

import torch

from autoq.ptq.registry import register_method, require_stats
from autoq.ptq.result import TransformedTensor
from autoq.ptq.rtn import rtn_mse
from autoq.quant import QuantizedTensor, QuantSpec


@register_method("bias-correction", needs_stats=True)
def bias_correction(weight: torch.Tensor, spec: QuantSpec, stats: Any = None) -> QuantizedTensor:
    """Round to nearest (MSE range), with the bias moved by the mean output shift the rounding causes."""
    stats = require_stats(stats, "bias-correction", weight, spec)
    w = weight.detach().float()
    q = rtn_mse(w, spec)
    delta = -((q.dequantize() - w).double() @ stats.mean.double()).float()
    return TransformedTensor(q.spec, q.codes, q.scale, q.zero, bias_delta=delta)
