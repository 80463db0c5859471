"""What an assignment costs: exact effective bits per weight and bytes on disk.

Effective bits = (sum over quantized layers of codes + fp16 scales and zero points,
plus the fp32 input scale of a method that scales its layer's input: AWQ, SmoothQuant)
/ (number of weights in those layers). Size in bytes additionally counts every
other parameter (biases, embeddings, norms, skipped layers) and persistent buffer as an
exported model stores it (`autoq.quant.stored`: fp16, but a tensor fp16 cannot hold
and an integer one keep their dtype), so it is the exported file's tensor bytes. Latency, when the cost model has a latency
source (``--device``), is the sum of the searched layers' GEMM latencies
from ``autoq.latency``; attention, norms, embeddings and skipped layers are not counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property

from torch import nn

from autoq.choice import LayerChoice
from autoq.kernels.formats import supports_w8a8
from autoq.latency import LatencyModel
from autoq.model import LayerInfo, get_module
from autoq.ptq.registry import input_scale_bits
from autoq.quant import QuantSpec
from autoq.quant.stored import stored_nbytes


@dataclass(frozen=True)
class Cost:
    """What an assignment costs, in each unit a budget can take: average bits per weight, bytes, and microseconds."""

    effective_bits: float
    size_bytes: int
    latency_us: float | None = None  # None when no device (latency source) was given


def runs_w8a8(choice: LayerChoice) -> bool:
    """Whether an exported linear layer of ``choice`` runs the W8A8 kernel: a symmetric int8 activation format on an int8
    weight that kernel reads."""
    act = choice.activation
    return act is not None and act.bits == 8 and act.symmetric and supports_w8a8(choice.weight)


@dataclass(frozen=True)
class CostModel:
    """Size (and, with a latency source, latency) accounting for one model's quantizable layers."""

    layers: tuple[LayerInfo, ...]
    other_params: int  # parameters outside the quantized weights
    other_bytes: int  # what the export stores of them and of the persistent buffers
    latency: LatencyModel | None = None

    @classmethod
    def for_model(cls, model: nn.Module, layers: Sequence[LayerInfo], latency: LatencyModel | None = None) -> CostModel:
        """A weight tied between layers is one parameter, counted once; the rest is priced as the export stores it (an
        fp32 running variance beyond fp16's range at 4 bytes a value, an integer parameter in its dtype: at 2 bytes
        each, a size budget was missed by the difference)."""
        weights = {id(get_module(model, layer.name).weight) for layer in layers}
        others = [p for p in model.parameters() if id(p) not in weights]
        names = {name for name, _ in model.named_parameters(remove_duplicate=False)}
        buffers = [b for name, b in model.state_dict().items() if name not in names]
        return cls(tuple(layers), sum(p.numel() for p in others), sum(stored_nbytes(t) for t in [*others, *buffers]), latency)

    def with_latency(self, latency: LatencyModel | None) -> CostModel:
        return replace(self, latency=latency)

    @property
    def latency_source(self) -> str | None:
        """``table:<device>``, ``estimate:roofline:<device>``, or ``None`` without a device."""
        return self.latency.source if self.latency is not None else None

    @cached_property
    def n_weights(self) -> int:
        return sum(layer.n_weights for layer in self.layers)

    def layer_bits(self, layer: LayerInfo, choice: LayerChoice) -> int:
        """What the export stores for the layer: its weight format's codes, scales and zero points, and the method's
        input scale if it has one."""
        return choice.weight.storage_bits(layer.out_features, layer.in_features) + input_scale_bits(choice.method, layer.in_features)

    def layer_bytes(self, layer: LayerInfo, choice: LayerChoice) -> int:
        return choice.weight.storage_bytes(layer.out_features, layer.in_features) + input_scale_bits(choice.method, layer.in_features) // 8

    def layer_us(self, layer: LayerInfo, choice: LayerChoice) -> float:
        """The layer's GEMM at its format; a layer no kernel runs (a convolution, an attention's out_proj: the export
        dequantizes them) at the fp16 matmul's, whatever its format: its format changes its size, not its time. A
        symmetric int8 activation format on an int8 weight the W8A8 kernel reads runs that kernel, as the export does;
        any other activation format runs no kernel either (the export dequantizes and multiplies in torch)."""
        if self.latency is None:
            raise ValueError("this cost model has no latency source")
        act = choice.activation
        w8a8 = runs_w8a8(choice)
        if not layer.is_linear or (act is not None and not w8a8):
            return self.latency.layer_us(layer.out_features, layer.in_features, QuantSpec.half())
        return self.latency.layer_us(layer.out_features, layer.in_features, choice.weight, int8_activations=w8a8)

    def layer_amount(self, layer: LayerInfo, choice: LayerChoice, kind: str) -> float:
        """The layer's share of a budget of ``kind`` (bits | bytes | latency_ms): costs add up per layer."""
        if kind == "bits":
            return self.layer_bits(layer, choice)
        if kind == "bytes":
            return self.layer_bytes(layer, choice)
        return self.layer_us(layer, choice)

    def cost(self, assignment: Mapping[str, LayerChoice]) -> Cost:
        bits = sum(self.layer_bits(layer, assignment[layer.name]) for layer in self.layers)
        size = sum(self.layer_bytes(layer, assignment[layer.name]) for layer in self.layers)
        latency = sum(self.layer_us(layer, assignment[layer.name]) for layer in self.layers) if self.latency is not None else None
        return Cost(bits / self.n_weights, size + self.other_bytes, latency)
