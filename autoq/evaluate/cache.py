"""Quantize each (layer, choice) once per search and swap the results into the model.

A trial then costs one evaluation pass plus pointer swaps: ``apply`` replaces each
layer's ``weight.data`` with the cached fake-quantized tensor and restores the
originals on exit.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from autoq.choice import LayerChoice
from autoq.model import get_module, to_native, weight_2d
from autoq.ptq import get_method


def quantize_layer(module: nn.Module, choice: LayerChoice) -> torch.Tensor:
    """The layer's weight after ``choice``, dequantized, in the layer's own layout and dtype."""
    w = weight_2d(module)
    if choice.weight.is_half:
        return to_native(module, w.half().float())
    q = get_method(choice.method)(w, choice.weight, None)
    return to_native(module, q.dequantize())


class QuantCache:
    """Memo of fake-quantized weights keyed by (layer name, choice), filled lazily."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._weights: dict[tuple[str, LayerChoice], torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._weights)

    def weight(self, name: str, choice: LayerChoice) -> torch.Tensor:
        key = (name, choice)
        if key not in self._weights:
            self._weights[key] = quantize_layer(get_module(self.model, name), choice)
        return self._weights[key]

    @contextmanager
    def apply(self, assignment: Mapping[str, LayerChoice]) -> Iterator[nn.Module]:
        """Context manager: the model with ``assignment`` applied; originals restored after."""
        originals: dict[str, torch.Tensor] = {}
        try:
            for name, choice in assignment.items():
                module = get_module(self.model, name)
                new = self.weight(name, choice)
                originals[name] = module.weight.data
                module.weight.data = new
            yield self.model
        finally:
            for name, data in originals.items():
                get_module(self.model, name).weight.data = data


def apply_assignment(model: nn.Module, assignment: Mapping[str, LayerChoice]) -> nn.Module:
    """Quantize ``model`` in place under ``assignment`` (fake quantization) and return it."""
    with torch.no_grad():
        for name, choice in assignment.items():
            module = get_module(model, name)
            module.weight.data = quantize_layer(module, choice)
    return model
