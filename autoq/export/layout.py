"""How one quantized weight is stored in the exported safetensors file, and read back.

In memory, a loaded layer always holds the kernels' layout (`autoq.kernels.PackedWeight`:
int32 words along K, fp16 scales and zeros). On disk each layer takes one of two
layouts, chosen so the file costs exactly what the budget counted:

* ``int32-k``: the kernel layout itself, when it spends no extra byte (2, 4 and 8
  bits with K a multiple of the codes per word, and tiny layers of other widths whose
  padding rounds to the same bytes). Loading is a plain copy.
* ``bitstream``: the tight little-endian bit stream of `autoq.quant.pack_codes`
  (``ceil(N*K*bits/8)`` bytes, what ``QuantSpec.storage_bytes`` counts), repacked into
  the kernel layout at load. Used where the kernel layout costs more: 3, 5 and 6 bits,
  whose words spend 32 bits on 30 bits of codes (+6.7%), and K not a multiple of the
  word. The config's ``layout`` says which; a reader never infers it.

Tensors per layer: ``<layer>.qweight`` (int32 ``(N, ceil(K/C))`` or uint8 stream),
``<layer>.scales`` (fp16 ``(N, G)``, ``(N, 1)`` or ``(1, 1)``) and, for asymmetric
formats, ``<layer>.zeros`` (fp16, same shape). AWQ layers add ``<layer>.input_scale``
(fp32 ``(K,)``): the codes are those of ``W diag(s)`` and the layer divides its input by ``s``.
"""

from __future__ import annotations

import torch

from autoq.errors import AutoqError
from autoq.kernels.formats import PackedWeight, kernel_params, pack_weight, packed_nbytes
from autoq.ptq.result import input_scale_of
from autoq.quant import QuantizedTensor, QuantSpec, pack_codes, unpack_codes

KERNEL_LAYOUT = "int32-k"
STREAM_LAYOUT = "bitstream"


def choose_layout(spec: QuantSpec, n: int, k: int) -> str:
    """The kernel layout when it is as small as the counted storage, else the bit stream."""
    return KERNEL_LAYOUT if packed_nbytes(spec, n, k) == spec.storage_bytes(n, k) else STREAM_LAYOUT


def to_tensors(name: str, qt: QuantizedTensor) -> tuple[dict[str, torch.Tensor], str]:
    """The safetensors entries of one quantized layer, and the layout they use."""
    n, k = qt.shape
    layout = choose_layout(qt.spec, n, k)
    qweight = pack_weight(qt.codes, qt.spec.bits) if layout == KERNEL_LAYOUT else pack_codes(qt.codes, qt.spec.bits)
    scales, zeros = kernel_params(qt)
    tensors = {f"{name}.qweight": qweight.contiguous(), f"{name}.scales": scales.contiguous()}
    if zeros is not None:
        tensors[f"{name}.zeros"] = zeros.contiguous()
    input_scale = input_scale_of(qt)
    if input_scale is not None:
        tensors[f"{name}.input_scale"] = input_scale.float().contiguous()
    return tensors, layout


def from_tensors(name: str, tensors: dict[str, torch.Tensor], spec: QuantSpec, shape: tuple[int, int], layout: str) -> PackedWeight:
    """Rebuild the kernel layout of one layer from its safetensors entries."""
    n, k = shape
    wanted = ("qweight", "scales") if spec.symmetric else ("qweight", "scales", "zeros")
    lacking = [f"{name}.{part}" for part in wanted if f"{name}.{part}" not in tensors]
    if lacking:
        why = f" ({spec.name} is asymmetric: it stores zero points)" if lacking == [f"{name}.zeros"] else ""
        raise AutoqError(f"the exported weights lack {lacking[0]!r}{why}; the export is incomplete or from another model")
    qweight, scales, zeros = tensors[f"{name}.qweight"], tensors[f"{name}.scales"], tensors.get(f"{name}.zeros")
    if zeros is not None and spec.symmetric:
        raise AutoqError(f"the exported weights hold {name}.zeros, zero points the config's symmetric {spec.name} has none of: the config "
                         "and the weights are of different exports")
    _check_params(name, spec, scales, zeros)
    if layout == STREAM_LAYOUT:
        expected = (n * k * spec.bits + 7) // 8
        if qweight.dtype != torch.uint8 or qweight.numel() != expected:
            got = f"{qweight.numel()} bytes" if qweight.dtype == torch.uint8 else f"{qweight.dtype} values, not uint8 bytes"
            raise AutoqError(f"layer {name!r}: its stored codes are {got}, where {spec.name} of {n} x {k} takes {expected} bytes "
                             f"({STREAM_LAYOUT} layout): the config and the weights are of different exports")
        codes = unpack_codes(qweight, spec.bits, n * k).reshape(n, k)
        qweight = pack_weight(codes, spec.bits)
    elif layout != KERNEL_LAYOUT:
        raise AutoqError(f"layer {name!r}: unknown storage layout {layout!r} (expected {KERNEL_LAYOUT} or {STREAM_LAYOUT})")
    try:
        return PackedWeight(spec, (n, k), qweight, scales, zeros)
    except AutoqError as exc:
        raise AutoqError(f"layer {name!r} of the export: {exc}; the config and the weights are of different exports (or edited)") from None


def _check_params(name: str, spec: QuantSpec, scales: torch.Tensor, zeros: torch.Tensor | None) -> None:
    """Scales and zero points as the format stores them (fp16; zero points whole numbers in ``[0, 2^b - 1]``): others
    loaded and gave other outputs than the search's without a word (a zero point of 99 in int3)."""
    wrong = [f"{name}.{part} is {t.dtype}" for part, t in (("scales", scales), ("zeros", zeros)) if t is not None and t.dtype != torch.float16]
    if not wrong and zeros is not None:
        z = zeros.float()
        if not bool(((z == z.round()) & (z >= 0) & (z <= 2**spec.bits - 1)).all()):
            wrong = [f"{name}.zeros holds values that are not whole numbers in [0, {2**spec.bits - 1}]"]
    if wrong:
        raise AutoqError(f"the export's {wrong[0]}, where {spec.name} stores fp16 scales and zero points in [0, {2**spec.bits - 1}]: the "
                         "file is damaged or edited; export again")
