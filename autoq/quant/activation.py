"""Activation quantization (fake-quant) for W8A8 / W4A8 deployments.

``ActSpec`` names an activation format: ``a8-tensor`` (static per-tensor:
one scale for the whole input, calibrated once from the calibration inputs'
range) or ``a8-token`` (dynamic per-token: one scale per input row, computed
at run time), at 8 or 4 bits, symmetric by default (``-asym`` for a zero point).
Activation quantization does not change a model's stored size: the cost model
counts weight bits only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from autoq.errors import AutoqError
from autoq.quant.spec import truth_value, whole_number

ACT_BITS = (4, 8)
ACT_MODES = ("tensor", "token")
_NAME_RE = re.compile(r"a([1-9][0-9]*)-(tensor|token)(-asym)?")  # fullmatch: no leading zeros, no trailing newline; ASCII digits
_EPS = 1e-8


@dataclass(frozen=True)
class ActSpec:
    """How a layer's input is quantized: bits, static per-tensor or dynamic per-token, symmetry."""

    bits: int = 8
    mode: str = "tensor"
    symmetric: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "bits", whole_number(self.bits, "activation bits"))  # 8.0 was named 'a8.0-tensor'
        object.__setattr__(self, "symmetric", truth_value(self.symmetric, "activation symmetric"))
        if self.bits not in ACT_BITS:
            raise AutoqError(f"unsupported activation bit-width {self.bits}; choose one of {ACT_BITS}")
        if self.mode not in ACT_MODES:
            raise AutoqError(f"unknown activation mode {self.mode!r}; choose 'tensor' (static) or 'token' (dynamic)")

    @property
    def static(self) -> bool:
        return self.mode == "tensor"

    @property
    def name(self) -> str:
        return f"a{self.bits}-{self.mode}" + ("" if self.symmetric else "-asym")

    @classmethod
    def from_name(cls, name: str) -> ActSpec:
        match = _NAME_RE.fullmatch(name)
        if not match:
            raise AutoqError(f"cannot parse activation format {name!r}; expected 'a8-tensor', 'a8-token', 'a4-token' or 'a8-tensor-asym'")
        return cls(int(match.group(1)), match.group(2), match.group(3) is None)


@dataclass(frozen=True)
class ActRange:
    """Calibrated range of a static per-tensor activation quantizer."""

    lo: float
    hi: float


class _RoundThrough(torch.autograd.Function):
    """``torch.round`` whose gradient is passed through unchanged (the straight-through estimator): round's own is zero
    everywhere, so a loaded W8A8 layer gave every layer before it a gradient of exactly zero, and fine-tuning them
    silently did nothing. The clamp around it still stops the gradient outside the quantizer's range."""

    generate_vmap_rule = True  # torch.func's transforms (grad, vmap, jacrev) need this and setup_context

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.round(x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[override]  # nothing to keep
        pass

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad


def records_gradient(x: torch.Tensor) -> bool:
    """Whether autograd records a gradient for ``x`` here, so a straight-through function is to run (the rounding below,
    the kernels' backward in `autoq.kernels.gradient`). Not under ``torch.jit.trace``, whose check found a Python
    function's graph different at each run, and refused the trace."""
    return torch.is_grad_enabled() and x.requires_grad and not torch.jit.is_tracing()


def _round(x: torch.Tensor) -> torch.Tensor:
    """``torch.round(x)``, with the straight-through gradient where one is recorded (the same values either way)."""
    return _RoundThrough.apply(x) if records_gradient(x) else torch.round(x)


def _fake(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, spec: ActSpec) -> torch.Tensor:
    qmax = (1 << spec.bits) - 1
    if spec.symmetric:
        half = 1 << (spec.bits - 1)
        scale = (torch.maximum(lo.abs(), hi.abs()) / (half - 1)).clamp_min(_EPS)
        return torch.clamp(_round(x / scale), -(half - 1), half - 1) * scale
    lo, hi = lo.clamp(max=0.0), hi.clamp(min=0.0)
    scale = ((hi - lo) / qmax).clamp_min(_EPS)
    zero = _round(-lo / scale)
    return (torch.clamp(_round(x / scale) + zero, 0, qmax) - zero) * scale


def fake_quantize_activation(x: torch.Tensor, spec: ActSpec, calibrated: ActRange | None = None) -> torch.Tensor:
    """Quantize-dequantize ``x`` (last dimension = channels) under ``spec``."""
    xf = x.float()
    if spec.static:
        if calibrated is None:
            raise AutoqError(f"static activation format {spec.name} needs a calibrated range (layer statistics)")
        lo = torch.tensor(calibrated.lo, dtype=xf.dtype)
        hi = torch.tensor(calibrated.hi, dtype=xf.dtype)
        out = _fake(xf, lo, hi, spec)
    else:
        out = _fake(xf, xf.amin(dim=-1, keepdim=True), xf.amax(dim=-1, keepdim=True), spec)
    return out.to(x.dtype)


def static_range(ch_min: torch.Tensor, ch_max: torch.Tensor, input_scale: torch.Tensor | None = None) -> ActRange:
    """Per-tensor range of ``x / input_scale`` from per-channel calibration minima and maxima."""
    lo, hi = ch_min.float(), ch_max.float()
    if input_scale is not None:
        lo, hi = lo / input_scale, hi / input_scale
    return ActRange(float(lo.min()), float(hi.max()))
