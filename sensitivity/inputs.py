"""What every sensitivity metric works on: the model, a calibration subset, the layers and their options.

Also the shared pieces: how a model output is compared with the full-precision
one (categorical KL for logits, the KL of unit-variance Gaussians, i.e. half the
squared error, for real-valued outputs such as hidden states), which output
positions count (an ``attention_mask`` drops padding). The hashes that key the on-disk cache are in
``autoq.fingerprints``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from autoq.choice import LayerChoice
from autoq.errors import AutoqError
from autoq.evaluate import QuantCache, call_model, primary_output
from autoq.evaluate.cache import QuantizedLayer, layer_named, needs_stats, quantize_layer_full, stats_for
from autoq.model import LayerInfo, get_module, layout_2d, weight_2d
from autoq.model.capture import CalibrationStats, token_mask
from autoq.model.signature import mask_position

OUTPUT_KINDS = ("auto", "logits", "real")


@dataclass(frozen=True)
class Inputs:
    """A sensitivity problem: ``batches`` are the calibration batches a metric may use."""

    model: nn.Module
    batches: tuple[Any, ...]
    layers: tuple[LayerInfo, ...]
    options: tuple[tuple[LayerChoice, ...], ...]
    loss: Callable[[Any, Any], torch.Tensor] | None = None  # task loss(output, batch); batches are then (inputs, labels)
    weights: QuantCache | None = None  # share quantized weights with other metrics or a search; None: quantize on the fly
    stats: CalibrationStats | None = None  # without weights: data-driven methods' (GPTQ, AWQ, ...) layer statistics

    def modules(self) -> list[nn.Module]:
        return [get_module(self.model, layer.name) for layer in self.layers]

    def quantized_layer(self, layer: LayerInfo, choice: LayerChoice) -> QuantizedLayer:
        """Everything ``choice`` puts into the layer (weight, bias correction's bias, SmoothQuant's input scale, the
        activation format), as a search's trial gets it; from the shared cache when there is one."""
        if self.weights is not None:
            return self.weights.layer(layer.name, choice)
        with layer_named(layer.name):
            return quantize_layer_full(get_module(self.model, layer.name), choice, stats_for(self.stats, layer.name, choice))

    def quantized(self, layer: LayerInfo, choice: LayerChoice) -> torch.Tensor:
        """The layer's weight under ``choice`` (native layout) as a weight alone gives its output: SmoothQuant's
        input scale folded back in; what the gradient metrics score, which see weights only."""
        return self.quantized_layer(layer, choice).weight_only

    def with_stats(self) -> Inputs:
        """These inputs, able to quantize with data-driven methods: the layers' statistics captured now, in one pass
        over the batches, when an option needs them (as a search's do, before any metric hooks the model)."""
        if self.weights is not None or self.stats is not None:
            return self
        if not any(needs_stats(c) for opts in self.options for c in opts):
            return self
        stats = CalibrationStats(self.model, self.layers, [self.feed(b) for b in self.batches])
        stats.capture()  # (not get(first layer): a first layer that takes no data-driven method has no statistics)
        return replace(self, stats=stats)

    def perturbations(self, layer: LayerInfo, module: nn.Module, options: Sequence[LayerChoice]) -> Iterator[tuple[LayerChoice, torch.Tensor]]:
        """``(choice, Q(W) - W)`` in the ``(out, in)`` layout, one option at a time."""
        w = weight_2d(module)
        for choice in options:
            yield choice, layout_2d(module, self.quantized(layer, choice)).float() - w

    def feed(self, batch: Any) -> Any:
        """What the model is called with: the inputs of an ``(inputs, labels)`` batch when a task loss is set."""
        return batch[0] if self.loss is not None and isinstance(batch, (tuple, list)) and len(batch) == 2 else batch


