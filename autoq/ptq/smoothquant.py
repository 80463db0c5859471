"""SmoothQuant (Xiao et al. 2022): move activation outliers into the weights for W8A8.

``s_j = max|X_j|^alpha / max|W_:,j|^(1 - alpha)`` per input channel; the layer
computes ``(x / s) (W diag(s))^T``, identical in float, but ``x / s`` has flatter
channels, so per-tensor activation quantization loses less. The weight
``W diag(s)`` is quantized with min-max round-to-nearest. The result carries
``input_scale = s``: with an activation format the evaluation cache quantizes
``x / s`` in a forward pre-hook; weight-only, ``dequantize()`` folds ``1/s`` back.
``smoothquant-search`` picks alpha per layer from a grid by the output error of
8-bit static per-tensor activations on the captured input rows.
"""

from __future__ import annotations

from typing import Any

import torch

from autoq.ptq.registry import register_method, require_stats
from autoq.ptq.result import TransformedTensor
from autoq.ptq.rtn import rtn_minmax
from autoq.quant import QuantizedTensor, QuantSpec
from autoq.quant.activation import ActSpec, fake_quantize_activation, static_range

ALPHA = 0.5
ALPHA_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
W8A8_TENSOR = ActSpec(8, "tensor")


def smoothing_scale(weight: torch.Tensor, act_absmax: torch.Tensor, alpha: float = ALPHA) -> torch.Tensor:
    """``s_j`` per input channel; channels that never fire or have zero weights keep ``s = 1``."""
    w_max = weight.detach().abs().amax(dim=0).float()
    x_max = act_absmax.float()
    s = x_max.clamp_min(1e-5).pow(alpha) / w_max.clamp_min(1e-5).pow(1 - alpha)
    dead = (x_max <= 0) | (w_max <= 0)
    return torch.where(dead, torch.ones_like(s), s)


def smoothquant(weight: torch.Tensor, spec: QuantSpec, stats: Any, alpha: float = ALPHA) -> TransformedTensor:
    """SmoothQuant at one ``alpha``: the weight times the smoothing scale, min-max rounded; the scale kept as the input's."""
    stats = require_stats(stats, "smoothquant", weight, spec)
    w = weight.detach().float()
    s = smoothing_scale(w, stats.absmax, alpha)
    q = rtn_minmax(w * s[None, :], spec)
    return TransformedTensor(q.spec, q.codes, q.scale, q.zero, input_scale=s)


def smoothquant_search(weight: torch.Tensor, spec: QuantSpec, stats: Any, act: ActSpec = W8A8_TENSOR) -> TransformedTensor:
    """SmoothQuant with alpha chosen per layer from ``ALPHA_GRID`` by the W8A8 output error on the captured input rows."""
    stats = require_stats(stats, "smoothquant-search", weight, spec)
    x = stats.samples.float()
    if x.shape[0] == 0:
        return smoothquant(weight, spec, stats)
    w = weight.detach().float()
    ref = x @ w.t()
    best: tuple[float, TransformedTensor] | None = None
    for alpha in ALPHA_GRID:
        q = smoothquant(w, spec, stats, alpha)
        s = q.input_scale
        assert s is not None
        xq = fake_quantize_activation(x / s, act, static_range(stats.min, stats.max, s))
        err = float((xq @ q.dequantize_stored().t() - ref).pow(2).sum())
        if best is None or err < best[0]:
            best = (err, q)
    assert best is not None
    return best[1]


@register_method("smoothquant-search", needs_stats=True, scales_input=True)
def smoothquant_search_method(weight: torch.Tensor, spec: QuantSpec, stats: Any = None) -> QuantizedTensor:
    """The ``smoothquant-search`` method: SmoothQuant at the alpha of least 8-bit output error, per layer."""
    return smoothquant_search(weight, spec, stats)


@register_method("smoothquant", needs_stats=True, scales_input=True)
def smoothquant_method(weight: torch.Tensor, spec: QuantSpec, stats: Any = None) -> QuantizedTensor:
    """The ``smoothquant`` method: SmoothQuant at alpha 0.5."""
    return smoothquant(weight, spec, stats)
