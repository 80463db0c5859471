"""Built-in quality proxy: how close the quantized model's outputs stay to the original's.

Quality is the mean cosine similarity, per example, between the quantized and
the full-precision outputs (flattened) on held-out batches: 1.0 is identical,
higher is better. A model with one output value per example (a regressor, a
``num_labels=1`` head) would score a cosine of 1 for any change that keeps its
sign; its quality is the R^2 of the quantized outputs against the full-precision
ones instead (also 1.0 when identical).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from autoq.errors import AutoqError
from autoq.model.capture import token_mask
from autoq.model.signature import mask_position


def user_batches(calibration: Iterable[Any]) -> list[Any]:
    """The batches of a ``calibration`` argument, read once (a generator, a DataLoader), or an AutoqError saying what a
    sequence of batches is: one tensor's rows would each have been a batch."""
    if isinstance(calibration, (torch.Tensor, np.ndarray)):  # an array's rows were batches, and the model refused row 0
        array = isinstance(calibration, np.ndarray)
        raise AutoqError(f"calibration must be a sequence of batches (a list of tensors, a DataLoader), not one "
                         f"{'numpy array' if array else 'tensor'}, whose {len(calibration)} rows would each be a batch; split it, e.g. "
                         f"list({'torch.from_numpy(x)' if array else 'x'}.split(32))")
    if isinstance(calibration, (str, bytes, Mapping)) or not isinstance(calibration, Iterable):
        one = "; one dict is one batch: put it in a list" if isinstance(calibration, Mapping) else ""
        raise AutoqError(f"calibration must be a sequence of batches (a list of tensors or of dicts of tensors, a DataLoader), got "
                         f"{type(calibration).__name__} {str(calibration)[:40]!r}{one}")
    return list(calibration)


def call_model(model: nn.Module, batch: Any) -> Any:
    """Run ``model`` on one batch: a tensor, a tuple of positional inputs, or a mapping of keyword inputs."""
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


def call_on_user_batch(model: nn.Module, batch: Any, where: str, passthrough: tuple[type[BaseException], ...] = ()) -> Any:
    """:func:`call_model` on the user's own data: an error the model raises becomes an ``AutoqError`` naming the batch
    (``where``), what it raised and what a batch must be; ``AutoqError`` and the ``passthrough`` types pass unchanged."""
    try:
        return call_model(model, batch)
    except (AutoqError, *passthrough):
        raise
    except Exception as exc:
        pairs = (" (a DataLoader of (inputs, labels) pairs: pass the inputs alone, e.g. [x for x, _ in loader])"
                 if isinstance(batch, (tuple, list)) and len(batch) == 2 else "")
        raise AutoqError(f"the model fails on {where} ({type(exc).__name__}: {exc}); each batch must be what the "
                         f"model accepts as model(batch), model(*batch) for a tuple or model(**batch) for a dict{pairs}") from exc


