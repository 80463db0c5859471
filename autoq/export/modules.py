"""`QuantLinear`: a linear layer whose weight stays packed and runs on autoq's kernels.

``forward`` calls :func:`autoq.kernels.ops.wq_linear`: the Triton weight-only kernel
for fp16/bf16 activations on CUDA, and otherwise the plain-torch path that
dequantizes (``scale * (code - zero)`` in fp32, exactly the search's simulated
quantization) and multiplies in fp32.
"""

from __future__ import annotations

import torch
from torch import nn

from autoq.kernels.formats import PackedWeight, split_counters


def _calls_forward(module: nn.Module, args: tuple) -> None:
    """A pre-hook that does nothing but be there: torch's fused fast paths (``TransformerEncoderLayer`` in eval mode)
    read their linear layers' ``weight`` and never call them unless a submodule has a hook, so without it a loaded
    layer's kernel, and its activation quantization, would not run. The search's own hooks keep them off there too."""
    return None


class QuantLinear(nn.Module):
    """``y = x @ dequant(W).T + b`` with ``W`` held as a `PackedWeight` (int32 codes, fp16 scales/zeros)."""

    stored_floats: tuple[str, ...] = ("scales", "zeros", "input_scale")  # float buffers that are part of the quantization

    def __init__(self, packed: PackedWeight, bias: torch.Tensor | None = None, backend: str = "auto",
                 input_scale: torch.Tensor | None = None, compute_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.spec = packed.spec
        self.out_features, self.in_features = packed.shape
        self.backend = backend  # "auto" (Triton on CUDA for fp16/bf16), "triton" or "torch"
        self.register_buffer("qweight", packed.qweight)
        self.register_buffer("scales", packed.scales)
        self.register_buffer("zeros", packed.zeros)
        # the kernels' scratch for launches split over K (zero between launches), not saved: one layer's calls share it,
        # so one layer must not run on two streams at once
        counters = packed.counters if packed.counters is not None else split_counters(self.out_features, packed.qweight.device)
        self.register_buffer("split_counters", counters, persistent=False)
        # AWQ: the codes are those of W diag(s); the input is divided by s (fp32, (in,)) before the kernel
        self.register_buffer("input_scale", None if input_scale is None else input_scale.float().to(packed.qweight.device))
        # as the replaced layer's: a frozen model's quantized layers came back with trainable biases
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=bias.requires_grad) if bias is not None else None
        # the dtype `weight` is read in (the replaced layer's: a bf16 model's T5 casts its input to `wo.weight.dtype`),
        # following .half()/.to(dtype) as an ordinary layer's weight would
        self.register_buffer("compute_dtype_probe", torch.zeros(0, dtype=compute_dtype, device=packed.qweight.device), persistent=False)
        self.register_forward_pre_hook(_calls_forward)

    def _apply(self, fn, recurse: bool = True):  # type: ignore[no-untyped-def]
        """``model.to(torch.bfloat16)``, ``.half()``, ``.float()`` change the compute dtype (the bias), never the stored
        quantization: fp16 scales and zero points rounded to bf16, or an fp32 AWQ input scale rounded to 16 bits, would
        no longer be what the search simulated. Devices still move (as bitsandbytes' layers do)."""
        stored = {name: getattr(self, name) for name in self.stored_floats if getattr(self, name) is not None}
        super()._apply(fn, recurse)
        for name, before in stored.items():
            after = getattr(self, name)
            if after.dtype != before.dtype:
                setattr(self, name, before.to(after.device))
        return self

    @property
    def packed(self) -> PackedWeight:
        """The weight in the kernel layout, on this module's current device."""
        return PackedWeight(self.spec, (self.out_features, self.in_features), self.qweight, self.scales, self.zeros, self.split_counters)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized ``(out, in)`` weight in the module's compute dtype, read-only and rebuilt on each read: for code
        that reads a linear layer's ``weight`` rather than calling it (torch's ``TransformerEncoderLayer`` checks its
        layers' weights before every forward, then calls them: see `_calls_forward`). ``forward`` never uses it."""
        return self.dequantized_weight().to(self.compute_dtype_probe.dtype)

    def dequantized_weight(self) -> torch.Tensor:
        """The weight as fp32 ``(out, in)`` in the layer's own input coordinates: what the search simulated."""
        w = self.packed.dequantize(torch.float32)
        return w if self.input_scale is None else w / self.input_scale[None, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from autoq.kernels.ops import check_activations, wq_linear

        if self.input_scale is not None:  # checked before the division, whose error was torch's broadcasting one (wq_linear checks too)
            check_activations(x, self.in_features)
            x = (x.float() / self.input_scale).to(x.dtype)
        y = wq_linear(x, self.packed, backend=self.backend)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, format={self.spec.name}, bias={self.bias is not None}"
