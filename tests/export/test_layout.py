"""On-disk layouts of one quantized weight: kernel words when free, the tight bit stream otherwise."""

from __future__ import annotations

import pytest
import torch

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
