"""Quantize each (layer, choice) once per search and swap the results into the model.

A trial then costs one evaluation pass plus pointer swaps: ``apply`` replaces each
layer's ``weight.data`` (and ``bias.data`` for bias correction) with cached
tensors, and for choices with an activation format installs a forward pre-hook
that divides the input by the method's ``input_scale`` (SmoothQuant) and
fake-quantizes it; everything is restored on exit.

Data-driven methods read the layer's calibration statistics from ``stats``
(captured lazily on first need). With sequential statistics, the first request
for a data-driven choice quantizes every layer with that choice in model order,
each seeing inputs from the already-quantized earlier layers, and caches them all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autoq.choice import LayerChoice
from autoq.errors import AutoqError
from autoq.messages import warn
from autoq.model import LayerInfo, channels_first, compiled_inside, get_module, to_native, weight_2d
from autoq.model.capture import CalibrationStats, LayerStats, unreached
from autoq.ptq import method_needs_stats, run_method
from autoq.ptq.registry import MethodError
from autoq.ptq.result import bias_delta_of, input_scale_of
from autoq.quant import QuantizedTensor
from autoq.quant.activation import ActRange, ActSpec, fake_quantize_activation, static_range


@dataclass(frozen=True)
class QuantizedLayer:
    """What one (layer, choice) puts into the model.

    It keeps the method's integer codes (a byte a weight; the fp16 choice's half weight, two) and dequantizes on each
    read of ``weight``: a search's cache holds one per (layer, choice) it has tried, and as dense fp32 weights they
    were a copy of the model's linear weights per format (`benchmarks/search_memory.py`: 5.0 GB at peak against 2.4 GB,
    for 0.4 GB of linear weights in 14 trials)."""

    source: QuantizedTensor | torch.Tensor  # the codes, or the fp16 choice's (out, in) half weight
    module: nn.Module  # whose layout and dtype ``weight`` takes (its shape and kind, never its current values)
    bias: torch.Tensor | None = None  # replacement bias (bias correction), native dtype
    input_scale: torch.Tensor | None = None  # the input is divided by it before activation quantization
    activation: ActSpec | None = None
    act_range: ActRange | None = None  # static per-tensor activation range

    @property
    def weight(self) -> torch.Tensor:
        """Native layout and dtype; with ``input_scale``, the stored weight that multiplies ``x / input_scale``."""
        if isinstance(self.source, torch.Tensor):
            return to_native(self.module, self.source.float())
        stored = self.source.dequantize_stored() if self.input_scale is not None else self.source.dequantize()  # type: ignore[attr-defined]
        return to_native(self.module, stored)

    @property
    def weight_only(self) -> torch.Tensor:
        """The weight that gives this layer's float output without any hook: 1/input_scale folded in."""
        if self.input_scale is None or isinstance(self.source, torch.Tensor):
            return self.weight
        return to_native(self.module, self.source.dequantize())


def needs_stats(choice: LayerChoice) -> bool:
    if choice.weight.is_half:
        return False
    return method_needs_stats(choice.method) or (choice.activation is not None and choice.activation.static)


def uncalled_layers(model: nn.Module, layers: Sequence[LayerInfo], options: Sequence[Sequence[LayerChoice]], batches: Sequence[Any]) -> list[str]:
    """The ``layers`` that ``model`` never calls on the calibration ``batches``: a space built with them marked
    (`autoq.model.mark_unreached`) gives them data-free methods only, and the note names them all (in a data-free space
    too: the search sees no cost in quantizing a layer the data never reaches). One forward of the first batch, usually.
    A layer inside a ``torch.compile``'d submodule is left out (compiled code runs no hooks: it would read as never
    called). Where no option needs the data, the batches need not suit the model (a user's ``evaluate`` reads its own):
    one it cannot run gives no note rather than an error."""
    wrappers = [f"{name}." if name else "" for name in compiled_inside(model)]
    seen = [layer for layer in layers if not any(layer.name.startswith(f"{w}_orig_mod.") for w in wrappers)]
    if not seen or not batches:
        return []
    try:
        return unreached(model, seen, batches)
    except AutoqError:
        if any(needs_stats(c) for opts in options for c in opts):
            raise
        return []


