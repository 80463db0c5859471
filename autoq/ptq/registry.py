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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from autoq.errors import AutoqError
from autoq.quant import QuantizedTensor, QuantSpec


class PTQMethod(Protocol):
    def __call__(self, weight: torch.Tensor, spec: QuantSpec, stats: Any = None) -> QuantizedTensor: ...


@dataclass(frozen=True)
class MethodInfo:
    name: str
    fn: PTQMethod
    needs_stats: bool
    scales_input: bool = False  # returns a per-input-channel scale, stored with the weight (fp32, 32 bits an input)


_METHODS: dict[str, MethodInfo] = {}


def register_method(name: str, needs_stats: bool = False, scales_input: bool = False) -> Callable[[PTQMethod], PTQMethod]:
    """Decorator: make a PTQ method available under ``name``. ``scales_input``: the method may return an input scale
    (a `TransformedTensor`'s ``input_scale``), which the export stores and the cost model counts."""

    def add(fn: PTQMethod) -> PTQMethod:
        if name in _METHODS:
            raise ValueError(f"PTQ method {name!r} is already registered")
        _METHODS[name] = MethodInfo(name, fn, needs_stats, scales_input)
        return fn

    return add


def method_info(name: str) -> MethodInfo:
    try:
        return _METHODS[name]
    except KeyError:
        raise AutoqError(f"unknown PTQ method {name!r}; known methods: {', '.join(sorted(_METHODS))}") from None


def get_method(name: str) -> PTQMethod:
    return method_info(name).fn


def method_needs_stats(name: str) -> bool:
    """Whether ``name`` reads the layer's calibration statistics."""
    return method_info(name).needs_stats


def input_scale_bits(name: str, in_features: int) -> int:
    """The bits a layer of ``in_features`` inputs stores besides its weight format under method ``name``: the fp32
    input scale of a method registered with ``scales_input``, else 0 (also for ``none``, a layer kept in fp16)."""
    info = _METHODS.get(name)
    return 32 * in_features if info is not None and info.scales_input else 0


def method_names() -> list[str]:
    return sorted(_METHODS)


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
