"""Roofline latency of one weight-only GEMM ``y[M, N] = x[M, K] @ W[N, K]^T``.

``time = max(bytes / bandwidth, 2*M*N*K / fp16 peak) + launch overhead``, where
bytes = the weight in the kernels' layout with its fp16 scales and zero points
(``kernels.formats.packed_nbytes``: 3/5/6-bit codes padded into 32-bit words, up to
7% above ``QuantSpec.storage_bytes``) plus the fp16 activations read and written.
Weight-only kernels dequantize to fp16 in registers and use fp16 tensor cores,
so the compute roof is the fp16 peak for every format; W8A8 is two kernels (the
activations quantized to int8 rows, then the int8 GEMM under the int8 peak): two
launches and the activations' round trip. It is an ideal: real kernels reach a
fraction of it, so the result is labelled as an estimate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from autoq.latency.devices import DevicePreset, get_device
from autoq.quant import QuantSpec


def gemm_bytes(n: int, k: int, spec: QuantSpec, batch: int, int8_activations: bool = False) -> int:
    """Bytes moved: the weight as the kernels read it + fp16 params, the input ``(batch, k)`` and the fp16 output
    ``(batch, n)``. With ``int8_activations`` (W8A8) the input is read in fp16, written as int8 rows with an fp32 scale
    each by the quantizing kernel, and read again by the GEMM."""
    from autoq.kernels.formats import packed_nbytes  # plain torch: the kernels' layout, not Triton

    weight = packed_nbytes(spec, n, k)
    if int8_activations:
        return weight + 2 * batch * k + 2 * (batch * k + 4 * batch) + 2 * batch * n
    return weight + 2 * batch * k + 2 * batch * n


def roofline_us(n: int, k: int, spec: QuantSpec, batch: int, device: DevicePreset, int8_activations: bool = False) -> float:
    """Estimated microseconds for one layer of ``n`` outputs and ``k`` inputs at ``batch`` rows; with ``int8_activations``
    (W8A8: two kernels) the compute roof is the int8 peak and the launch overhead is paid twice."""
    memory_s = gemm_bytes(n, k, spec, batch, int8_activations) / (device.bandwidth_gbs * 1e9)
    peak = device.int8_tops if int8_activations else device.fp16_tflops
    compute_s = 2.0 * n * k * batch / (peak * 1e12)
    return max(memory_s, compute_s) * 1e6 + device.launch_us * (2 if int8_activations else 1)


@dataclass(frozen=True)
class RooflineLatency:
    """Per-layer latency from a device preset's published peaks (no measurement)."""

    device: DevicePreset
    batch: int = 1
    note: str = field(default="", compare=False)  # why it stands where a measured table was asked for ("" otherwise)

    @classmethod
    def named(cls, name: str, batch: int = 1, note: str = "") -> RooflineLatency:
        return cls(get_device(name), batch, note)

    @property
    def source(self) -> str:
        return f"estimate:roofline:{self.device.name}"

    @property
    def is_estimate(self) -> bool:
        return True

    def layer_us(self, out_features: int, in_features: int, spec: QuantSpec, int8_activations: bool = False) -> float:
        return roofline_us(out_features, in_features, spec, self.batch, self.device, int8_activations)
