"""What an assignment costs: exact effective bits per weight and bytes on disk.

Effective bits = (sum over quantized layers of codes + fp16 scales and zero points)
/ (number of weights in those layers). Size in bytes additionally counts every
other parameter (biases, embeddings, norms, skipped layers) at fp16, the form
an exported model keeps them in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

from torch import nn

from autoq.choice import LayerChoice
from autoq.model import LayerInfo, get_module


@dataclass(frozen=True)
class Cost:
    effective_bits: float
    size_bytes: int


@dataclass(frozen=True)
class CostModel:
    """Size accounting for one model's quantizable layers."""

    layers: tuple[LayerInfo, ...]
    other_params: int  # parameters outside the quantized weights, stored as fp16

    @classmethod
    def for_model(cls, model: nn.Module, layers: Sequence[LayerInfo]) -> CostModel:
        total = sum(p.numel() for p in model.parameters())
        # a weight tied between layers is one parameter: subtract it once
        weights = {id(w): w for w in (get_module(model, layer.name).weight for layer in layers)}
        return cls(tuple(layers), total - sum(w.numel() for w in weights.values()))

    @cached_property
    def n_weights(self) -> int:
        return sum(layer.n_weights for layer in self.layers)

    def layer_bits(self, layer: LayerInfo, choice: LayerChoice) -> int:
        return choice.weight.storage_bits(layer.out_features, layer.in_features)

    def layer_bytes(self, layer: LayerInfo, choice: LayerChoice) -> int:
        return choice.weight.storage_bytes(layer.out_features, layer.in_features)

    def cost(self, assignment: Mapping[str, LayerChoice]) -> Cost:
        bits = sum(self.layer_bits(layer, assignment[layer.name]) for layer in self.layers)
        size = sum(self.layer_bytes(layer, assignment[layer.name]) for layer in self.layers)
        return Cost(bits / self.n_weights, size + 2 * self.other_params)
