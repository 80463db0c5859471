"""Uniform affine quantization of a 2-D weight ``(out, in)`` under a `QuantSpec`.

Codes are unsigned integers in ``[0, 2**bits - 1]`` and dequantize as
``w_hat = scale * (code - zero)``. ``scale`` and ``zero`` are rounded to fp16
before the codes are computed, so what is simulated of a weight is exactly what is stored.
Symmetric formats fix ``zero = 2**(bits-1)`` (not stored); asymmetric formats
store an integer zero point in ``[0, 2**bits - 1]`` per group, as fp16.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from autoq.errors import AutoqError
from autoq.quant.spec import QuantSpec

_MIN_SCALE = 2.0**-24  # fp16's smallest positive value: a scale is never 0, and a row of tiny weights keeps its codes


@dataclass(frozen=True)
class QuantizedTensor:
    """Integer codes plus fp16 parameters of one quantized weight."""

    spec: QuantSpec
    codes: torch.Tensor  # uint8, (out, in)
    scale: torch.Tensor  # fp16, (n_groups,)
    zero: torch.Tensor  # fp16, (n_groups,); implied for symmetric formats

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.codes.shape)  # type: ignore[return-value]

    def dequantize(self) -> torch.Tensor:
        view = GroupView(self.shape, self.spec)
        grouped = view.split(self.codes.float())
        w = self.scale.float()[:, None] * (grouped - self.zero.float()[:, None])
        return view.merge(w)


class GroupView:
    """Reshape a weight ``(out, in)`` into rows that share one (scale, zero).

    Per-group layouts pad the input dimension up to a multiple of the group size
    by repeating the last column, so padded entries never widen a group's range;
    ``mask`` marks the real entries for error measures.
    """

    def __init__(self, shape: tuple[int, int], spec: QuantSpec) -> None:
        self.out_features, self.in_features = shape
        self.spec = spec
        if spec.granularity == "group":
            assert spec.group_size is not None
            self.group = spec.group_size
            self.n_per_row = math.ceil(self.in_features / self.group)
            self.pad = self.n_per_row * self.group - self.in_features
        else:
            self.group = self.in_features
            self.n_per_row = 1
            self.pad = 0

    def split(self, w: torch.Tensor) -> torch.Tensor:
        if self.spec.granularity == "tensor":
            return w.reshape(1, -1)
        if self.spec.granularity == "channel":
            return w
        if self.pad:
            w = torch.cat([w, w[:, -1:].expand(-1, self.pad)], dim=1)
        return w.reshape(self.out_features * self.n_per_row, self.group)

    def merge(self, grouped: torch.Tensor) -> torch.Tensor:
        if self.spec.granularity != "group":
            return grouped.reshape(self.out_features, self.in_features)
        w = grouped.reshape(self.out_features, self.n_per_row * self.group)
        return w[:, : self.in_features]

    def mask(self, device: torch.device | None = None) -> torch.Tensor | None:
        """1 for real entries, 0 for padding, in grouped layout; ``None`` when nothing is padded."""
        if not self.pad:
            return None
        cols = torch.arange(self.n_per_row * self.group, device=device) < self.in_features
        return cols.float().reshape(self.n_per_row, self.group).repeat(self.out_features, 1)


def _half_at_least(x: torch.Tensor) -> torch.Tensor:
    """Round to fp16 upwards, so a scale never shrinks the range it must cover.

    Shortfalls within fp32 noise (a relative 1e-6) are ignored, so a scale that is an fp16 value already, up to
    that noise (one computed from a stored scale), stays that value rather than moving up a step.
    """
    h = x.half()
    low = h.float() < x * (1 - 1e-6)
    if low.any():
        h = torch.where(low, torch.nextafter(h, torch.full_like(h, float("inf"))), h)
    return h


def params_from_range(lo: torch.Tensor, hi: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """fp16-rounded (scale, zero) per group for the range ``[lo, hi]``.

    Asymmetric ranges are widened to contain 0 so the zero point is an integer
    in ``[0, qmax]``: exact in fp16, and a group that does not straddle 0 (or is
    constant) cannot push it out of range.
    """
    if spec.symmetric:
        half = 1 << (spec.bits - 1)
        absmax = torch.maximum(lo.abs(), hi.abs())
        scale = _half_at_least((absmax / (half - 1)).clamp_min(_MIN_SCALE))
        zero = torch.full_like(scale, float(half))
    else:
        lo, hi = lo.clamp(max=0.0), hi.clamp(min=0.0)
        scale = _half_at_least(((hi - lo) / spec.qmax).clamp_min(_MIN_SCALE))
        zero = torch.round(-lo / scale.float()).clamp_(0, spec.qmax).half()
    if torch.isinf(scale).any():  # an fp16 scale tops out at 65504: the weights dequantized to NaN, blamed on the method
        if spec.symmetric:
            what, widest, covered = "reach |w| =", float(torch.maximum(lo.abs(), hi.abs()).max()), 65504.0 * ((1 << (spec.bits - 1)) - 1)
        else:
            what, widest, covered = "span a range of", float((hi - lo).max()), 65504.0 * spec.qmax
        raise AutoqError(f"{spec.name}: a group's weights {what} {widest:.4g}, and its fp16 scale (at most 65504) covers "
                         f"{covered:.4g}; rescale the layer's weights, or keep it in fp16 (--pin LAYER=fp16) or skip it (--skip)")
    return scale, zero


def quantize_grouped(grouped: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, spec: QuantSpec,
                     out: torch.Tensor | None = None) -> torch.Tensor:
    """Codes for grouped weights ``(G, g)`` given per-group fp16 ``scale`` and ``zero``; ``out``: a buffer of that
    shape to compute them in (a range search tries 40 ranges: a new tensor each time made it 4x slower)."""
    q = torch.div(grouped, scale.float()[:, None], out=out)
    return q.add_(zero.float()[:, None]).round_().clamp_(spec.qmin, spec.qmax)


def finite_weight(w: torch.Tensor, caller: str) -> torch.Tensor:
    """``w`` detached as float32, refused unless a finite 2-D (out, in) weight: a NaN came back as NaN scales and codes
    of 0 (a range of NaN, from the range functions) without a word, an inf as an fp16 scale to rescale."""
    if w.dim() != 2:  # GroupView's unpacking said only "not enough values to unpack"
        raise AutoqError(f"{caller} takes a 2-D (out, in) weight, got shape {tuple(w.shape)}; reshape a convolution's to (out, -1)")
    w = w.detach().float()
    bad = int((~torch.isfinite(w)).sum())
    if bad:
        raise AutoqError(f"{caller} got a {tuple(w.shape)} weight with {bad} NaN or inf value(s); quantize finite weights")
    return w


def quantize(w: torch.Tensor, spec: QuantSpec, lo: torch.Tensor | None = None, hi: torch.Tensor | None = None) -> QuantizedTensor:
    """Quantize ``w`` (out, in) with per-group range ``[lo, hi]`` (min-max when both are omitted)."""
    if spec.is_half:
        raise ValueError("fp16 is not an integer format; nothing to quantize")
    if (lo is None) != (hi is None):  # one bound alone was dropped without a word, for min-max
        given = "lo" if hi is None else "hi"
        raise AutoqError(f"quantize takes a range per group as both lo and hi, or neither (min-max); got {given} alone")
    w = finite_weight(w, "quantize")
    view = GroupView(tuple(w.shape), spec)
    grouped = view.split(w)
    if lo is None or hi is None:
        lo, hi = grouped.amin(dim=1), grouped.amax(dim=1)
    scale, zero = params_from_range(lo, hi, spec)
    codes = quantize_grouped(grouped, scale, zero, spec)
    return QuantizedTensor(spec, view.merge(codes).to(torch.uint8), scale, zero)


def fake_quantize(w: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Quantize then dequantize with min-max ranges; fp16 formats round to half."""
    if spec.is_half:
        return w.detach().half().float()
    return quantize(w, spec).dequantize()
