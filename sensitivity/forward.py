"""Forward-only metrics: how far the model output moves when one layer alone takes an option.

All options of a layer share each forward pass: the calibration rows are stacked
once per option, and a hook on the layer computes copy ``k`` of its output with
option ``k`` as a trial runs it (its weight, bias correction's bias, its activation
format on the input). One pass per layer (per group of ``options_per_pass`` options)
covers every option. The copies are found on whichever axis of the layer's input holds
them; where the model mixes stacked rows (a sequence-first model attends across them) or
skips a layer's ``forward``, each option takes its own pass.

* ``kl``: mean per-position KL divergence from the full-precision output
  (categorical over logits; for real outputs such as hidden states the KL between
  unit-variance Gaussians, half the squared error summed over features).
* ``sqnr``: noise-to-signal power ratio ``sum (out - ref)^2 / sum ref^2`` (linear,
  ``10**(-SQNR_dB/10)``, so higher means more sensitive and scores add up like noise).
* ``mse``: mean squared error of the output elements.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from autoq.choice import LayerChoice
from autoq.errors import AutoqError
from autoq.evaluate import call_model
from autoq.evaluate.cache import QuantizedLayer, quantize_input
from autoq.model import LayerInfo
from autoq.model.signature import mask_position
from autoq.sensitivity.inputs import (
    OUTPUT_KINDS,
    Inputs,
    batch_rows,
    concat_rows,
    divergence,
    finite,
    position_weights,
    readout,
    repeat_rows,
    resolve_output_kind,
    subsample,
    take_rows,
)
from autoq.sensitivity.registry import MetricOutput, register_metric
from autoq.sensitivity.table import Entry

# (out, ref, position weights, output kind) -> (numerator, denominator) summed over the batch
Reducer = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, str], tuple[float, float]]
FORWARD_DEFAULTS = {"n_samples": 64, "rows_per_batch": 16, "options_per_pass": 16}
KL_CHOICES = {"output_kind": OUTPUT_KINDS}  # kl's alone: mse and sqnr compare outputs as they are (it was taken, and ignored)


def _masked_sum(values: torch.Tensor, w: torch.Tensor) -> float:
    """``sum(values * w)`` over the positions of weight > 0 only: a padded position's NaN (a fully masked attention
    row gives one) is left out, not multiplied by 0 into a NaN score; a NaN where it counts stays NaN."""
    w = w.double()
    return float(torch.where(w > 0, values * w, 0.0).sum())


def _kl(out: torch.Tensor, ref: torch.Tensor, w: torch.Tensor, kind: str) -> tuple[float, float]:
    return _masked_sum(divergence(out, ref, kind), w), float(w.sum())


def _sq_error(out: torch.Tensor, ref: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    out, ref = out.double(), ref.double()
    diff = torch.where(out == ref, 0.0, (out - ref).pow(2))  # equal infinities (a masked position) differ by 0, not NaN
    return diff.sum(-1) if out.dim() > 1 else diff


def _mse(out: torch.Tensor, ref: torch.Tensor, w: torch.Tensor, kind: str) -> tuple[float, float]:
    features = out.shape[-1] if out.dim() > 1 else 1
    return _masked_sum(_sq_error(out, ref, w), w), float(w.sum()) * features


def _nsr(out: torch.Tensor, ref: torch.Tensor, w: torch.Tensor, kind: str) -> tuple[float, float]:
    # a masked position's infinite reference (a -inf logit) is no signal, as it is no noise in _sq_error: its square
    # made the signal infinite and every ratio 0; NaN stays NaN, and the score is refused as kl's and mse's are
    signal = torch.where(torch.isinf(ref), 0.0, ref.double().pow(2))
    signal = signal.sum(-1) if ref.dim() > 1 else signal
    return _masked_sum(_sq_error(out, ref, w), w), _masked_sum(signal, w)


class _NotStackable(Exception):
    """A layer's input shows no axis that holds the stacked copies: score its options one pass each."""


def _copy_axis(shape: tuple[int, ...], ref: tuple[int, ...] | None, k: int) -> int:
    """The axis of a layer's input along which the ``k`` copies lie: the one that is ``k`` times the unstacked input's
    (dim 0 when the layer sees the model's batch first; dim 1 in a sequence-first layer such as a default
    ``nn.TransformerEncoderLayer`` inside a batch-first model). The hook then checks that its chunks are the same
    input, as copies of one batch are (each layer is quantized alone: every layer before it is the model's own)."""
    if k == 1:
        return 0
    if ref is None or len(shape) != len(ref):
        raise _NotStackable
    axes = [i for i in range(len(shape)) if shape[i] == k * ref[i] and all(shape[j] == ref[j] for j in range(len(shape)) if j != i)]
    if len(axes) != 1:
        raise _NotStackable
    return axes[0]