def quantize_choice(module: nn.Module, choice: LayerChoice, stats: LayerStats | None = None) -> tuple[QuantizedTensor, torch.Tensor | None, ActRange | None]:
    """(the method's quantized weight, bias correction's shifted bias, a static activation format's range) for a
    quantized ``choice``: what the search simulates and what an export stores come from this one place."""
    q = run_method(choice.method, weight_2d(module), choice.weight, stats)
    scale, delta = input_scale_of(q), bias_delta_of(q)
    bias = None
    if delta is not None and getattr(module, "bias", None) is not None:
        bias = (module.bias.detach().float() + delta).to(module.bias.dtype)
    act = choice.activation
    if act is not None and scale is not None and channels_first(module):
        raise AutoqError(f"{choice.name}: input scaling with activation quantization is supported on linear layers only, not convolutions")
    if act is None or not act.static:
        return q, bias, None
    if stats is None:
        raise AutoqError(f"{choice.name}: static activation quantization needs calibration statistics")
    return q, bias, static_range(stats.min, stats.max, scale)


def quantize_layer_full(module: nn.Module, choice: LayerChoice, stats: LayerStats | None = None) -> QuantizedLayer:
    """Everything ``choice`` changes in ``module``, given the layer's statistics (when the choice needs them)."""
    if choice.weight.is_half:
        return QuantizedLayer(weight_2d(module).detach().half().clone(), module)
    q, bias, rng = quantize_choice(module, choice, stats)
    act = choice.activation
    if act is None:  # an input scale stays folded into the weight: no hook divides the input
        return QuantizedLayer(q, module, bias)
    return QuantizedLayer(q, module, bias, input_scale_of(q), act, rng)


def quantize_layer(module: nn.Module, choice: LayerChoice, stats: LayerStats | None = None) -> torch.Tensor:
    """The layer's weight after ``choice``, dequantized, in the layer's own layout and dtype (weight-only view)."""
    return quantize_layer_full(module, LayerChoice(choice.weight, choice.method), stats).weight


def sweep_choice(module: nn.Module, choice: LayerChoice) -> LayerChoice:
    """``choice`` as a sequential sweep runs it on ``module``: a convolution takes it without its activation format,
    as a search space gives it one (`autoq.space`)."""
    return LayerChoice(choice.weight, choice.method) if channels_first(module) else choice


