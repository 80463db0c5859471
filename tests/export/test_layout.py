"""On-disk layouts of one quantized weight: kernel words when free, the tight bit stream otherwise."""

from __future__ import annotations

import pytest
import torch

from autoq.errors import AutoqError
from autoq.export.layout import KERNEL_LAYOUT, STREAM_LAYOUT, choose_layout, from_tensors, to_tensors
from autoq.quant import QuantSpec, quantize


@pytest.mark.parametrize(
    "name, n, k, layout",
    [
        ("int4-g128-asym", 8, 384, KERNEL_LAYOUT),
        ("int2-ch-asym", 8, 64, KERNEL_LAYOUT),
        ("int8-ch-sym", 8, 36, KERNEL_LAYOUT),
        ("int3-g128-asym", 8, 384, STREAM_LAYOUT),  # 10 codes in 32 bits would cost 6.7% more
        ("int6-ch-asym", 8, 40, STREAM_LAYOUT),
        ("int4-ch-asym", 8, 37, STREAM_LAYOUT),  # K not a multiple of 8: the last word is padded
    ],
)
def test_layout_choice_and_round_trip(name, n, k, layout):
    spec = QuantSpec.from_name(name)
    torch.manual_seed(0)
    qt = quantize(torch.randn(n, k), spec)
    assert choose_layout(spec, n, k) == layout
    tensors, used = to_tensors("fc", qt)
    assert used == layout
    stored = sum(t.numel() * t.element_size() for t in tensors.values())
    assert stored == spec.storage_bytes(n, k)  # the file spends exactly what the budget counted
    packed = from_tensors("fc", tensors, spec, (n, k), used)
    assert torch.equal(packed.codes(), qt.codes)
    assert torch.equal(packed.dequantize(), qt.dequantize())
    assert ("fc.zeros" in tensors) == (not spec.symmetric)


def stream(name: str = "int3-ch-asym", n: int = 8, k: int = 16) -> tuple[dict[str, torch.Tensor], QuantSpec]:
    """One weight's tensors in the bit-stream layout, as a file holds them."""
    spec = QuantSpec.from_name(name)
    torch.manual_seed(6)
    tensors, layout = to_tensors("fc", quantize(torch.randn(n, k), spec))
    assert layout == STREAM_LAYOUT
    return tensors, spec


def test_a_bit_stream_of_another_dtype_or_an_unknown_layout_is_refused_naming_it():
    """Stream codes are uint8 bytes: int8 ones of the right count are refused, not unpacked; a layout other than
    int32-k and bitstream is an error, not read as kernel words."""
    tensors, spec = stream()
    with pytest.raises(AutoqError, match="unknown storage layout 'int16-k'"):
        from_tensors("fc", tensors, spec, (8, 16), "int16-k")
    tensors["fc.qweight"] = tensors["fc.qweight"].to(torch.int8)
    with pytest.raises(AutoqError, match="torch.int8 values, not uint8 bytes"):
        from_tensors("fc", tensors, spec, (8, 16), STREAM_LAYOUT)


@pytest.mark.parametrize("zero", [-1.0, 8.0])
def test_a_zero_point_outside_the_format_is_refused(zero):
    """Zero points of int3 are whole numbers in [0, 7]: -1 and 8 are refused at load."""
    tensors, spec = stream()
    tensors["fc.zeros"] = tensors["fc.zeros"].clone()
    tensors["fc.zeros"][0, 0] = zero
    with pytest.raises(AutoqError, match=r"not whole numbers in \[0, 7\]"):
        from_tensors("fc", tensors, spec, (8, 16), STREAM_LAYOUT)


def test_an_input_scale_is_stored_in_fp32_whatever_dtype_the_method_left_it_in():
    """The file's ``<layer>.input_scale`` is fp32, as the format page says (AWQ's scale may come in fp16)."""
    from autoq.ptq.result import TransformedTensor

    torch.manual_seed(5)
    q = quantize(torch.randn(8, 32), QuantSpec.from_name("int4-g32-asym"))
    tensors, _ = to_tensors("fc", TransformedTensor(q.spec, q.codes, q.scale, q.zero, input_scale=(torch.rand(32) + 0.5).half()))
    assert tensors["fc.input_scale"].dtype == torch.float32