def _option_hook(layers: Sequence[QuantizedLayer], weights: Sequence[torch.Tensor], ref_shape: Callable[[], tuple[int, ...] | None]):
    """Forward hook: the stacked input's copy ``k`` goes through the layer as option ``k`` makes it: its weight
    (``weights[k]``, dequantized once per pass by the caller, not at every batch: a cached layer holds codes), bias
    correction's bias, and its activation format on the input, as a search's trial runs it."""

    checked: list[bool] = []

    def hook(module: nn.Module, args: tuple, output: Any) -> torch.Tensor:
        axis = _copy_axis(tuple(args[0].shape), ref_shape(), len(layers))
        chunks = args[0].chunk(len(layers), dim=axis)
        if not checked:
            # the copies may not lie one after another along the axis (a sequence-major (T*B, F) view of the stacked
            # batch interleaves them per position): its chunks would mix options, silently. Checked at a pass's first
            # call only: a later call's copies may differ by right (a shared layer fed its own output, ALBERT's), so a
            # layer the model calls again on another view of the data is not caught
            if not all(_close(chunk, chunks[0]) for chunk in chunks[1:]):
                raise _NotStackable
            checked.append(True)
        outs = []
        for chunk, layer, weight in zip(chunks, layers, weights):
            with _option_weights(module, layer, weight):
                outs.append(module.forward(quantize_input(module, layer, chunk) if layer.activation is not None else chunk))
        return torch.cat(outs, dim=axis)

    return hook


@contextlib.contextmanager
def _option_weights(module: nn.Module, layer: QuantizedLayer, weight: torch.Tensor) -> Iterator[None]:
    """The module's weight (``weight``: the option's, dequantized already) and bias correction's bias as the option sets
    them, restored after."""
    bias = getattr(module, "bias", None)
    saved, saved_bias = module.weight.data, (bias.data if bias is not None else None)
    try:
        module.weight.data = weight
        if bias is not None and layer.bias is not None:
            bias.data = layer.bias
        yield
    finally:
        module.weight.data = saved
        if bias is not None:
            bias.data = saved_bias


def layer_scores(
    inputs: Inputs, layer: LayerInfo, module: nn.Module, options: Sequence[LayerChoice], batches: Sequence[Any], refs: Sequence[torch.Tensor],
    kind: str, reduce: Reducer, options_per_pass: int, shapes: Sequence[Mapping[str, tuple[int, ...]]] | None = None,
) -> list[float]:
    """Score of each option of one layer: ``sum numerators / sum denominators`` over ``batches``.

    ``shapes``: the layer inputs' shapes in the unstacked pass, per batch, by layer name. Options share a pass
    (stacked copies of each batch) where the layer's input shows the copies' axis; a layer the model calls
    without its ``forward`` (``nn.MultiheadAttention``'s ``out_proj``) or whose input hides the copies takes one
    pass per option, its weight set for the whole pass."""
    shapes = shapes if shapes is not None else [{} for _ in batches]
    fired = all(layer.name in s for s in shapes)
    per_pass = max(1, options_per_pass) if fired else 1
    try:
        return _scores(inputs, layer, module, options, batches, refs, kind, reduce, per_pass, shapes, fired)
    except _NotStackable:
        return _scores(inputs, layer, module, options, batches, refs, kind, reduce, 1, shapes, fired)


def _scores(inputs, layer, module, options, batches, refs, kind, reduce, per_pass, shapes, fired) -> list[float]:  # type: ignore[no-untyped-def]
    totals = [[0.0, 0.0] for _ in options]
    mask_at = mask_position(inputs.model)
    current: list[tuple[int, ...] | None] = [None]
    for start in range(0, len(options), per_pass):
        group = list(range(start, min(len(options), start + per_pass)))
        quantized = [inputs.quantized_layer(layer, options[i]) for i in group]
        weights = [q.weight for q in quantized]  # once per pass, for the hook and the unfired layer's forward alike
        handle = module.register_forward_hook(_option_hook(quantized, weights, lambda: current[0]))
        try:
            with torch.no_grad(), (contextlib.nullcontext() if fired else _option_weights(module, quantized[0], weights[0])):
                for batch, ref, shape in zip(batches, refs, shapes):
                    current[0] = shape.get(layer.name)
                    outs = readout(call_model(inputs.model, repeat_rows(batch, len(group)))).chunk(len(group), dim=0)
                    w = position_weights(batch, ref, mask_at)
                    for i, out in zip(group, outs):
                        num, den = reduce(out, ref, w, kind)
                        totals[i][0] += num
                        totals[i][1] += den
        finally:
            handle.remove()
    # no weight at all scores 0; a NaN denominator (sqnr's signal of a NaN reference) is NaN, refused by the caller
    return [num / den if den > 0 else 0.0 if den == 0 else math.nan for num, den in totals]


