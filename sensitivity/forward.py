"""Forward-only metrics: how far the model output moves when one layer alone takes an option.

All options of a layer share each forward pass: the calibration rows are stacked
once per option, and a hook on the layer computes copy ``k`` of its output with
option ``k`` as a trial runs it (its weight, bias correction's bias, its activation
format on the input). One pass per layer (per group of ``options_per_pass`` options)
covers every option.

* ``kl``: mean per-position KL divergence from the full-precision output
  (categorical over logits; for real outputs such as hidden states the KL between
  unit-variance Gaussians, half the squared error summed over features).
* ``sqnr``: noise-to-signal power ratio ``sum (out - ref)^2 / sum ref^2`` (linear,
  ``10**(-SQNR_dB/10)``, so higher means more sensitive and scores add up like noise).
* ``mse``: mean squared error of the output elements.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from autoq.choice import LayerChoice
from autoq.evaluate import call_model
from autoq.evaluate.cache import QuantizedLayer, quantize_input
from autoq.model import LayerInfo
from autoq.sensitivity.inputs import (
    Inputs,
    divergence,
    finite,
    position_weights,
    readout,
    repeat_rows,
    resolve_output_kind,
    subsample,
)
from autoq.sensitivity.registry import MetricOutput, register_metric
from autoq.sensitivity.table import Entry

# (out, ref, position weights, output kind) -> (numerator, denominator) summed over the batch
Reducer = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, str], tuple[float, float]]
FORWARD_DEFAULTS = {"n_samples": 64, "rows_per_batch": 16, "options_per_pass": 16, "output_kind": "auto"}


def _kl(out: torch.Tensor, ref: torch.Tensor, w: torch.Tensor, kind: str) -> tuple[float, float]:
    return float((divergence(out, ref, kind) * w.double()).sum()), float(w.sum())


def _sq_error(out: torch.Tensor, ref: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    diff = (out.double() - ref.double()).pow(2)
    return diff.sum(-1) if out.dim() > 1 else diff


def _mse(out: torch.Tensor, ref: torch.Tensor, w: torch.Tensor, kind: str) -> tuple[float, float]:
    features = out.shape[-1] if out.dim() > 1 else 1
    return float((_sq_error(out, ref, w) * w.double()).sum()), float(w.sum()) * features


def _nsr(out: torch.Tensor, ref: torch.Tensor, w: torch.Tensor, kind: str) -> tuple[float, float]:
    signal = ref.double().pow(2)
    signal = signal.sum(-1) if ref.dim() > 1 else signal
    return float((_sq_error(out, ref, w) * w.double()).sum()), float((signal * w.double()).sum())


def _option_hook(layers: Sequence[QuantizedLayer]):
    """Forward hook: the stacked input's copy ``k`` goes through the layer as option ``k`` makes it: its weight,
    bias correction's bias, and its activation format on the input, as a search's trial runs it."""

    def hook(module: nn.Module, args: tuple, output: Any) -> torch.Tensor:
        chunks = args[0].chunk(len(layers), dim=0)
        bias = getattr(module, "bias", None)
        saved, saved_bias = module.weight.data, (bias.data if bias is not None else None)
        try:
            outs = []
            for chunk, layer in zip(chunks, layers):
                module.weight.data = layer.weight
                if bias is not None:
                    bias.data = layer.bias if layer.bias is not None else saved_bias
                outs.append(module.forward(quantize_input(module, layer, chunk) if layer.activation is not None else chunk))
        finally:
            module.weight.data = saved
            if bias is not None:
                bias.data = saved_bias
        return torch.cat(outs, dim=0)

    return hook


def layer_scores(
    inputs: Inputs, layer: LayerInfo, module: nn.Module, options: Sequence[LayerChoice], batches: Sequence[Any], refs: Sequence[torch.Tensor],
    kind: str, reduce: Reducer, options_per_pass: int,
) -> list[float]:
    """Score of each option of one layer: ``sum numerators / sum denominators`` over ``batches``."""
    totals = [[0.0, 0.0] for _ in options]
    for start in range(0, len(options), max(1, options_per_pass)):
        group = list(range(start, min(len(options), start + options_per_pass)))
        handle = module.register_forward_hook(_option_hook([inputs.quantized_layer(layer, options[i]) for i in group]))
        try:
            with torch.no_grad():
                for batch, ref in zip(batches, refs):
                    outs = readout(call_model(inputs.model, repeat_rows(batch, len(group)))).chunk(len(group), dim=0)
                    w = position_weights(batch, ref)
                    for i, out in zip(group, outs):
                        num, den = reduce(out, ref, w, kind)
                        totals[i][0] += num
                        totals[i][1] += den
        finally:
            handle.remove()
    return [num / den if den > 0 else 0.0 for num, den in totals]


def _forward_metric(name: str, reduce: Reducer) -> Callable[[Inputs, Mapping[str, Any], Any], MetricOutput]:
    def metric(inputs: Inputs, settings: Mapping[str, Any], progress: Any = None) -> MetricOutput:
        batches = [inputs.feed(b) for b in subsample(inputs.batches, settings["n_samples"], settings["rows_per_batch"])]
        with torch.no_grad():
            raw = [call_model(inputs.model, b) for b in batches]
        kind = resolve_output_kind(settings["output_kind"], raw[0])
        refs = [readout(r).detach().clone() for r in raw]
        del raw
        entries = []
        for layer, module, options in zip(inputs.layers, inputs.modules(), inputs.options):
            scores = layer_scores(inputs, layer, module, options, batches, refs, kind, reduce, settings["options_per_pass"])
            entries.extend(Entry(layer.name, c.name, finite(s, f"{name} score of {layer.name} at {c.name}")) for c, s in zip(options, scores))
            if progress is not None:
                progress.update(1)
        return MetricOutput(tuple(entries))

    metric.__name__ = f"{name}_metric"
    return metric


kl_metric = register_metric("kl", "KL divergence of the model output from full precision, one layer quantized at a time", **FORWARD_DEFAULTS)(_forward_metric("kl", _kl))
sqnr_metric = register_metric("sqnr", "noise-to-signal power ratio of the model output (10^(-SQNR/10)), one layer at a time", **FORWARD_DEFAULTS)(_forward_metric("sqnr", _nsr))
mse_metric = register_metric("mse", "mean squared error of the model output, one layer quantized at a time", **FORWARD_DEFAULTS)(_forward_metric("mse", _mse))
