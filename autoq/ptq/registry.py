"""Registry of post-training quantization methods.

A method maps (weight ``(out, in)``, spec, calibration statistics of the layer)
to a :class:`~autoq.quant.QuantizedTensor`. Methods that need no data ignore
``stats``. New methods register with :func:`register_method`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import torch

from autoq.errors import AutoqError
from autoq.quant import QuantizedTensor, QuantSpec


class PTQMethod(Protocol):
    def __call__(self, weight: torch.Tensor, spec: QuantSpec, stats: Mapping[str, Any] | None = None) -> QuantizedTensor: ...


_METHODS: dict[str, PTQMethod] = {}


def register_method(name: str) -> Callable[[PTQMethod], PTQMethod]:
    """Decorator: make a PTQ method available under ``name``."""

    def add(fn: PTQMethod) -> PTQMethod:
        if name in _METHODS:
            raise ValueError(f"PTQ method {name!r} is already registered")
        _METHODS[name] = fn
        return fn

    return add


def get_method(name: str) -> PTQMethod:
    try:
        return _METHODS[name]
    except KeyError:
        raise AutoqError(f"unknown PTQ method {name!r}; known methods: {', '.join(sorted(_METHODS))}") from None


def method_names() -> list[str]:
    return sorted(_METHODS)