def _reference(inputs: Inputs, batches: Sequence[Any]) -> tuple[list[Any], list[dict[str, tuple[int, ...]]]]:
    """The unquantized outputs, and each layer's input shape per batch (absent where the model skips its forward)."""
    shapes: list[dict[str, tuple[int, ...]]] = []

    def recorder(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            shapes[-1].setdefault(name, tuple(args[0].shape))
        return hook

    handles = [m.register_forward_pre_hook(recorder(layer.name)) for layer, m in zip(inputs.layers, inputs.modules())]
    raw = []
    try:
        with torch.no_grad():
            for b in batches:
                shapes.append({})
                raw.append(call_model(inputs.model, b))
    finally:
        for h in handles:
            h.remove()
    return raw, shapes


def _rows_stay_apart(inputs: Inputs, batches: Sequence[Any], refs: Sequence[torch.Tensor]) -> bool:
    """Whether two batches stacked along dim 0 give each its own output: not so where dim 0 of the model's input is
    its sequence (a sequence-first transformer attends across the copies), and then options cannot share a pass."""
    first = batches[0]
    other = next((i for i in range(1, len(batches)) if _shapes(batches[i]) == _shapes(first)), None)
    try:
        joined = concat_rows([first, batches[other]]) if other is not None else None
    except AutoqError:  # a tensor broadcast over the rows differs between them ((1, T) position_ids of another window)
        joined = None
    if joined is not None:
        pair_refs = [refs[0], refs[other]]
    else:
        # no partner batch: the first one's two halves, each also run alone (two copies of one batch would not tell:
        # attention over a sequence repeated twice gives the sequence's own output)
        n = batch_rows(first)
        if n < 2:
            return False  # nothing to tell them apart with: one option per pass is always right
        pair = [take_rows(first, 0, n // 2), take_rows(first, n // 2, n)]
        joined = concat_rows(pair)
        with torch.no_grad():
            pair_refs = [readout(call_model(inputs.model, half)) for half in pair]
    with torch.no_grad():
        out = readout(call_model(inputs.model, joined))
    n = pair_refs[0].shape[0]
    if out.shape[0] != n + pair_refs[1].shape[0] or out.shape[1:] != pair_refs[0].shape[1:]:
        return False
    return all(_close(got, want) for got, want in ((out[:n], pair_refs[0]), (out[n:], pair_refs[1])))


def _shapes(batch: Any) -> Any:
    if isinstance(batch, torch.Tensor):
        return tuple(batch.shape)
    if isinstance(batch, Mapping):
        return {k: _shapes(v) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return [_shapes(v) for v in batch]
    return None


def _close(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Equal up to float noise: within 1e-3 of ``want``'s largest finite magnitude (an empty output is trivially equal).
    The same infinity, or NaN in both, is equal: a masked class's -inf logit (inf - inf) and a fully masked padded
    row's NaN read as 'differs between two unquantized passes', and the note blamed dropout."""
    if not want.numel():
        return True
    got, want = got.detach().double(), want.detach().double()
    same = (got == want) | (torch.isnan(got) & torch.isnan(want))
    diff = torch.where(same, 0.0, got - want).abs()
    scale = torch.where(torch.isfinite(want), want, 0.0).abs().max()
    return bool(diff.max() <= 1e-3 * scale + 1e-6)


def _forward_metric(name: str, reduce: Reducer) -> Callable[[Inputs, Mapping[str, Any], Any], MetricOutput]:
    def metric(inputs: Inputs, settings: Mapping[str, Any], progress: Any = None) -> MetricOutput:
        batches = [inputs.feed(b) for b in subsample(inputs.batches, settings["n_samples"], settings["rows_per_batch"])]
        raw, shapes = _reference(inputs, batches)
        kind = resolve_output_kind(settings.get("output_kind", "auto"), raw[0])
        refs = [readout(r).detach().clone() for r in raw]
        del raw
        with torch.no_grad():  # a second unquantized pass: a model that samples (dropout forced on) scores its own noise
            again = readout(call_model(inputs.model, batches[0]))
        notes = () if _close(again, refs[0]) else (
            f"the model's output on one batch differs between two unquantized passes (dropout or sampling left on in eval "
            f"mode?): the {name} scores hold that noise too, and rank the options by it; make the forward deterministic "
            "for a ranking to trust",)
        per_pass = settings["options_per_pass"] if _rows_stay_apart(inputs, batches, refs) else 1
        entries = []
        for layer, module, options in zip(inputs.layers, inputs.modules(), inputs.options):
            scores = layer_scores(inputs, layer, module, options, batches, refs, kind, reduce, per_pass, shapes)
            entries.extend(Entry(layer.name, c.name, finite(s, f"{name} score of {layer.name} at {c.name}")) for c, s in zip(options, scores))
            if progress is not None:
                progress.update(1)
        return MetricOutput(tuple(entries), notes=notes)

    metric.__name__ = f"{name}_metric"
    return metric


kl_metric = register_metric("kl", "KL divergence of the model output from full precision, one layer quantized at a time", choices=KL_CHOICES,
                            output_kind="auto", **FORWARD_DEFAULTS)(_forward_metric("kl", _kl))
sqnr_metric = register_metric("sqnr", "noise-to-signal power ratio of the model output (10^(-SQNR/10)), one layer at a time",
                              **FORWARD_DEFAULTS)(_forward_metric("sqnr", _nsr))
mse_metric = register_metric("mse", "mean squared error of the model output, one layer quantized at a time",
                             **FORWARD_DEFAULTS)(_forward_metric("mse", _mse))
