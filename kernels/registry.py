"""Registry of kernels: name -> which weight formats it reads, how to pack a weight for it, how to run it.

Every entry runs ``y = x @ W.T`` for activations ``x`` ``(M, K)`` and a weight prepared
from a :class:`~autoq.quant.QuantizedTensor` ``(N, K)``; ``run`` takes ``backend`` as
:mod:`autoq.kernels.ops` does. The benchmark measures every entry on every format it
supports; the conformance test checks every entry against a float64 reference.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from autoq.kernels import ops
from autoq.kernels.formats import Int8Weight, PackedWeight, supports_w8a8, supports_weight_only
from autoq.quant import QuantizedTensor, QuantSpec
from autoq.registry import Registry


@dataclass(frozen=True)
class KernelInfo:
    """One kernel: ``supports(spec)``, ``prepare(qt) -> packed`` once per weight, ``run(x, packed, backend) -> y``.

    ``empty(spec, shape, device)`` is an uninitialized packed weight, and ``run(..., compile_only=True)``
    compiles what ``run`` would launch without running it: together they precompile kernels for
    shapes without data (:mod:`autoq.kernels.precompile`)."""

    name: str
    description: str
    supports: Callable[[QuantSpec], bool]
    prepare: Callable[[QuantizedTensor], Any]
    empty: Callable[..., Any]
    run: Callable[..., torch.Tensor]
    quantizes_activations: bool = False


_KERNELS: Registry[KernelInfo] = Registry("kernel", hint=" (a plug-in's kernel is known once its module is imported: --plugin MODULE on the command line)")


def register_kernel(info: KernelInfo) -> KernelInfo:
    """Make a kernel available to ``autoq kernels bench --kernels NAME`` and the latency tables (`KernelInfo` says what
    each of its functions does); the name follows the plug-in rules of `autoq.plugin_names`. A ``run`` that takes no
    ``compile_only`` is refused here: the bench's precompile step calls it so, and failed on every format it read."""
    if not _takes_compile_only(info.run):
        raise ValueError(f"kernel {info.name!r}: run must take compile_only (run(x, packed, backend, compile_only=False)); with "
                         "compile_only=True it compiles what it would launch without running it, or returns at once if it "
                         "compiles nothing")
    return _KERNELS.add(info.name, info)


def _takes_compile_only(run: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(run).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a builtin): trusted
        return True
    return any(p.name == "compile_only" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def get_kernel(name: str) -> KernelInfo:
    """The kernel ``name``, or an error listing the known ones."""
    return _KERNELS.get(name)


def kernel_names() -> list[str]:
    """Every kernel's name, sorted."""
    return sorted(_KERNELS.names())


def kernels_for(spec: QuantSpec) -> list[KernelInfo]:
    """The kernels that read weights of format ``spec``."""
    return [info for info in sorted(_KERNELS.entries(), key=lambda i: i.name) if info.supports(spec)]


def _weight_only(name: str, description: str, kernel: str) -> KernelInfo:
    """A weight-only entry: ``ops.wq_linear`` with its ``kernel`` choice (``auto`` dispatches by batch)."""
    def run(x: torch.Tensor, w: PackedWeight, backend: str = "auto", compile_only: bool = False) -> torch.Tensor:
        return ops.wq_linear(x, w, backend, kernel=kernel, compile_only=compile_only)

    return KernelInfo(name, description, supports_weight_only, PackedWeight.from_quantized, PackedWeight.empty, run)


register_kernel(_weight_only("wq", "weight-only low-bit: GEMV at batch 1, tiled GEMM above (the dispatching entry point)", "auto"))
register_kernel(_weight_only("wq-gemv", "weight-only low-bit GEMV, split-K by shape (any batch, one row per program)", "gemv"))
register_kernel(_weight_only("wq-gemm", "weight-only low-bit tiled GEMM (tl.dot on fp16/bf16, fp32 accumulation)", "gemm"))
register_kernel(KernelInfo(
    "w8a8", "int8 weights x per-token int8 activations, int32 accumulation (dynamic activation quantization kernel first)",
    supports_w8a8, Int8Weight.from_quantized, Int8Weight.empty,
    lambda x, w, backend="auto", compile_only=False: ops.w8a8_linear(x, w, backend, compile_only),
    quantizes_activations=True,
))
