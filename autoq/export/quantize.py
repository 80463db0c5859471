"""Re-quantize the layers of a chosen point exactly as the search's cache did, for export.

Data-free methods (round-to-nearest) need only the weights. Data-driven ones (GPTQ,
AWQ, AdaRound, bias correction) need the layer statistics the search captured: the
same calibration batches give the same statistics and so the same codes. With
``sequential`` statistics each distinct data-driven choice gets its own sweep, as
in the search (a layer's inputs come from earlier layers quantized with that choice).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from autoq.choice import Assignment, LayerChoice
from autoq.errors import AutoqError
from autoq.model import LayerInfo, get_module, to_native, weight_2d
from autoq.model.capture import CalibrationStats, LayerStats
from autoq.ptq import get_method, method_needs_stats
from autoq.quant import QuantizedTensor


def needs_calibration(assignment: Assignment) -> list[str]:
    """Names of the data-driven choices of ``assignment`` (sorted): those that need calibration batches."""
    return sorted({c.name for c in assignment.values() if not c.weight.is_half and method_needs_stats(c.method)})


def quantize_point(model: nn.Module, assignment: Assignment, layers: Sequence[LayerInfo],
                   calibration: Sequence[Any] | None = None, sequential: bool = False) -> dict[str, QuantizedTensor]:
    """The quantized tensor of every non-fp16 layer of ``assignment``, keyed by layer name."""
    data_driven = needs_calibration(assignment)
    if data_driven and calibration is None:
        raise AutoqError(
            f"{', '.join(data_driven[:3])} need the calibration data the search used: pass calibration=[batches] "
            "(autoq.export), or export a built-in model by name, whose calibration set autoq rebuilds"
        )
    stats = CalibrationStats(model, layers, calibration or [], sequential=sequential)
    out: dict[str, QuantizedTensor] = {}
    if sequential:
        for name in data_driven:
            out.update(_sweep(model, assignment, stats, LayerChoice.from_name(name)))
    for name, choice in assignment.items():
        if choice.weight.is_half or name in out:
            continue
        layer_stats = stats.get(name) if method_needs_stats(choice.method) else None
        out[name] = get_method(choice.method)(weight_2d(get_module(model, name)), choice.weight, layer_stats)
    return out


def _sweep(model: nn.Module, assignment: Assignment, stats: CalibrationStats, choice: LayerChoice) -> dict[str, QuantizedTensor]:
    """One sequential sweep with ``choice`` on every layer (as the search's cache ran it); keep the layers that chose it."""
    kept: dict[str, QuantizedTensor] = {}

    def quantize(name: str, layer_stats: LayerStats) -> torch.Tensor:
        module = get_module(model, name)
        q = get_method(choice.method)(weight_2d(module), choice.weight, layer_stats)
        if assignment.get(name) == choice:
            kept[name] = q
        return to_native(module, q.dequantize())

    stats.sweep(quantize)
    return kept
