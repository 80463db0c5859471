"""`ActQuantLinear`: an exported layer that quantizes its input too (W8A8 and the other activation formats).

The search simulates such a layer as ``linear(fake_quant(x / s), W_stored)``: SmoothQuant's
per-input-channel scale ``s`` (absent for plain round-to-nearest), then the activation
format (static per-tensor from the calibrated range, or dynamic per-token), then the
stored weight. ``forward`` runs exactly that on the torch path for an fp32 model; in a
bf16 or fp16 model both divide by ``s`` in fp32, then the search rounds the scaled input,
its codes and the weight to the model's dtype, where ``forward`` computes in fp32: a
layer's output is one rounding of the model's dtype from what was scored. On CUDA with fp16/bf16
inputs, a symmetric int8 activation format and a symmetric int8 weight (per channel or
per tensor), it runs autoq's W8A8 kernel instead: the same int8 codes, multiplied with
int32 accumulation.
"""

from __future__ import annotations

import torch

from autoq.export.modules import QuantLinear
from autoq.kernels.capability import int8_dot_usable
from autoq.kernels.formats import Int8Weight, PackedWeight, supports_w8a8
from autoq.quant.activation import ActRange, ActSpec, fake_quantize_activation


class ActQuantLinear(QuantLinear):
    """``y = quant(x / s) @ dequant(W).T + b``: a `QuantLinear` (same buffers) whose input is quantized too."""

    stored_floats = (*QuantLinear.stored_floats, "act_lo_hi")

    def __init__(self, packed: PackedWeight, act: ActSpec, act_range: ActRange | None = None, bias: torch.Tensor | None = None,
                 input_scale: torch.Tensor | None = None, backend: str = "auto", compute_dtype: torch.dtype = torch.float32) -> None:
        super().__init__(packed, bias, backend, input_scale, compute_dtype)
        self.act, self.act_range = act, act_range
        # the static range in the state dict too (float64: the exported floats exactly), so that loading another
        # export's state moves it; `act_range` keeps it as floats, read without a device sync in every forward
        lo_hi = None if act_range is None else torch.tensor([act_range.lo, act_range.hi], dtype=torch.float64, device=packed.qweight.device)
        self.register_buffer("act_lo_hi", lo_hi)
        self._int8: Int8Weight | None = None  # the kernel's int8 layout, built on first use (and again after a move or a load)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        """After ``load_state_dict``: the range and the int8 layout follow the loaded codes, scales and range."""
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.act_lo_hi is not None:
            self.act_range = ActRange(float(self.act_lo_hi[0]), float(self.act_lo_hi[1]))
        self._int8 = None

    def _int8_path(self, x: torch.Tensor) -> bool:
        if self.backend == "torch" or not (self.act.bits == 8 and self.act.symmetric and supports_w8a8(self.spec)):
            return False
        if self.backend == "triton":
            return True
        # below compute capability 8.0 the int8 GEMM does not compile: the fake-quantized path, as on the CPU
        return x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) and int8_dot_usable(x.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from autoq.kernels.ops import check_activations

        check_activations(x, self.in_features)
        if self.input_scale is not None:
            x = (x.float() / self.input_scale).to(x.dtype)
        if self._int8_path(x):
            y = self._int8_forward(x)
        else:
            xq = fake_quantize_activation(x.float(), self.act, self.act_range)
            y = (xq @ self.packed.dequantize(torch.float32).T).to(x.dtype)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def _int8_forward(self, x: torch.Tensor) -> torch.Tensor:
        from autoq.kernels.gradient import with_input_gradient
        from autoq.kernels.ops import int8_matmul, quantize_tokens

        if self._int8 is None or self._int8.qweight.device != self.qweight.device:
            self._int8 = Int8Weight.from_codes(self.spec, self.packed.codes(), self.packed.scales)
        weight = self._int8
        x2 = x.reshape(-1, x.shape[-1])
        static_scale = None
        if self.act.static:  # one calibrated scale for every row, codes as the simulation rounds them (one kernel launch)
            assert self.act_range is not None
            static_scale = max(max(abs(self.act_range.lo), abs(self.act_range.hi)) / 127.0, 1e-8)

        def run(x2: torch.Tensor) -> torch.Tensor:
            q, q_scale = quantize_tokens(x2, self.backend, static_scale=static_scale)
            return int8_matmul(q, q_scale, weight, x.dtype, self.backend)

        # the kernels have no backward: the fake-quantized path's straight-through gradient, clipped where the static range clips
        clip = None if static_scale is None else (static_scale, 127)
        return with_input_gradient(x2, run, weight.dequantize, clip).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, format={self.spec.name}+{self.act.name}, "
                f"smoothed={self.input_scale is not None}, bias={self.bias is not None}")