def primary_output(output: Any) -> torch.Tensor:
    """The tensor that stands for a model's output: ``logits``, ``last_hidden_state``, or the first tensor."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        for key in ("logits", "last_hidden_state"):
            if key in output and isinstance(output[key], torch.Tensor):
                return output[key]
        values = list(output.values())
    elif isinstance(output, (tuple, list)):
        values = list(output)
    else:
        raise AutoqError(f"cannot find a tensor in the model output of type {type(output).__name__}")
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    floating = [v for v in tensors if v.is_floating_point() or v.is_complex()]
    # an integer output (class ids, lengths) says little of a quantization's effect, nor does a loss before the logits
    # (a Hugging Face tuple's first value when the batch holds labels: its R^2 of two numbers was scored); a model whose
    # output is one value per batch (a batch of one example) has only such tensors, and compares them
    per_example = [v for v in floating if v.dim() > 0]
    if per_example or floating:
        return (per_example or floating)[0]
    if tensors:
        raise _not_comparable(tensors[0].dtype)
    raise AutoqError("the model output holds no tensor to compare")


def _not_comparable(dtype: torch.dtype) -> AutoqError:
    """The refusal of an output of ``dtype`` tensors alone (class ids, lengths): no cosine of them says anything."""
    return AutoqError(f"the model output holds only {dtype} tensors, no floating-point one to compare; pass evaluate= "
                      "(a quality metric), or return the logits")


def batch_tensors(batch: Any) -> list[torch.Tensor]:
    """Every tensor in a batch, however nested in dicts, lists and tuples (``{"xs": [t1, t2]}``), in order."""
    if isinstance(batch, torch.Tensor):
        return [batch]
    items = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (tuple, list)) else []
    return [t for item in items for t in batch_tensors(item)]


def check_finite_batches(batches: Sequence[Any], what: str = "calibration") -> None:
    """Refuse NaN or Inf in floating-point inputs, naming the batch (one level deep was checked: a dict holding a list
    of tensors went through, and every data-driven trial failed on it)."""
    for i, batch in enumerate(batches):
        for t in batch_tensors(batch):
            if t.is_meta:
                raise AutoqError(f"{what} batch {i} is on the 'meta' device, which holds shapes but no values; pass real tensors")
            if t.is_floating_point() and not torch.isfinite(t).all():
                bad = int((~torch.isfinite(t)).sum())
                raise AutoqError(f"{what} batch {i} contains NaN or Inf values ({bad} of {t.numel()}); drop or clean that batch "
                                 "(torch.nan_to_num): a range calibrated or a quality measured on it is NaN")


_CHUNK_VALUES = 1 << 21  # values per row chunk of the cosine: 16 MB in float64


def _cosine_per_example(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine per row; 1 where both rows are all zeros (unchanged: a ReLU output often is), which cosine makes 0.
    In float64, a few rows at a time: the whole batch in float64 (and cosine's own temporaries) took ten times its
    output's memory, 600 MB for a batch of a language model's logits."""
    a, b = (t.reshape(t.shape[0], math.prod(t.shape[1:])) for t in (a, b))  # -1 is ambiguous for a batch without rows
    step = max(1, _CHUNK_VALUES // max(1, a.shape[1]))
    parts = []
    for start in range(0, a.shape[0], step):
        x, y = a[start:start + step].double(), b[start:start + step].double()
        cos = torch.nn.functional.cosine_similarity(x, y, dim=1, eps=1e-12)
        both_zero = (x == 0).all(dim=1) & (y == 0).all(dim=1)
        parts.append(torch.where(both_zero, torch.ones_like(cos), cos))
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def mean_pooled(output: Any, batch: Any) -> torch.Tensor:
    """Sentence embedding: the mean of the token states under the attention mask."""
    hidden = primary_output(output)
    mask = batch["attention_mask"].unsqueeze(-1).to(device=hidden.device, dtype=hidden.dtype)
    # where, not a product: a NaN a model gives at a padding position (NaN * 0 is NaN) must drop out, as the position does
    return torch.where(mask.bool(), hidden, 0).sum(1) / mask.sum(1).clamp_min(1.0)


def unpadded_output(output: Any, batch: Any, position: int | None = None) -> torch.Tensor:
    """The primary output with the positions a batch's ``attention_mask`` marks as padding set to zero, in the
    quantized and the reference output alike: they drop out of the cosine, which then compares real tokens only (as
    the sensitivity metrics and the built-in MiniLM's mean pooling do). Without a ``(batch, tokens)`` mask that
    matches the output's first two dimensions (of three or more: a pooled ``(batch, features)`` output is not per
    token, whatever its width), the output as it is. ``position``: where a tuple batch holds the mask
    (`autoq.model.signature.mask_position`)."""
    out = primary_output(output)
    mask = token_mask(batch, position)
    if mask is not None and out.dim() >= 3 and tuple(out.shape[:2]) == tuple(mask.shape):  # where: NaN at padding drops out too
        out = torch.where(mask.reshape(*mask.shape, *([1] * (out.dim() - 2))).to(out.device).bool(), out, 0)
    return out


class OutputFidelity:
    """``evaluate(model) -> mean cosine`` of outputs against reference outputs computed once.

    ``readout(output, batch)`` picks what is compared; the default is the primary
    output tensor (``logits``, ``last_hidden_state`` or the first tensor) at the
    positions the batch's ``attention_mask`` keeps (`unpadded_output`).
    """

    def __init__(
        self,
        model: nn.Module,
        batches: Sequence[Any],
        readout: Callable[[Any, Any], torch.Tensor] | None = None,
    ) -> None:
        if not batches:
            raise AutoqError("the output-fidelity proxy needs at least one held-out batch")
        self.batches = list(batches)
        # a tuple batch's mask is read where the model's forward takes it (a DataLoader of [ids, mask])
        self.readout = readout or functools.partial(unpadded_output, position=mask_position(model))
        with torch.inference_mode():
            self.reference = [self.readout(call_on_user_batch(model, b, f"held-out batch {i} of {len(self.batches)}"), b).detach().clone()
                              for i, b in enumerate(self.batches)]
        integer = next((r for r in self.reference if not (r.is_floating_point() or r.is_complex())), None)
        if integer is not None:  # class ids (a forward ending in argmax): their cosine was scored as the quality
            raise _not_comparable(integer.dtype)
        _check_finite_outputs(self.reference, "the unquantized model", lambda: _where_non_finite(model))
        if all(r.numel() == 0 for r in self.reference):  # R^2 of nothing read 1.0: the cheapest assignment scored perfect
            raise AutoqError(f"the {len(self.batches)} held-out calibration batches hold no examples (the model's outputs on them "
                             "are empty), so output fidelity has nothing to compare; pass batches with rows (the last "
                             "quarter of the calibration batches is held out by default: holdout= sets the share), or evaluate=")

    @property
    def scalar(self) -> bool:
        """One output value per example: compared by R^2 over the held-out examples, not by cosine."""
        return all(r.reshape(r.shape[0], -1).shape[1] == 1 for r in self.reference if r.dim() and r.shape[0])

    @property
    def description(self) -> str:
        what = ("R^2 of the outputs against the unquantized model's (one value per example)" if self.scalar
                else "mean cosine similarity of outputs to the unquantized model")
        return f"{what} on {len(self.batches)} held-out calibration batches"

    def __call__(self, model: nn.Module) -> float:
        if self.scalar:  # R^2 pools every example: the outputs are one value each
            with torch.inference_mode():
                outs = [self.readout(call_model(model, batch), batch) for batch in self.batches]
            _check_finite_outputs(outs, "the quantized model", _breaks)
            return _r_squared(outs, self.reference)
        total, count = 0.0, 0
        with torch.inference_mode():
            for i, (batch, ref) in enumerate(zip(self.batches, self.reference)):
                # one batch's output at a time, beside the references: holding them all (a language model's logits)
                # doubled the evaluation's memory
                out = self.readout(call_model(model, batch), batch)
                _check_finite_output(out, i, len(self.batches), "the quantized model", _breaks)
                cos = _cosine_per_example(out, ref)
                total, count = total + float(cos.sum()), count + cos.numel()
                del out, cos
        return total / count


def _breaks() -> str:
    return "this assignment breaks the model"


def _where_non_finite(model: nn.Module) -> str:
    """The first parameter or buffer of ``model`` holding NaN or Inf, said as a fix; else where else to look."""
    for name, t in (*model.named_parameters(), *model.named_buffers()):
        if t.is_floating_point() and not torch.isfinite(t).all():
            return f"its {name!r} holds NaN or Inf; fix the checkpoint first"
    return "its weights are finite: check that batch's inputs, or an overflow in the model's dtype"


def _check_finite_outputs(outs: Sequence[torch.Tensor], whose: str, hint: Callable[[], str]) -> None:
    """Refuse NaN or Inf in compared outputs, naming the first held-out batch that has them: a quality of NaN
    alone does not say where to look. ``hint()``, what to check, is worked out only then."""
    for i, out in enumerate(outs):
        _check_finite_output(out, i, len(outs), whose, hint)


def _check_finite_output(out: torch.Tensor, i: int, n: int, whose: str, hint: Callable[[], str]) -> None:
    """`_check_finite_outputs` for held-out batch ``i`` of ``n``."""
    if out.is_floating_point() and not torch.isfinite(out).all():
        raise AutoqError(f"{whose}'s output on held-out batch {i} of {n} holds NaN or Inf ({hint()})")


def _r_squared(outs: Sequence[torch.Tensor], refs: Sequence[torch.Tensor]) -> float:
    """``1 - SSE / SST`` of ``outs`` as predictions of ``refs`` (all examples pooled); against ``sum(ref^2)`` when every
    reference is the same value, and 0 for any change of outputs that are all zero."""
    out = torch.cat([o.reshape(-1) for o in outs]).double()
    ref = torch.cat([r.reshape(-1) for r in refs]).double()
    sse = float((out - ref).pow(2).sum())
    sst = float((ref - ref.mean()).pow(2).sum()) or float(ref.pow(2).sum())
    return 1.0 - sse / sst if sst > 0 else float(sse == 0)
