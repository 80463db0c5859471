"""A gradient for the Triton kernels' outputs, which have none of their own.

The kernels compute ``y = x @ W.T`` outside autograd: a loaded model trained on a GPU (its biases, the layers kept in
float) got no gradient through a quantized layer, so every parameter before it stayed as it was, unsaid. Where one is
being recorded, :func:`with_input_gradient` runs the kernel as the forward and gives ``x`` the gradient of
``x @ W.T`` in backward, with ``W`` dequantized there and then: the straight-through estimator that fake quantization
trains with (bitsandbytes' 4-bit layers do the same). The weight itself stays fixed: its codes are integers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from autoq.quant.activation import records_gradient


class _ThroughWeight(torch.autograd.Function):
    """Forward: ``run(x)``. Backward: ``grad @ weight()``, zero where ``round(x / scale)`` leaves ``[-qmax, qmax]`` for
    ``clip = (scale, qmax)`` (where a static activation range clips, as the fake-quantized path's clamp stops its
    gradient). In ``setup_context`` form, which ``torch.func.grad`` and ``jacrev`` need."""

    @staticmethod
    def forward(x: torch.Tensor, run: Callable[[torch.Tensor], torch.Tensor],  # type: ignore[override]
                weight: Callable[[], torch.Tensor], clip: tuple[float, int] | None) -> torch.Tensor:
        return run(x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[override]
        x, _, ctx.weight, ctx.clip = inputs
        if ctx.clip is not None:
            ctx.save_for_backward(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        dx = grad.float() @ ctx.weight().to(device=grad.device, dtype=torch.float32)
        if ctx.clip is not None:
            (x,) = ctx.saved_tensors
            scale, qmax = ctx.clip
            dx = dx * (torch.round(x.float() / scale).abs() <= qmax)
        return dx.to(grad.dtype), None, None, None


def with_input_gradient(x: torch.Tensor, run: Callable[[torch.Tensor], torch.Tensor], weight: Callable[[], torch.Tensor],
                        clip: tuple[float, int] | None = None) -> torch.Tensor:
    """``run(x)`` (a kernel's ``x @ W.T``), differentiable in ``x`` where autograd records one (else ``run(x)`` as it is,
    nothing added to inference). ``weight()``: the dequantized ``(N, K)`` weight, read only in backward; ``clip``: a
    static activation quantizer's ``(scale, qmax)``, outside whose codes no gradient passes. Where one is recorded is
    `records_gradient`'s to say, as for the fake-quantized path's rounding."""
    if records_gradient(x):
        return _ThroughWeight.apply(x, run, weight, clip)
    return run(x)
