"""Registry of post-training quantization methods.

A method maps (weight ``(out, in)`` float32, spec, calibration statistics of the
layer) to a :class:`~autoq.quant.QuantizedTensor`. Methods registered with
``needs_stats=True`` read a :class:`~autoq.model.capture.LayerStats` and refuse
``stats=None`` with an :class:`AutoqError`; the others ignore ``stats``. A method
may return a :class:`~autoq.ptq.result.TransformedTensor` when it also scales the
layer's input or shifts its bias. New methods register with :func:`register_method`.
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


_METHODS: dict[str, MethodInfo] = {}


def register_method(name: str, needs_stats: bool = False) -> Callable[[PTQMethod], PTQMethod]:
    """Decorator: make a PTQ method available under ``name``."""

    def add(fn: PTQMethod) -> PTQMethod:
        if name in _METHODS:
            raise ValueError(f"PTQ method {name!r} is already registered")
        _METHODS[name] = MethodInfo(name, fn, needs_stats)
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


def method_names() -> list[str]:
    return sorted(_METHODS)


def require_stats(stats: Any, method: str) -> Any:
    """``stats``, or an error saying that ``method`` needs calibration statistics."""
    if stats is None:
        raise AutoqError(f"PTQ method {method!r} needs the layer's calibration statistics (autoq.model.capture); got none")
    return stats
