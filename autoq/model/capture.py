"""Capture each layer's calibration statistics once, for every PTQ method and metric to share.

Per layer, over the inputs it sees on the calibration batches, as rows of the
``(out, in)`` weight view (a convolution's input is unfolded, im2col-style):

- ``xtx``: ``X^T X`` accumulated in float64 (GPTQ's Hessian is ``2 X^T X / n``;
  the layer output error of any ``W_hat`` is ``tr((W_hat - W) X^T X (W_hat - W)^T)``);
- ``absmax``, ``absmean``, ``mean``, ``min``, ``max`` per input channel (AWQ,
  SmoothQuant, bias correction, static activation ranges);
- ``n_tokens`` (rows seen) and a bounded, evenly thinned ``samples`` of input rows
  for methods that optimise an output loss on real rows.

A token layer's rows at the positions a batch's ``attention_mask`` marks as padding are left out
(:func:`token_mask`): their outputs are never scored (the quality metrics drop them too), and they
were 41% of the built-in MiniLM's calibration rows, pulling GPTQ's Hessian, AWQ's magnitudes and
bias correction's means towards inputs the deployed model's answers do not depend on.

Sequential capture (GPTQ-style) lets layer ``i`` see the inputs produced by layers
``0..i-1`` already quantized: one calibration pass per layer (each stopped as
soon as the layer has its input; whole for a layer the model calls more than once),
instead of one pass for all layers.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from autoq.errors import AutoqError
from autoq.model.layers import NOT_REACHED, LayerInfo, channels_first, get_module, rows_unsupported, zero_padding
from autoq.model.modes import eval_mode
from autoq.model.signature import mask_position

DEFAULT_MAX_SAMPLES = 512


@dataclass(frozen=True)
class LossFactor:
    """``d^T H d ~ ||R d||^2 + tail * ||d||^2`` for weight-error rows ``d`` (``H = X^T X / n``): the layer output
    error AWQ and AdaRound minimise, at ``len(rows)`` products a row instead of ``in_features``."""

    rows: torch.Tensor  # float32 (r, in): the factor R
    tail: float  # mean eigenvalue of H outside R's span; 0 where R is exact

    def error(self, d: torch.Tensor) -> float:
        """``sum_i d_i^T H d_i`` over the rows of ``d`` (out, in)."""
        return float((d @ self.rows.t()).pow(2).sum()) + (self.tail * float(d.pow(2).sum()) if self.tail else 0.0)

    def row_errors(self, d: torch.Tensor) -> torch.Tensor:
        """``d_i^T H d_i`` of each row of ``d`` (out, in): the output error of each output channel, which add up to :meth:`error`."""
        rows = (d @ self.rows.t()).pow(2).sum(dim=1)
        return rows + self.tail * d.pow(2).sum(dim=1) if self.tail else rows

    def half_grad(self, d: torch.Tensor) -> torch.Tensor:
        """``H d`` row by row: half the gradient of :meth:`error` in ``d``."""
        g = (d @ self.rows.t()) @ self.rows
        return g + self.tail * d if self.tail else g


@dataclass(frozen=True)
class LayerStats:
    """Calibration statistics of one layer's input (rows = tokens / im2col patches)."""

    xtx: torch.Tensor  # float64 (in, in)
    absmax: torch.Tensor  # float32 (in,)
    absmean: torch.Tensor  # float32 (in,)
    mean: torch.Tensor  # float32 (in,)
    min: torch.Tensor  # float32 (in,)
    max: torch.Tensor  # float32 (in,)
    n_tokens: int
    samples: torch.Tensor  # float32 (<= max_samples, in)

    @property
    def in_features(self) -> int:
        return int(self.xtx.shape[0])

    def hessian(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """``X^T X / n``: the per-row layer loss Hessian up to a factor 2; a new tensor each call (GPTQ changes it in place)."""
        return (self.xtx / max(self.n_tokens, 1)).to(dtype)

    def output_error(self, w: torch.Tensor, w_hat: torch.Tensor) -> float:
        """Mean squared output error per token, ``||X (W_hat - W)^T||^2 / n``, from ``xtx`` exactly."""
        d = (w_hat - w).double()
        return float(((d @ self.hessian()) * d).sum())

    def loss_factor(self, max_rows: int) -> LossFactor:
        """``R`` and ``tail`` with ``||R d||^2 + tail * ||d||^2 ~ d^T (X^T X / n) d`` for any weight-error row ``d``.

        Exact (the Cholesky factor) when the layer has at most ``max_rows`` inputs;
        otherwise the top ``max_rows`` eigen-directions (randomized range finder) and the mean
        remaining eigenvalue as an isotropic ``tail``, the rows weighted by their eigenvalue less
        the tail so that it counts outside their span only (on average over directions ``d``, the
        error is then exact): output losses cost ``max_rows`` rows per step, not ``in_features``.
        """
        h = self.hessian(torch.float64)
        n_in = h.shape[0]
        if n_in <= max_rows:
            h = h.clone()
            h.diagonal().add_(1e-10 * float(h.diagonal().mean()) + 1e-12)
            return LossFactor(torch.linalg.cholesky(h).t().float().contiguous(), 0.0)  # H = L L^T: d^T H d = ||L^T d||^2
        u, top = _top_eigen(h.float(), max_rows, niter=4)
        top = top.clamp_min(0.0)
        tail = max(0.0, (float(h.diagonal().sum()) - float(top.sum())) / (n_in - max_rows))
        # the tail stands for the spectrum outside the sketch's span only: inside it, the top eigenvalues less the tail
        # (an isotropic tail over all of d counted the sketched directions twice, 13% over on a flat spectrum)
        return LossFactor((u * (top - tail).clamp_min(0.0).sqrt()).t().contiguous(), tail)


def _top_eigen(h: torch.Tensor, q: int, niter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The top ``q`` eigenvectors and eigenvalues of the symmetric PSD ``h`` by a randomized range finder (Halko et al.
    2009, as ``torch.svd_lowrank``, whose numbers it gives), on a fixed sketch drawn from a generator of its own: the
    same statistics give the same factor (and an export's re-quantization the search's codes). ``svd_lowrank`` draws
    from the global RNG, seeded and put back around it: shared by threads, two searches at once (an outer study's
    n_jobs) drew each other's sketches."""
    gen = torch.Generator(h.device).manual_seed(0)
    q_basis = torch.linalg.qr(h @ torch.randn(h.shape[-1], q, dtype=h.dtype, device=h.device, generator=gen)).Q
    for _ in range(niter):
        q_basis = torch.linalg.qr(h.mH @ q_basis).Q
        q_basis = torch.linalg.qr(h @ q_basis).Q
    u, top, _ = torch.linalg.svd(q_basis.mH @ h, full_matrices=False)  # symmetric PSD: SVD = eigen-decomposition
    return q_basis @ u, top


def token_mask(batch: Any, position: int | None = None) -> torch.Tensor | None:
    """A batch's ``attention_mask`` (a 2-D ``(batch, tokens)`` tensor, 0 at padding): a mapping batch's, or a tuple
    batch's at ``position`` (`autoq.model.signature.mask_position` of the model it feeds: a positional mask went
    unseen, and padding counted in every statistic, score and quality); else ``None``."""
    if isinstance(batch, Mapping):
        mask = batch.get("attention_mask")
    else:
        mask = batch[position] if isinstance(batch, (tuple, list)) and position is not None and position < len(batch) else None
    return mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None


def layer_rows(module: nn.Module, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The layer input as rows ``(n, in)`` matching :func:`autoq.model.weight_2d`'s columns. With the batch's
    ``mask`` (:func:`token_mask`), a ``(batch, tokens, in)`` input keeps the rows of real tokens only; an input of
    another shape (a pooler's ``(batch, in)``, a convolution's) is not per token and keeps every row."""
    if channels_first(module):
        why = rows_unsupported(module)
        if why:
            raise AutoqError(f"{why}: data-driven methods need an ungrouped convolution with zero padding (integers or valid)")
        if isinstance(module, nn.Conv1d):
            x = x.unsqueeze(-2)
            kernel, dil, pad, stride = (1, *module.kernel_size), (1, *module.dilation), (0, *zero_padding(module)), (1, *module.stride)
        else:
            kernel, dil, pad, stride = module.kernel_size, module.dilation, zero_padding(module), module.stride
        cols = F.unfold(x, kernel, dilation=dil, padding=pad, stride=stride)  # (B, C*k, L)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    if mask is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(mask.shape):
        return x[mask.to(x.device) != 0]
    return x.reshape(-1, x.shape[-1])


class _Accumulator:
    """Running sums of one layer's input rows."""

    def __init__(self, max_samples: int, seed: int, name: str = "") -> None:
        self.name = name
        self.max_samples = max_samples
        self.gen = torch.Generator().manual_seed(seed)
        self.xtx: torch.Tensor | None = None
        self.n = 0
        self.samples: torch.Tensor | None = None  # a uniform sample of the rows seen: those with the smallest keys
        self.keys: torch.Tensor | None = None
        self.called = False  # the model called the layer (perhaps on padding only)

    def add(self, rows: torch.Tensor) -> None:
        self.called = True
        rows = rows.detach().float()
        if rows.shape[0] == 0:  # a batch of padding only
            return
        if not torch.isfinite(rows).all():
            raise _NonFiniteInput(f"the input of layer {self.name!r} holds NaN or Inf" if self.name else "a layer input holds NaN or Inf")
        r64 = rows.double()
        if self.xtx is None:
            n_in, device = rows.shape[1], rows.device  # on the model's device: a CUDA model's rows stay there
            self.xtx = torch.zeros(n_in, n_in, dtype=torch.float64, device=device)
            self.abs_sum = torch.zeros(n_in, dtype=torch.float64, device=device)
            self.sum = torch.zeros(n_in, dtype=torch.float64, device=device)
            self.absmax = torch.zeros(n_in, device=device)
            self.lo = torch.full((n_in,), float("inf"), device=device)
            self.hi = torch.full((n_in,), float("-inf"), device=device)
        self.xtx.addmm_(r64.t(), r64)
        self.abs_sum += r64.abs().sum(0)
        self.sum += r64.sum(0)
        self.absmax = torch.maximum(self.absmax, rows.abs().amax(0))
        self.lo = torch.minimum(self.lo, rows.amin(0))
        self.hi = torch.maximum(self.hi, rows.amax(0))
        self.n += rows.shape[0]
        if self.max_samples:
            self._sample(rows)

    def _sample(self, rows: torch.Tensor) -> None:
        """Bottom-k sampling: every row seen gets a uniform random key and the ``max_samples`` smallest keys stay, so
        the sample is uniform over all rows whatever the batches' sizes and order (thinning the pool again at each
        batch halved every older batch's share)."""
        keys = torch.rand(rows.shape[0], generator=self.gen).to(rows.device)
        if self.samples is not None:
            rows, keys = torch.cat([self.samples, rows]), torch.cat([self.keys, keys])
        if rows.shape[0] > self.max_samples:
            keep = keys.topk(self.max_samples, largest=False).indices
            rows, keys = rows[keep], keys[keep]
        self.samples, self.keys = rows.clone(), keys

    def finish(self) -> LayerStats:
        if self.xtx is None:
            raise AutoqError("the layer saw no input on the calibration batches")
        n = self.n
        samples = self.samples if self.samples is not None else torch.zeros(0, self.xtx.shape[0], device=self.xtx.device)
        return LayerStats(self.xtx, self.absmax, (self.abs_sum / n).float(), (self.sum / n).float(), self.lo, self.hi, n, samples)


class _NonFiniteInput(AutoqError):
    """A layer's input holds NaN or Inf: the calibration pass names the batch (the inputs were finite, so the model made them)."""


class _StopForward(Exception):
    """Raised by a hook once the layer it waits for has its input: the rest of the pass is not needed."""


@dataclass
class _Batch:
    """The mask of the batch a calibration pass is on, for its hooks to read (:func:`token_mask`)."""

    mask: torch.Tensor | None = None


def _run(model: nn.Module, batches: Iterable[Any], current: _Batch | None = None) -> None:
    from autoq.evaluate.fidelity import call_on_user_batch  # lazy: evaluate imports model

    position = mask_position(model)
    with torch.inference_mode(), eval_mode(model):  # statistics of the deployed model: no dropout
        for i, batch in enumerate(batches):
            if current is not None:
                current.mask = token_mask(batch, position)
            try:
                call_on_user_batch(model, batch, f"calibration batch {i}", passthrough=(_StopForward,))
            except _StopForward:
                pass
            except _NonFiniteInput as exc:
                raise AutoqError(f"{exc} on calibration batch {i}: the model makes it from finite inputs (an overflow, or NaN "
                                 "weights of a layer not searched)") from None


def capture_stats(
    model: nn.Module,
    layers: Sequence[LayerInfo],
    batches: Sequence[Any],
    max_samples: int = DEFAULT_MAX_SAMPLES,
    seed: int = 0,
    called_only: bool = False,
) -> dict[str, LayerStats]:
    """Statistics of every layer in ``layers`` from one pass over ``batches`` (float model); ``called_only`` leaves out
    a layer the model never called (:func:`unreached`) instead of refusing it."""
    if not batches:
        raise AutoqError("capturing layer statistics needs at least one calibration batch")
    accs = {layer.name: _Accumulator(max_samples, seed + i, layer.name) for i, layer in enumerate(layers)}
    current = _Batch()
    handles = []
    for layer in layers:
        module = get_module(model, layer.name)
        acc = accs[layer.name]
        handles.append(module.register_forward_pre_hook(lambda m, args, acc=acc: acc.add(layer_rows(m, args[0], current.mask))))
    try:
        _run(model, batches, current)
    finally:
        for h in handles:
            h.remove()
    return {name: _named(name, acc) for name, acc in accs.items() if acc.called or not called_only}


def _named(name: str, acc: _Accumulator) -> LayerStats:
    try:
        return acc.finish()
    except AutoqError as exc:
        raise AutoqError(f"layer {name!r}: {exc}") from None


def execution_order(model: nn.Module, layers: Sequence[LayerInfo], batches: Sequence[Any]) -> tuple[list[int], set[int]]:
    """Indices into ``layers`` in the order the forward passes over ``batches`` first call them (layers they do not
    call last, in ``layers`` order): a model may define a layer before one that runs ahead of it; and those of
    layers some pass calls more than once (a module reused in a loop, perhaps only for some inputs)."""
    first: dict[int, int] = {}
    calls: dict[int, int] = {}  # this batch's
    again: set[int] = set()
    handles = []
    for i, layer in enumerate(layers):
        def hook(m: nn.Module, args: tuple, i: int = i) -> None:
            calls[i] = calls.get(i, 0) + 1
            if calls[i] > 1:
                again.add(i)
            first.setdefault(i, len(first))

        handles.append(get_module(model, layer.name).register_forward_pre_hook(hook))
    try:
        _run(model, (calls.clear() or batch for batch in batches))  # counts start again at each batch, numbered as given
    finally:
        for h in handles:
            h.remove()
    return sorted(range(len(layers)), key=lambda i: first.get(i, len(layers) + i)), again


def unreached(model: nn.Module, layers: Sequence[LayerInfo], batches: Sequence[Any]) -> list[str]:
    """Names of ``layers`` (those data-driven methods could run on) that no forward pass over ``batches`` calls, in
    order: a head the output does not use, a branch the data does not take, a weight read with ``F.linear``. Such a
    layer gives data-driven methods no input rows. Stops once every layer was called: one forward, usually."""
    waiting = {layer.name for layer in layers if not layer.no_rows}
    handles = []

    def called(name: str) -> None:
        waiting.discard(name)
        if not waiting:
            raise _StopForward  # the rest of this pass, and the batches after it, tell nothing more

    for name in list(waiting):
        handles.append(get_module(model, name).register_forward_pre_hook(lambda m, args, name=name: called(name)))
    try:
        _run(model, itertools.takewhile(lambda _: bool(waiting), batches))
    finally:
        for h in handles:
            h.remove()
    return [layer.name for layer in layers if layer.name in waiting]


def capture_sequential(
    model: nn.Module,
    layers: Sequence[LayerInfo],
    batches: Sequence[Any],
    quantize: Callable[[str, LayerStats], torch.Tensor],
    max_samples: int = DEFAULT_MAX_SAMPLES,
    seed: int = 0,
    called_only: bool = False,
) -> dict[str, LayerStats]:
    """Statistics of each layer with every layer that runs before it already quantized (``called_only``: as for
    :func:`capture_stats`; such a layer keeps its float weight).

    ``quantize(name, stats)`` returns the layer's new weight in its native layout; it
    is swapped in after the layer's statistics are taken. The model's weights are
    restored before returning. Cost: one calibration pass per layer, cut short at the layer's
    input (whole for a layer the model calls more than once, so that every call counts, as in
    :func:`capture_stats`), and one pass for the order the layers run in and which of them the model reuses
    (:func:`execution_order`).
    """
    if not batches:
        raise AutoqError("capturing layer statistics needs at least one calibration batch")
    stats: dict[str, LayerStats] = {}
    originals: dict[str, torch.Tensor] = {}
    try:
        order, reused = execution_order(model, layers, batches)
        for i in order:
            layer = layers[i]
            module = get_module(model, layer.name)
            acc, current = _Accumulator(max_samples, seed + i, layer.name), _Batch()

            def hook(m: nn.Module, args: tuple, acc: _Accumulator = acc, current: _Batch = current, whole: bool = i in reused) -> None:
                acc.add(layer_rows(m, args[0], current.mask))
                if not whole:
                    raise _StopForward

            handle = module.register_forward_pre_hook(hook)
            try:
                _run(model, batches, current)
            finally:
                handle.remove()
            if called_only and not acc.called:
                continue
            stats[layer.name] = _named(layer.name, acc)
            originals[layer.name] = module.weight.data
            module.weight.data = quantize(layer.name, stats[layer.name])
    finally:
        for name, data in originals.items():
            get_module(model, name).weight.data = data
    return stats


class CalibrationStats:
    """Layer statistics captured lazily, once, on first use, and shared by every method.

    ``get(name)`` returns the float model's statistics (one calibration pass for
    all layers). With ``sequential=True``, :meth:`sweep` captures statistics with
    earlier layers already quantized; the evaluation cache calls it once per
    data-driven choice (see :class:`autoq.evaluate.QuantCache`).
    """

    def __init__(self, model: nn.Module, layers: Sequence[LayerInfo], batches: Sequence[Any], sequential: bool = False,
                 max_samples: int = DEFAULT_MAX_SAMPLES, seed: int = 0) -> None:
        # a layer whose input cannot be read as rows (LayerInfo.no_rows) takes data-free methods only: not captured
        self.model, self.batches = model, list(batches)
        self.layers = tuple(layer for layer in layers if not layer.no_rows)
        self._no_rows = {layer.name: layer.no_rows for layer in layers if layer.no_rows}
        self.sequential, self.max_samples, self.seed = sequential, max_samples, seed
        self._float: dict[str, LayerStats] | None = None

    def capture(self) -> None:
        """Run the one calibration pass now (``get`` runs it on first use): before any metric hooks the model."""
        if self._float is None:
            self._float = self._note_uncalled(capture_stats(self.model, self.layers, self.batches, self.max_samples, self.seed, called_only=True))

    def _note_uncalled(self, stats: dict[str, LayerStats]) -> dict[str, LayerStats]:
        """``stats``, having noted the layers the model never called as ones data-driven methods cannot run on (a search
        gives them data-free methods only; a trial or table that gives one such a method is refused by :meth:`get`)."""
        for layer in self.layers:
            if layer.name not in stats:
                self._no_rows[layer.name] = NOT_REACHED
        return stats

    def get(self, name: str) -> LayerStats:
        self.capture()
        try:
            return self._float[name]
        except KeyError:
            if name in self._no_rows:
                raise AutoqError(f"layer {name!r}: {self._no_rows[name]}, so data-driven methods cannot run on it; give it a data-free "
                                 "method (rtn-mse, say), or skip it") from None
            raise AutoqError(f"no calibration statistics for layer {name!r}: it is not one of the searched layers") from None

    def sweep(self, quantize: Callable[[str, LayerStats], torch.Tensor]) -> dict[str, LayerStats]:
        """Sequential statistics of every layer, quantizing each with ``quantize`` after its capture."""
        return self._note_uncalled(capture_sequential(self.model, self.layers, self.batches, quantize, self.max_samples, self.seed,
                                                      called_only=True))