def quantize_input(module: nn.Module, layer: QuantizedLayer, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as ``layer`` sees it: divided by the method's input scale (SmoothQuant), then
    fake-quantized to its activation format, per token = per position of the channel axis."""
    move = channels_first(module) and x.dim() > 2  # channels last for the scales, then back
    if move:
        x = x.movedim(1, -1)
    if layer.input_scale is not None:  # in fp32, as the exported layer divides (a bf16-rounded scale is 0.4% off)
        x = (x.float() / layer.input_scale.float()).to(x.dtype)
    x = fake_quantize_activation(x, layer.activation, layer.act_range)  # type: ignore[arg-type]
    return x.movedim(-1, 1) if move else x


def _activation_hook(layer: QuantizedLayer):
    def hook(module: nn.Module, args: tuple) -> tuple:
        return (quantize_input(module, layer, args[0]), *args[1:])

    return hook


def stats_for(stats: CalibrationStats | Mapping[str, LayerStats] | None, name: str, choice: LayerChoice) -> LayerStats | None:
    """Layer ``name``'s statistics from ``stats`` when ``choice`` needs them, else ``None``."""
    if not needs_stats(choice):
        return None
    if stats is None:
        raise AutoqError(f"{choice.name} needs calibration statistics; create QuantCache(model, stats=CalibrationStats(...))")
    if isinstance(stats, CalibrationStats):
        return stats.get(name)
    if name not in stats:
        raise AutoqError(f"no calibration statistics for layer {name!r}")
    return stats[name]


class QuantCache:
    """Memo of quantized layers keyed by (layer name, choice), filled lazily, for the model's weights as they were when
    it was made: a layer whose weight has changed since, between applications (in place through the parameter, or
    swapped), is refused. What code run inside `apply` writes into other parameters (biases, norms) stays, and is
    warned of once: an evaluate that trains must train a copy.

    ``stats``: a :class:`~autoq.model.capture.CalibrationStats` (lazy, optionally
    sequential), a mapping of layer name to :class:`LayerStats`, or ``None``
    (data-free methods only).
    """

    def __init__(self, model: nn.Module, stats: CalibrationStats | Mapping[str, LayerStats] | None = None,
                 on_layer: Callable[[int, int], None] | None = None) -> None:
        self.model = model
        self.stats = stats
        # told (layers done, layers to do) as `apply` quantizes what it has not cached: a live status for a long trial
        self.on_layer = on_layer
        self._layers: dict[tuple[str, LayerChoice], QuantizedLayer] = {}
        weights = {name: m.weight for name, m in model.named_modules() if isinstance(getattr(m, "weight", None), torch.Tensor)}
        # where each layer's float weight lives now: another cache's swapped-in weight is found by its address
        self._float = {name: _address(w) for name, w in weights.items()}
        # and its version: between trials the weights must not change; within one, what an evaluate writes into the
        # parameter (a snapshot put back with load_state_dict) lands in the swapped-in tensor, and counts from the restore
        self._versions = {name: _version(w) for name, w in weights.items()}
        self._warned = False

    def _check_float(self, name: str, module: nn.Module) -> None:
        """Refuse a layer whose weight is not the one this cache started from: two searches quantizing one module at once
        (threads, an Optuna study with n_jobs > 1) each took the other's quantized weights for the originals. A weight
        a parametrization computes anew on every forward (weight_norm) is refused as such, not blamed on another search."""
        if not isinstance(module.weight, nn.Parameter):
            raise AutoqError(f"layer {name!r} has a weight that a parametrization computes (weight_norm, spectral_norm) on every "
                             "forward, so a quantized weight written there would change nothing; a search leaves such layers "
                             "out: fold it into the weight first (torch.nn.utils.parametrize.remove_parametrizations(module, "
                             "'weight'), or torch.nn.utils.remove_weight_norm), or leave the layer out of the assignment")
        if (self._float.get(name, _address(module.weight)) != _address(module.weight)
                or self._versions.get(name, _version(module.weight)) != _version(module.weight)):
            raise AutoqError(f"layer {name!r} does not hold the weight this search started from: another autoq search in this process "
                             "is quantizing the same nn.Module (two threads, or an Optuna study with n_jobs > 1), or the model "
                             "moved or its weights changed since (load_state_dict, a training step); give each search its own copy, "
                             "copy.deepcopy(model), and a changed model a new QuantCache")

    def __len__(self) -> int:
        return len(self._layers)

    def _warn_written(self, before: list[tuple[str, torch.Tensor, int]]) -> None:
        """Warn, once, that code run inside `apply` (an evaluate, whether it then raised or not) wrote into parameters
        that `apply` does not restore, or replaced them: unless it put them back (a snapshot), the change stayed in the
        model and in every later trial, unsaid. ``before``: (name, parameter, version) as `apply` began."""
        if self._warned:
            return
        names = written_parameters(self.model, before)
        if names:
            self._warned = True
            warn(f"the model's parameters or buffers {written_names(names)} were changed in place while a "
                 "quantized assignment was applied (by evaluate?): autoq restores only the quantized layers' weights, so "
                 "unless it put them back, the change stays in the model and in the trials after; evaluate a copy "
                 "(copy.deepcopy(model)) if it must adapt or train", stacklevel=4)

    def layer(self, name: str, choice: LayerChoice) -> QuantizedLayer:
        key = (name, choice)
        if key not in self._layers:
            _check_layer(self.model, name, choice)
            if isinstance(self.stats, CalibrationStats) and self.stats.sequential and needs_stats(choice):
                self._sweep(choice)
            if key not in self._layers:
                module = get_module(self.model, name)
                self._check_float(name, module)
                with layer_named(name):
                    self._layers[key] = quantize_layer_full(module, choice, stats_for(self.stats, name, choice))
        return self._layers[key]

    def _sweep(self, choice: LayerChoice) -> None:
        """Quantize every layer with ``choice`` sequentially (inputs from quantized earlier layers; `sweep_choice`)."""
        assert isinstance(self.stats, CalibrationStats)

        def quantize(name: str, stats: LayerStats) -> torch.Tensor:
            module = get_module(self.model, name)
            own = sweep_choice(module, choice)
            with layer_named(name):
                layer = quantize_layer_full(module, own, stats)
            self._layers[(name, own)] = layer
            return layer.weight_only  # earlier layers' activation formats are not simulated during the sweep

        self.stats.sweep(quantize)

    def weight(self, name: str, choice: LayerChoice) -> torch.Tensor:
        return self.layer(name, choice).weight

    def _layers_of(self, assignment: Mapping[str, LayerChoice]) -> dict[str, QuantizedLayer]:
        """Every layer of ``assignment``, quantizing those not cached yet (``on_layer`` is told before each and at the end;
        a sequential sweep quantizes a choice's later layers with its first, which then count as done at once)."""
        todo = sum((name, choice) not in self._layers for name, choice in assignment.items())
        layers, done = {}, 0
        for name, choice in assignment.items():
            if (name, choice) not in self._layers:
                if self.on_layer is not None:
                    self.on_layer(done, todo)
                done += 1
            layers[name] = self.layer(name, choice)
        if self.on_layer is not None and todo:
            self.on_layer(todo, todo)
        return layers

    @contextmanager
    def apply(self, assignment: Mapping[str, LayerChoice]) -> Iterator[nn.Module]:
        """Context manager: the model with ``assignment`` applied; originals (and hooks) restored after."""
        originals: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        handles: list[Any] = []
        # every layer first, then the swaps: a sequential sweep (triggered by a layer's first data-driven
        # choice) must quantize the float weights of the layers before it, not ones this call swapped in
        layers = self._layers_of(assignment)
        # what a trial writes into the weights (and corrected biases) swapped in lands in copies thrown away after; by
        # identity, not name: a weight tied to a quantized layer's is listed once, under the other's name
        swapped = {id(get_module(self.model, name).weight) for name in layers}
        swapped |= {id(get_module(self.model, name).bias) for name, layer in layers.items() if layer.bias is not None}
        others = [(n, p, v) for n, p, v in parameter_versions(self.model) if id(p) not in swapped]
        try:
            for name, layer in layers.items():
                module = get_module(self.model, name)
                self._check_float(name, module)
                bias = getattr(module, "bias", None)
                originals[name] = (module.weight.data, bias.data if bias is not None else None)
                module.weight.data = layer.weight
                if layer.bias is not None and bias is not None:
                    bias.data = layer.bias.clone()  # a copy: a write into it must not reach the cached bias of later trials
                if layer.activation is not None:
                    handles.append(module.register_forward_pre_hook(_activation_hook(layer)))
            yield self.model
        finally:
            for h in handles:
                h.remove()
            for name, (weight, bias) in originals.items():
                module = get_module(self.model, name)
                module.weight.data = weight
                if bias is not None:
                    module.bias.data = bias
                self._versions[name] = _version(module.weight)
            self._warn_written(others)  # last: with warnings as errors, the model is restored first


def _check_layer(model: nn.Module, name: str, choice: Any) -> None:
    """Refuse a choice that is not a `LayerChoice`, or a layer without a weight, in words (an AttributeError, it was)."""
    if not isinstance(choice, LayerChoice):
        raise AutoqError(f"layer {name!r}: a choice is a LayerChoice (LayerChoice.from_name({str(choice)!r})), got "
                         f"{type(choice).__name__} {choice!r}")
    module = get_module(model, name)
    if not isinstance(getattr(module, "weight", None), torch.Tensor):
        raise AutoqError(f"layer {name!r} is a {type(module).__name__}, which has no weight to quantize; autoq.model.find_layers "
                         "lists the layers that do")


@contextmanager
def layer_named(name: str) -> Iterator[None]:
    """Prefix a PTQ method's failure, or a quantizer's refusal (weights too wide for an fp16 scale), with the layer it
    failed on (the method and the quantizer know only the weight's shape); an error that names the layer is left as is."""
    try:
        yield
    except AutoqError as exc:
        if type(exc) not in (AutoqError, MethodError) or f"layer {name!r}" in str(exc):
            raise
        raise type(exc)(f"layer {name!r}: {exc}") from exc


def _address(weight: torch.Tensor) -> tuple[int, tuple[int, ...], str]:
    """Where a weight's data lives (address, shape, device): a swapped-in tensor lives elsewhere."""
    return weight.data_ptr(), tuple(weight.shape), str(weight.device)


def _state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s parameters and persistent buffers by name: what its state dict (and weights hash) holds. A
    BatchNorm's running statistics, which an evaluate in train mode updates, were left out: changed unsaid, and the
    search's hash was no longer the model's. Non-persistent buffers (rotary caches a model rebuilds) are not state."""
    tensors = dict(model.named_parameters())
    for module_name, module in model.named_modules():
        for name, buffer in module.named_buffers(recurse=False):
            if buffer is not None and name not in module._non_persistent_buffers_set:
                tensors.setdefault(f"{module_name}.{name}" if module_name else name, buffer)
    return tensors


def parameter_versions(model: nn.Module) -> list[tuple[str, torch.Tensor, int]]:
    """(name, tensor, version) of each of ``model``'s parameters and persistent buffers, for :func:`written_parameters`
    to compare."""
    return [(n, p, _version(p)) for n, p in _state_tensors(model).items()]


def written_parameters(model: nn.Module, before: list[tuple[str, torch.Tensor, int]]) -> list[str]:
    """The names of ``before``'s parameters and buffers (:func:`parameter_versions`) that ``model`` has since changed in
    place or replaced (a change through ``.data`` goes unseen)."""
    now = _state_tensors(model)
    return [n for n, p, version in before if now.get(n) is not p or _version(p) != version]


def written_names(names: list[str]) -> str:
    """The names :func:`written_parameters` found, as a warning lists them: the first three, and what a BatchNorm's
    counter means (its running statistics change unseen: the native kernel writes them without a version bump)."""
    shown = f"{names[:3]}{' and more' if len(names) > 3 else ''}"
    if any(name.rsplit(".", 1)[-1] == "num_batches_tracked" for name in names):
        shown += " (BatchNorm statistics, with its running mean and variance: the model ran in train mode)"
    return shown


def _version(weight: torch.Tensor) -> int:
    """The parameter's version: later after a change in place through it (``load_state_dict``, an optimizer step), whose
    old quantized weights the cache served. A change through ``.data`` keeps it, unseen."""
    try:
        return weight._version
    except RuntimeError:  # an inference tensor (a model built under torch.inference_mode) keeps no version
        return -1


def apply_assignment(model: nn.Module, assignment: Mapping[str, LayerChoice], stats: Mapping[str, LayerStats] | None = None) -> nn.Module:
    """Quantize ``model`` in place under ``assignment`` (fake quantization of weights and biases) and return it.

    Activation formats need forward hooks: use :meth:`QuantCache.apply` for those.
    """
    for name, choice in assignment.items():
        _check_layer(model, name, choice)
    acting = [f"layer {name!r}: {choice.name}" for name, choice in assignment.items() if choice.activation is not None]
    if acting:  # before any layer changes: it raised with the layers before it quantized already
        raise AutoqError(f"{acting[0]} quantizes activations, and apply_assignment quantizes weights only; "
                         "use QuantCache(model, stats).apply(assignment)")
    with torch.no_grad():
        layers = {}
        for name, choice in assignment.items():  # every layer first, then the swaps: a failure leaves the model as it was
            module = get_module(model, name)
            with layer_named(name):
                layers[name] = (module, quantize_layer_full(module, choice, stats.get(name) if stats and needs_stats(choice) else None))
        for module, layer in layers.values():
            module.weight.data = layer.weight
            if layer.bias is not None:
                module.bias.data = layer.bias
    return model
