"""AWQ (Lin et al. 2023): scale salient input channels up before rounding, down in the input.

Per input channel ``s_j = mean|x_j|^alpha``, divided by ``sqrt(max s * min s)`` as the reference AWQ does;
``W diag(s)`` is quantized with min-max round-to-nearest and the layer input is
divided by ``s`` (folded into the previous operation at export). ``alpha`` is
searched on a grid by the layer output error ``tr(D X^T X D^T)`` (exact up to
256 inputs, from a rank-256 factor plus an isotropic tail above); alpha = 0 is
plain round-to-nearest, so AWQ never does worse than RTN min-max on that error.
"""

from __future__ import annotations

from typing import Any

import torch

from autoq.errors import AutoqError
from autoq.ptq.registry import register_method, require_stats
from autoq.ptq.result import TransformedTensor
from autoq.ptq.rtn import rtn_minmax
from autoq.quant import QuantizedTensor, QuantSpec

GRID = 20
MAX_ROWS = 256  # output error from a rank-256 factor of X^T X on wider layers (exact below)


def awq(weight: torch.Tensor, spec: QuantSpec, stats: Any, grid: int = GRID) -> TransformedTensor:
    """AWQ on the layer's input statistics: the activation-aware input scale of least output error on ``grid`` alphas."""
    stats = require_stats(stats, "awq", weight, spec)
    w = weight.detach().float()
    factor = stats.loss_factor(MAX_ROWS)
    x_mag = stats.absmean.float().clamp_min(1e-6)
    best: tuple[float, QuantizedTensor, torch.Tensor] | None = None
    for step in range(grid):
        alpha = step / grid
        s = x_mag.pow(alpha)
        s = s / (s.max() * s.min()).sqrt()  # alpha = 0: s is 1 exactly, plain round-to-nearest
        try:
            q = rtn_minmax(w * s[None, :], spec)
        except AutoqError:  # scaled past what an fp16 scale covers (a dead input channel's s, near 0, stretches the rest)
            if alpha == 0:
                raise  # the weights as they are: the layer's own range, which the error names
            continue
        err = factor.error(q.dequantize() / s[None, :] - w)
        if best is None or err < best[0]:
            best = (err, q, s)
    assert best is not None
    _, q, s = best
    return TransformedTensor(q.spec, q.codes, q.scale, q.zero, input_scale=s)


@register_method("awq", needs_stats=True, scales_input=True)
def awq_method(weight: torch.Tensor, spec: QuantSpec, stats: Any = None) -> QuantizedTensor:
    """The ``awq`` method: AWQ on the default grid of alphas."""
    return awq(weight, spec, stats)
