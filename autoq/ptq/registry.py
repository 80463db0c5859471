"""Registry of post-training quantization methods.

A method maps (weight ``(out, in)`` float32, spec, calibration statistics of the
layer) to a :class:`~autoq.quant.QuantizedTensor`. Methods registered with
``needs_stats=True`` read a :class:`~autoq.model.capture.LayerStats` and refuse
``stats=None`` with an :class:`AutoqError`; the others ignore ``stats``. A method
may return a :class:`~autoq.ptq.result.TransformedTensor` when it also scales the
layer's input or shifts its bias; one that scales the input registers with
``scales_input=True``, so that the cost model counts the stored scale (fp32, 4 bytes
an input). New methods register with :func:`register_method`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from autoq.choice import HALF_METHOD
from autoq.errors import AutoqError
from autoq.ptq.result import bias_delta_of, input_scale_of
from autoq.quant import QuantizedTensor, QuantSpec
from autoq.registry import Registry, check_callable


class MethodError(AutoqError):
    """A PTQ method was given a weight it cannot quantize (NaN or inf), raised, or returned something other than what
    it was asked for; the message names the method (and, from the quantized-weight cache, the layer)."""


class PTQMethod(Protocol):
    """``fn(weight, spec, stats=None)``: quantize a float32 ``(out, in)`` weight (a convolution's kernel flattened to
    ``(out, in * kh * kw)``) to ``spec``; return a :class:`QuantizedTensor` of that spec and shape (codes in
    ``[spec.qmin, spec.qmax]``, one fp16 scale and zero point per group: a whole number in that range, ``2^(bits-1)``
    for a symmetric spec), or a ``TransformedTensor`` that also scales
    the input or shifts the bias. ``stats`` is the layer's ``LayerStats`` for methods registered with
    ``needs_stats=True``, else ``None``. The same inputs must give the same codes: an export quantizes again."""

    def __call__(self, weight: torch.Tensor, spec: QuantSpec, stats: Any = None) -> QuantizedTensor: ...


@dataclass(frozen=True)
class MethodInfo:
    """A registered method: its name in choice names (``int4-ch-asym:NAME``), the function, and what it reads and stores."""

    name: str
    fn: PTQMethod
    needs_stats: bool
    scales_input: bool = False  # returns a per-input-channel scale, stored with the weight (fp32, 32 bits an input)

    @property
    def code(self) -> str:
        """``code_digest(fn)``, taken once, at the method's first use in this process (a search's start, an export's):
        before it has run, so a plug-in's own state (a call counter, a memo filled as it runs) does not make the same
        code read as edited (an export right after the search that scored it was refused). It travels with the entry
        to a Ray worker."""
        return self._digests[0]

    @property
    def legacy_code(self) -> str:
        """`code` as an older autoq took it (a plug-in file's method by its module's ``autoq_plugin_`` name), which a
        search stored then still matches; taken with `code`, before the method runs."""
        return self._digests[1]

    @functools.cached_property
    def _digests(self) -> tuple[str, str]:
        from autoq.code_digest import code_digest

        return code_digest(self.fn), code_digest(self.fn, legacy=True)


_METHODS: Registry[MethodInfo] = Registry(
    "PTQ method", reserved=(HALF_METHOD, "fp16"),
    hint=" (a plug-in's method is known once its module is imported: --plugin MODULE on the command line)",
)


def register_method(name: str, needs_stats: bool = False, scales_input: bool = False) -> Callable[[PTQMethod], PTQMethod]:
    """Decorator: make a PTQ method available under ``name``. ``scales_input``: the method may return an input scale
    (a `TransformedTensor`'s ``input_scale``), which the export stores and the cost model counts."""
    def info(fn: PTQMethod) -> MethodInfo:
        check_callable("PTQ method", name, fn, ("weight", "spec", "stats"))
        return MethodInfo(name, fn, needs_stats, scales_input)

    return _METHODS.decorator(name, info)


def method_info(name: str) -> MethodInfo:
    """The registered method ``name``, or an error listing the known ones."""
    return _METHODS.get(name)


def get_method(name: str) -> PTQMethod:
    """The function of method ``name``, called as is (see :func:`run_method` for a checked call)."""
    return method_info(name).fn


def run_method(name: str, weight: torch.Tensor, spec: QuantSpec, stats: Any = None) -> QuantizedTensor:
    """Method ``name`` on ``weight``, its result checked against what was asked: a plug-in that returns another
    format, shape or code range would otherwise be priced as ``spec`` and fail only when its export is loaded."""
    info = method_info(name)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:  # each method unpacked its shape: 'too many values to unpack'
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise AutoqError(f"PTQ method {name!r} takes a 2-D (out, in) weight tensor, got {shape}; reshape a convolution's to (out, -1) "
                         "(autoq.model.weight_2d(layer) gives any layer's)")
    bad = int((~torch.isfinite(weight)).sum()) if weight.is_floating_point() else 0
    if bad:  # every method then failed its result check, which blamed the method ('returned scales ... not finite')
        raise MethodError(f"the {tuple(weight.shape)} weight given to PTQ method {name!r} holds {bad} NaN or inf value(s); quantize "
                         "finite weights (a search and an export refuse such a model by its layer names before they start)")
    try:
        q = info.fn(weight, spec, stats)
    except AutoqError:
        raise
    except Exception as exc:  # a plug-in's own bug: say whose, or a mixed space's failed trial names no method
        raise MethodError(f"PTQ method {name!r} failed on {spec.name} for a {tuple(weight.shape)} weight: "
                          f"{type(exc).__name__}: {exc}") from exc
    wrong = _wrong_result(q, weight, spec) or _wrong_transform(q, weight, info)
    if wrong:
        raise MethodError(f"PTQ method {name!r} was asked for {spec.name} on a {tuple(weight.shape)} weight and returned {wrong}; "
                          f"a method must return a QuantizedTensor of the spec and shape it is given")
    return q


def _wrong_result(q: Any, weight: torch.Tensor, spec: QuantSpec) -> str | None:
    """What is wrong with ``q`` as ``spec``'s quantization of ``weight``, or ``None``."""
    if not isinstance(q, QuantizedTensor):
        return f"a {type(q).__name__}"
    if q.spec != spec:
        return f"{q.spec.name}"
    if tuple(q.codes.shape) != tuple(weight.shape):
        return f"codes of shape {tuple(q.codes.shape)}"
    groups = spec.n_param_groups(*weight.shape)
    if q.scale.numel() != groups or q.zero.numel() != groups:
        return f"{q.scale.numel()} scales and {q.zero.numel()} zero points, not {groups}"
    if q.codes.dtype.is_floating_point or q.codes.dtype.is_complex or q.codes.dtype == torch.bool:
        return f"codes of dtype {q.codes.dtype} (integer codes are asked for, e.g. .round().to(torch.uint8))"
    if q.codes.numel() and (int(q.codes.min()) < spec.qmin or int(q.codes.max()) > spec.qmax):
        return f"codes from {int(q.codes.min())} to {int(q.codes.max())}, outside [{spec.qmin}, {spec.qmax}]"
    if not (torch.isfinite(q.scale).all() and torch.isfinite(q.zero).all()):
        return "scales or zero points that are not finite (NaN or beyond fp16's 65504)"
    return _wrong_zeros(q.zero, spec)


def _wrong_zeros(zero: torch.Tensor, spec: QuantSpec) -> str | None:
    """Zero points the export cannot store as they were scored: it stores an asymmetric format's as fp16 whole numbers
    in ``[0, 2^b - 1]`` and none for a symmetric one (read back as ``2^(b-1)``); ``autoq.load`` refused such an export
    as damaged, after a search had scored it."""
    z = zero.float()
    if spec.symmetric:
        middle = 1 << (spec.bits - 1)
        return None if bool((z == middle).all()) else f"symmetric zero points other than {middle} (2^(bits-1), which the export assumes)"
    if bool(((z == z.round()) & (z >= spec.qmin) & (z <= spec.qmax)).all()):
        return None
    return f"zero points that are not whole numbers in [{spec.qmin}, {spec.qmax}] (the export stores them so)"


def _wrong_transform(q: QuantizedTensor, weight: torch.Tensor, info: MethodInfo) -> str | None:
    """What is wrong with the input scale or bias shift ``q`` carries (a `TransformedTensor`'s), or ``None``: the
    export stores them as they are, so a NaN or a misshapen one would be scored and shipped without a word."""
    out_features, in_features = weight.shape
    scale, delta = input_scale_of(q), bias_delta_of(q)
    if scale is not None:
        if not info.scales_input:
            return ("an input scale, but it is registered without scales_input=True; register it with "
                    "register_method(..., scales_input=True) so that the cost model counts the scale's bytes")
        if tuple(scale.shape) != (in_features,):
            return f"an input scale of shape {tuple(scale.shape)}, not ({in_features},)"
        if not (torch.isfinite(scale).all() and (scale > 0).all()):
            return "an input scale that is not finite and positive everywhere"
    if delta is not None:
        if tuple(delta.shape) != (out_features,):
            return f"a bias shift of shape {tuple(delta.shape)}, not ({out_features},)"
        if not torch.isfinite(delta).all():
            return "a bias shift that is not finite"
    return None


def plugin_code(methods: Iterable[str], legacy: bool = False) -> dict[str, str]:
    """``{method: code_digest}`` for each of ``methods`` that a plug-in registered (autoq's own change only with
    autoq): a search records them, and an export or a resume after the plug-in was edited is refused by them.
    ``legacy``: the digests an older autoq recorded (`MethodInfo.legacy_code`)."""
    infos = [info for info in map(_METHODS.find, sorted(set(methods))) if info is not None]
    return {info.name: info.legacy_code if legacy else info.code for info in infos if not _autoqs_own(info.fn)}


def _autoqs_own(fn: Any) -> bool:
    """Whether ``fn`` is a function defined in autoq, as is: a ``functools.partial`` of one (its arguments a plug-in's
    choice) or a wrapper of one (``__wrapped__``: its ``__module__`` is the wrapped one's) is a plug-in's code."""
    module = getattr(fn, "__module__", None) or ""
    return inspect.isfunction(fn) and not hasattr(fn, "__wrapped__") and (module == "autoq" or module.startswith("autoq."))


def changed_code(recorded: Mapping[str, str], methods: Iterable[str]) -> list[str]:
    """The methods of ``methods`` whose code is not what ``recorded`` (a search's `plugin_code`) says it was; one not
    registered now is left to the unknown-method error, which says to load its plug-in."""
    asked = [m for m in methods if m in recorded]
    now, before = plugin_code(asked), plugin_code(asked, legacy=True)
    return [m for m in sorted(set(methods)) if m in recorded and m in now and recorded[m] not in (now[m], before[m])]


def method_needs_stats(name: str) -> bool:
    """Whether ``name`` reads the layer's calibration statistics."""
    return method_info(name).needs_stats


def input_scale_bits(name: str, in_features: int) -> int:
    """The bits a layer of ``in_features`` inputs stores besides its weight format under method ``name``: the fp32
    input scale of a method registered with ``scales_input``, else 0 (also for ``none``, a layer kept in fp16)."""
    info = _METHODS.find(name)
    return 32 * in_features if info is not None and info.scales_input else 0


def registered_methods() -> tuple[MethodInfo, ...]:
    """Every registered method: what another process that imports autoq alone (a Ray worker) is sent, to
    :func:`adopt_methods` those it lacks (a plug-in's, or a built-in function registered under another name)."""
    return _METHODS.entries()


def adopt_methods(infos: tuple[MethodInfo, ...]) -> None:
    """Register methods another process registered (a Ray worker, the driver's plug-ins); a name known here keeps its own."""
    for info in infos:
        _METHODS.adopt(info.name, info)


def method_names() -> list[str]:
    """Every registered method's name, sorted."""
    return sorted(_METHODS.names())


def require_stats(stats: Any, method: str, weight: torch.Tensor, spec: QuantSpec) -> Any:
    """``stats``, checked against the ``(out, in)`` weight they are for, or an error saying what is wrong: none
    given, statistics of another width, or the fp16 spec (a layer kept in half precision has nothing to quantize)."""
    if spec.is_half:
        raise ValueError("fp16 is not an integer format; nothing to quantize")
    if stats is None:
        raise AutoqError(f"PTQ method {method!r} needs the layer's calibration statistics (autoq.model.capture); got none")
    if stats.in_features != weight.shape[1]:
        raise AutoqError(f"PTQ method {method!r}: the calibration statistics are for {stats.in_features} inputs, the weight "
                         f"has {weight.shape[1]}; capture them from this layer's input")
    return stats