def take_rows(batch: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of a batch (a tensor, a tuple/list of tensors, or a mapping of tensors). A tensor that is
    not one row per example (a ``(1, T)`` ``position_ids`` that broadcasts over the batch) is kept whole."""
    rows = batch_rows(batch)
    return _per_row(batch, rows, lambda t: t[start:stop])


def batch_rows(batch: Any) -> int:
    """Rows (examples) of a batch: the first dimension of its first tensor, however nested, passing over tensors of
    one row that broadcast over the others (a ``(1, T)`` ``position_ids`` before the ``input_ids``)."""
    from autoq.evaluate.fidelity import batch_tensors

    tensors = [t for t in batch_tensors(batch) if t.dim() > 0]
    if tensors:
        return int(next((t.shape[0] for t in tensors if t.shape[0] != 1), 1))
    raise AutoqError("a calibration batch holds no tensor with a batch dimension; batches must be tensors, tuples of tensors or "
                     "dicts of tensors, each with the examples along dimension 0")


def _per_row(batch: Any, rows: int, edit: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``batch`` with ``edit`` applied to each tensor holding ``rows`` rows along dimension 0; the rest as they are."""
    return map_tensors(batch, lambda t: edit(t) if t.dim() > 0 and t.shape[0] == rows else t)


def map_tensors(batch: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``batch`` with ``fn`` applied to each of its tensors, however nested in mappings, tuples and lists (a mapping
    comes back a dict, a sequence its own type); a container whose tensors ``fn`` all returned as they were is the
    container itself."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, Mapping):
        items = {key: map_tensors(value, fn) for key, value in batch.items()}
        return batch if all(items[key] is value for key, value in batch.items()) else items
    if isinstance(batch, (tuple, list)):
        listed = [map_tensors(value, fn) for value in batch]
        return batch if all(a is b for a, b in zip(listed, batch)) else same_sequence(batch, listed)
    return batch


def same_sequence(batch: tuple | list, items: list[Any]) -> tuple | list:
    """``items`` in ``batch``'s own sequence type: a namedtuple takes them as arguments (given one generator, its first
    field held the generator, and every metric refused the batch as holding no tensor)."""
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*items)
    try:
        return type(batch)(items)
    except TypeError:  # a sequence type that takes no iterable: a plain one of its kind, which model(*batch) reads alike
        return tuple(items) if isinstance(batch, tuple) else list(items)


def repeat_rows(batch: Any, times: int) -> Any:
    """The batch stacked ``times`` along dimension 0 (copy ``k`` is rows ``k*n:(k+1)*n``); a tensor that broadcasts
    over the rows is kept whole."""
    rows = batch_rows(batch)
    return _per_row(batch, rows, lambda t: t.repeat(times, *([1] * (t.dim() - 1))) if times > 1 else t)


def concat_rows(batches: Sequence[Any]) -> Any:
    """Batches of one structure joined along dimension 0: their tensors of one row per example; a tensor that
    broadcasts over the rows (not one row per example) must be the same in each, and is kept once."""
    return _joined(list(batches), [batch_rows(b) for b in batches])


def _joined(parts: list[Any], rows: list[int]) -> Any:
    first = parts[0]
    if isinstance(first, torch.Tensor) and len(parts) > 1:
        per_row = [p.dim() > 0 and p.shape[0] == n for p, n in zip(parts, rows)]
        if all(per_row):
            return torch.cat(parts)
        # a (1, T) tensor of a one-row part may broadcast like the others' (1, T): kept once where all are the same
        may_broadcast = all(not r or n == 1 for r, n in zip(per_row, rows))
        if may_broadcast and all(p.shape == first.shape and torch.equal(p, first) for p in parts):
            return first
        raise AutoqError(f"calibration batches of {rows} rows hold a tensor of shapes {[tuple(p.shape) for p in parts]}, one row "
                         "per example in some and not in others, or broadcast with different values: batches a metric joins need "
                         "each tensor either with the examples along dimension 0 or the same in every batch")
    if isinstance(first, Mapping):
        return {k: _joined([p[k] for p in parts], rows) for k in first}
    if isinstance(first, (tuple, list)):
        return same_sequence(first, [_joined([p[i] for p in parts], rows) for i in range(len(first))])
    return first


def subsample(batches: Sequence[Any], n_samples: int | None, rows_per_batch: int | None = None) -> tuple[Any, ...]:
    """``n_samples`` rows spread evenly over all batches (sorted-by-length batches stay representative), re-cut into
    batches of at most ``rows_per_batch`` rows. ``None`` keeps everything. Each batch gives its share of the rows,
    rounded so that the shares add up to ``n_samples``: fewer rows asked for than there are batches take one row from
    every few batches (a row from each of 512 one-row batches was 512 rows where 32 were asked for)."""
    batches = list(batches)
    if not batches:
        raise AutoqError("sensitivity needs at least one calibration batch")
    _check_batched(batches[0])
    sizes = [batch_rows(b) for b in batches]
    total = sum(sizes)
    if total == 0:
        raise AutoqError(f"the {len(batches)} calibration batch(es) hold no rows (each is empty along its first dimension); "
                         "pass batches with examples in them")
    want = total if n_samples is None else max(1, min(n_samples, total))
    picked, seen = [], 0
    for b, size in zip(batches, sizes):
        k = math.floor(want * (seen + size) / total + 0.5) - math.floor(want * seen / total + 0.5)  # this batch's share
        seen += size
        if k > 0:
            picked.append(take_rows(b, 0, min(k, size)))
    if rows_per_batch is None:
        return tuple(picked)
    out = []
    for b in picked:
        n = batch_rows(b)
        out.extend(take_rows(b, i, min(n, i + rows_per_batch)) for i in range(0, n, rows_per_batch))
    return tuple(out)


def _check_batched(batch: Any) -> None:
    """Refuse a batch whose tensors are all 1-D: one example without its batch dimension (``nn.Linear`` takes a
    ``(in,)`` input), whose features the metrics cut into rows, giving the model feature slices it cannot multiply."""
    from autoq.evaluate.fidelity import batch_tensors

    tensors = [t for t in batch_tensors(batch) if t.dim() > 0]
    if tensors and all(t.dim() == 1 for t in tensors):
        raise AutoqError(f"a calibration batch holds only 1-D tensors (shapes {[tuple(t.shape) for t in tensors][:3]}); autoq reads "
                         "dimension 0 as the examples, so this is read as that many one-value examples: give a single example "
                         "its batch dimension (x.unsqueeze(0)), or stack examples into batches")


def resolve_output_kind(kind: str, output: Any) -> str:
    """``logits`` for a bare tensor, a tuple's or list's tensor that `readout` takes (a classifier returning
    ``(logits, aux)``, or a Hugging Face LM with ``return_dict=False``: it was scored as real-valued, 8,000x the KL of the
    same model returning the bare tensor) or a ``logits`` field, with two or more columns; else ``real`` (a named
    field other than logits, such as ``last_hidden_state``, or a regressor's one column, as a Hugging Face
    ``num_labels=1`` head gives: a softmax over one class would make every score 0); explicit kinds pass through.
    A tensor of 4 or more dimensions is ``real`` too: an image-shaped output (a segmenter's ``(B, classes, H, W)``
    logits, Segformer's among them, or an autoencoder's image) has its classes, if any, first, and a softmax over its
    last axis compared pixel columns."""
    if kind not in OUTPUT_KINDS:
        raise AutoqError(f"unknown output kind {kind!r}; choose one of {', '.join(OUTPUT_KINDS)}")
    if kind != "auto":
        return kind
    if isinstance(output, Mapping):  # a dict or a Hugging Face ModelOutput: its logits field, if it has one
        output = output.get("logits")
    elif isinstance(output, (tuple, list)):  # unnamed, as a bare tensor
        output = readout(output)
    if isinstance(output, torch.Tensor):
        return "logits" if 1 < output.dim() < 4 and output.shape[-1] > 1 else "real"
    return "real"


def position_weights(batch: Any, out: torch.Tensor, position: int | None = None) -> torch.Tensor:
    """Weight of each output position (all dims but the last): 1, or the ``attention_mask`` where it fits; float64, as
    every sum of them is: in an fp16 model's dtype 65,505 positions or more (16 rows of 4,096 tokens) counted inf, and
    kl, mse and hessian scored every option 0, unsaid. ``position``: where a tuple batch holds the mask
    (`autoq.model.signature.mask_position` of the model it feeds)."""
    shape = out.shape[:-1] if out.dim() > 1 else out.shape
    mask = token_mask(batch, position)
    if mask is not None and tuple(mask.shape) == tuple(shape):
        return mask.to(device=out.device, dtype=torch.float64)
    return torch.ones(shape, dtype=torch.float64, device=out.device)


def padded_nan_cause(model: nn.Module, batches: Sequence[Any], feed: Callable[[Any], Any] = lambda batch: batch) -> str | None:
    """Why a gradient came out NaN, where the full-precision output shows it: NaN at padded positions, as a query row
    whose keys are all masked with -inf gives. A loss that leaves the position out is fine (the position's NaN is not
    differentiated), unless the NaN was made inside the model: then its backward is NaN there (0 * NaN) and reaches
    every layer. ``None`` when no batch shows one, or the forward fails (a diagnosis must not hide the error it explains)."""
    for i, batch in enumerate(batches):
        try:
            fed = feed(batch)
            with torch.no_grad():
                out = readout(call_model(model, fed))
            weights = position_weights(fed, out, mask_position(model))
            nan = torch.isnan(out)
            nan = nan.reshape(*weights.shape, -1).any(-1) if out.dim() > weights.dim() else nan
            padded = int((nan & (weights == 0)).sum())
        except Exception:  # noqa: BLE001 (any failure: no diagnosis)
            return None
        if padded:
            return (f"the model's full-precision output is NaN at {padded} padded position(s) (attention_mask 0) of "
                    f"calibration batch {i} of {len(batches)}, as a query row whose keys are all masked with -inf gives, "
                    "and the backward pass carries that NaN into the weights' gradients. Mask with torch.finfo(dtype).min "
                    "instead of -inf (as Hugging Face models do), or use a forward metric (kl, sqnr, mse), which leave "
                    "padded positions out")
    return None


def divergence(out: torch.Tensor, ref: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-position divergence of ``out`` from the full-precision ``ref``.

    logits: KL(softmax(ref) || softmax(out)) over the last dimension.
    real: KL between unit-variance Gaussians centred on each, ``0.5 * sum((out - ref)^2)``.
    """
    if out.dim() == 1:
        out, ref = out.unsqueeze(-1), ref.unsqueeze(-1)
    if kind == "logits":
        log_p = torch.log_softmax(ref.double(), -1)
        log_q = torch.log_softmax(out.double(), -1)
        # a class the reference masks out (a -inf logit) has p = 0 and adds nothing, not 0 * (-inf - -inf) = NaN
        return torch.where(log_p.isneginf(), 0.0, log_p.exp() * (log_p - log_q)).sum(-1)
    return 0.5 * (out.double() - ref.double()).pow(2).sum(-1)


def readout(output: Any) -> torch.Tensor:
    return primary_output(output)


def finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise AutoqError(f"{what} is {value}; check the calibration data and the model")
    return value
