"""`TransformedTensor`: a quantized weight that also rescales the layer's input or shifts its bias.

AWQ and SmoothQuant quantize ``W diag(s)`` and expect the layer input divided by
``s`` per input channel (at export, folded into the previous operation);
bias correction adds ``bias_delta`` to the layer's bias. ``codes``, ``scale`` and
``zero`` describe the stored ``W diag(s)``; :meth:`dequantize` returns the weight
in the layer's own input coordinates, ``W_hat diag(1/s)``, so weight-only
simulation needs no hook.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from autoq.quant import QuantizedTensor


@dataclass(frozen=True)
class TransformedTensor(QuantizedTensor):
    input_scale: torch.Tensor | None = None  # float32 (in,): the layer sees x / input_scale
    bias_delta: torch.Tensor | None = None  # float32 (out,): added to the layer's bias

    def dequantize_stored(self) -> torch.Tensor:
        """The stored (scaled) weight ``W_hat``: what multiplies ``x / input_scale``."""
        return super().dequantize()

    def dequantize(self) -> torch.Tensor:
        w = self.dequantize_stored()
        return w if self.input_scale is None else w / self.input_scale[None, :]


def input_scale_of(q: QuantizedTensor) -> torch.Tensor | None:
    return getattr(q, "input_scale", None)


def bias_delta_of(q: QuantizedTensor) -> torch.Tensor | None:
    return getattr(q, "bias_delta", None)
