"""Re-quantize the layers of a chosen point exactly as the search's cache did, for export.

Data-free methods (round-to-nearest) need only the weights. Data-driven ones (GPTQ,
AWQ, AdaRound, bias correction, SmoothQuant) and static activation formats need the
layer statistics the search captured: the same calibration batches give the same
statistics, so the same codes and ranges. With ``sequential`` statistics each distinct
such choice gets its own sweep, as in the search (a layer's inputs come from earlier
layers quantized with that choice).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from autoq.choice import Assignment, LayerChoice
from autoq.errors import AutoqError
from autoq.evaluate.cache import layer_named, needs_stats, quantize_choice, stats_for, sweep_choice
from autoq.fingerprints import data_fingerprint
from autoq.model import LayerInfo, get_module, to_native
from autoq.model.capture import CalibrationStats, LayerStats
from autoq.progress import progress_bar
from autoq.quant import QuantizedTensor
from autoq.quant.activation import ActRange


@dataclass(frozen=True)
class PointLayer:
    """One exported layer: its quantized weight, bias correction's shifted bias, a static activation format's range."""

    tensor: QuantizedTensor
    bias: torch.Tensor | None = None
    act_range: ActRange | None = None


def needs_calibration(assignment: Assignment) -> list[str]:
    """Names of the choices of ``assignment`` that need calibration batches (sorted)."""
    return sorted({c.name for c in assignment.values() if not c.weight.is_half and needs_stats(c)})


def check_calibration(calibration: Sequence[Any], digest: str, n_batches: int) -> None:
    """Refuse calibration batches other than those the search calibrated on (its ``digest`` of them, ``""`` when not
    recorded): data-driven methods would rebuild other weights than the ones the search scored, without a word."""

    if not digest or data_fingerprint(calibration) == digest:
        return
    held = (" (a search without evaluate holds out the last quarter of the batches it is given and calibrates on the rest: "
            f"pass calibration=batches[:{n_batches}])") if n_batches and len(calibration) > n_batches else ""
    raise AutoqError(f"these {len(calibration)} calibration batches are not the {n_batches or 'ones'} the search calibrated on{held}; "
                     "GPTQ, AWQ and the like would rebuild other weights than the search scored")


def quantize_point(model: nn.Module, assignment: Assignment, layers: Sequence[LayerInfo],
                   calibration: Sequence[Any] | None = None, sequential: bool = False, progress: bool = False) -> dict[str, PointLayer]:
    """Every non-fp16 layer of ``assignment``, keyed by layer name; ``progress`` shows a bar over the layer quantizations."""
    data_driven = needs_calibration(assignment)
    if data_driven and calibration is None:
        raise AutoqError(
            f"{', '.join(data_driven[:3])} need the calibration data the search used: pass calibration=[batches] "
            "(autoq.export), or export a built-in model by name, whose calibration set autoq rebuilds"
        )
    stats = CalibrationStats(model, layers, calibration or [], sequential=sequential)
    sweeps = [LayerChoice.from_name(name) for name in data_driven] if sequential else []
    # a sequential sweep quantizes every layer with its choice and keeps those that chose it; the rest are quantized once each
    rest = [name for name, choice in assignment.items() if not choice.weight.is_half and choice not in sweeps]
    out: dict[str, PointLayer] = {}
    with progress_bar(total=len(sweeps) * len(layers) + len(rest), desc="autoq export", unit="layer", disable=not progress,
                      dynamic_ncols=True) as bar:
        for choice in sweeps:
            out.update(_sweep(model, assignment, stats, choice, bar))
        for name in rest:
            choice = assignment[name]
            with layer_named(name):
                out[name] = PointLayer(*quantize_choice(get_module(model, name), choice, stats_for(stats, name, choice)))
            bar.update(1)
    return out


def _sweep(model: nn.Module, assignment: Assignment, stats: CalibrationStats, choice: LayerChoice, bar: tqdm) -> dict[str, PointLayer]:
    """One sequential sweep with ``choice`` on every layer (as the search's cache ran it); keep the layers that chose it."""
    kept: dict[str, PointLayer] = {}

    def quantize(name: str, layer_stats: LayerStats) -> torch.Tensor:
        module = get_module(model, name)
        own = sweep_choice(module, choice)
        with layer_named(name):
            layer = PointLayer(*quantize_choice(module, own, layer_stats))
        if assignment.get(name) == own:
            kept[name] = layer
        bar.update(1)
        return to_native(module, layer.tensor.dequantize())  # the weight-only view, as the cache's sweep installs it

    stats.sweep(quantize)
    return kept
