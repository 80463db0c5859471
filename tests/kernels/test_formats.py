"""Packed layouts of autoq.kernels.formats: round trips, the documented bit layout, QuantizedTensor conversion."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from autoq.errors import AutoqError
from autoq.kernels.formats import (
    PACKED_BITS,
    Int8Weight,
    PackedWeight,
    codes_per_word,
    pack_weight,
    packed_nbytes,
    supports_w8a8,
    supports_weight_only,
    unpack_weight,
)
from autoq.quant import QuantSpec, quantize

SPECS = [QuantSpec(b, g, s, sym) for b in PACKED_BITS for g, s in [("tensor", None), ("channel", None), ("group", 32), ("group", 64), ("group", 128)]
         for sym in (False, True)]


@st.composite
def codes_case(draw):
    bits = draw(st.sampled_from(PACKED_BITS))
    n = draw(st.integers(1, 5))
    k = draw(st.one_of(st.integers(1, 70), st.sampled_from([codes_per_word(bits) * j for j in (1, 2, 3)])))
    values = draw(st.lists(st.integers(0, (1 << bits) - 1), min_size=n * k, max_size=n * k))
    return bits, torch.tensor(values, dtype=torch.uint8).reshape(n, k)


@settings(max_examples=150, deadline=None, database=None)
@given(codes_case())
def test_pack_unpack_round_trip(case):
    bits, codes = case
    packed = pack_weight(codes, bits)
    assert packed.dtype == torch.int32
    assert packed.shape == (codes.shape[0], math.ceil(codes.shape[1] / codes_per_word(bits)))
    assert torch.equal(unpack_weight(packed, bits, codes.shape[1]), codes)


@settings(max_examples=60, deadline=None, database=None)
@given(codes_case())
def test_word_layout_matches_python_integers(case):
    """Code k of a row sits in word k // C at bit (k % C) * bits; unused high bits and trailing slots are zero."""
    bits, codes = case
    per_word = codes_per_word(bits)
    packed = pack_weight(codes, bits)
    for row, words in zip(codes.tolist(), packed.tolist()):
        for w, word in enumerate(words):
            expected = sum(c << (i * bits) for i, c in enumerate(row[w * per_word:(w + 1) * per_word]))
            assert word & 0xFFFFFFFF == expected


@pytest.mark.parametrize("rows_codes", [1, 40, 100])
def test_packing_in_blocks_of_rows_gives_the_same_words(monkeypatch, rows_codes):
    """Blocks of one row, of a few, and of more rows than there are: the words and codes of one pass."""
    import autoq.kernels.formats as formats

    gen = torch.Generator().manual_seed(0)
    for bits in PACKED_BITS:
        codes = torch.randint(0, 1 << bits, (7, 37), generator=gen, dtype=torch.uint8)
        whole = pack_weight(codes, bits)
        monkeypatch.setattr(formats, "PACK_ROWS_CODES", rows_codes)
        assert torch.equal(pack_weight(codes, bits), whole)
        assert torch.equal(unpack_weight(whole, bits, 37), codes)
        monkeypatch.undo()


def test_codes_per_word_is_documented_layout():
    assert {b: codes_per_word(b) for b in PACKED_BITS} == {2: 16, 3: 10, 4: 8, 5: 6, 6: 5, 8: 4}


def test_all_ones_fill_the_sign_bit():
    """2-bit and 4-bit words use all 32 bits: the top code lands in the int32 sign bit and still round-trips."""
    for bits in (2, 4, 8):
        codes = torch.full((2, codes_per_word(bits)), (1 << bits) - 1, dtype=torch.uint8)
        packed = pack_weight(codes, bits)
        assert int(packed[0, 0]) == -1
        assert torch.equal(unpack_weight(packed, bits, codes.shape[1]), codes)


@pytest.mark.parametrize(("bad", "match"), [
    (lambda: pack_weight(torch.full((2, 3), 8, dtype=torch.uint8), 3), r"codes out of range for 3-bit packing: expected values in \[0, 7\]"),
    (lambda: pack_weight(torch.zeros(2, 3, dtype=torch.uint8), 7), r"no packed format for 7-bit codes; choose one of \(2, 3, 4, 5, 6, 8\)"),
    (lambda: pack_weight(torch.zeros(6, dtype=torch.uint8), 4), r"codes must be 2-D \(out_features, in_features\), got shape \(6,\)"),
    (lambda: pack_weight(torch.zeros(2, 3), 4), "codes must be an integer tensor, got torch.float32"),
    (lambda: pack_weight(torch.ones(2, 3, dtype=torch.bool), 4), "codes must be an integer tensor, got torch.bool"),
    (lambda: unpack_weight(torch.zeros(2, 1, dtype=torch.int32), 4, 9), r"9 columns of 4-bit codes take 2 words a row \(8 codes a word\); got 1"),
    (lambda: unpack_weight(torch.zeros(2, 1, dtype=torch.int64), 4, 8), r"must be a 2-D int32 tensor, got torch.int64 of shape \(2, 1\)"),
])
def test_bad_input_is_an_autoq_error(bad, match):
    """Each error says what was wrong and what would be right."""
    with pytest.raises(AutoqError, match=match):
        bad()


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_from_quantized_dequantizes_exactly_like_the_quantized_tensor(spec):
    gen = torch.Generator().manual_seed(spec.bits * 31 + (spec.group_size or 0))
    n, k = 7, 203  # K not a multiple of any group or word
    w = torch.randn(n, k, generator=gen) * torch.linspace(0.1, 3.0, n)[:, None]
    qt = quantize(w, spec)
    packed = PackedWeight.from_quantized(qt)
    assert torch.equal(packed.codes(), qt.codes)
    assert torch.equal(packed.dequantize(), qt.dequantize())
    assert packed.nbytes == packed_nbytes(spec, n, k)
    assert (packed.zeros is None) == spec.symmetric
    expected_groups = {"tensor": (1, 1), "channel": (n, 1)}.get(spec.granularity, (n, math.ceil(k / (spec.group_size or 1))))
    assert tuple(packed.scales.shape) == expected_groups


def test_packed_bytes_against_counted_storage():
    """2/4/8 bits with K a multiple of the word cost exactly what QuantSpec counts; 3 bits spend 32 bits per 30."""
    for name in ("int2-g128-asym", "int4-ch-sym", "int8-g64-asym"):
        spec = QuantSpec.from_name(name)
        assert packed_nbytes(spec, 64, 256) == spec.storage_bytes(64, 256)
    spec = QuantSpec.from_name("int3-ch-sym")
    assert packed_nbytes(spec, 64, 300) == 64 * 30 * 4 + 64 * 2
    assert packed_nbytes(QuantSpec.half(), 3, 5) == 30


def test_packed_weight_validates_its_parts():
    qt = quantize(torch.randn(4, 40), QuantSpec.from_name("int4-g32-asym"))
    p = PackedWeight.from_quantized(qt)
    with pytest.raises(AutoqError, match="scales/zeros"):
        PackedWeight(p.spec, p.shape, p.qweight, p.scales[:, :1], p.zeros)
    with pytest.raises(AutoqError, match="qweight"):
        PackedWeight(p.spec, (4, 41), p.qweight, p.scales, p.zeros)
    with pytest.raises(AutoqError, match="zeros"):
        PackedWeight(p.spec, p.shape, p.qweight, p.scales, None)
    with pytest.raises(AutoqError, match=r"qweight of int4-g32-asym for shape \(4, 40\) must be int32 \(4, 5\), got torch.int64 \(4, 5\)"):
        PackedWeight(p.spec, p.shape, p.qweight.long(), p.scales, p.zeros)
    with pytest.raises(AutoqError, match=r"scales/zeros of int4-g32-asym for shape \(4, 40\) must have shape \(4, 2\)"):
        PackedWeight(p.spec, p.shape, p.qweight, p.scales, p.zeros[:, :1])  # the zeros' shape alone
    sym = PackedWeight.from_quantized(quantize(torch.randn(4, 40), QuantSpec.from_name("int4-g32-sym")))
    with pytest.raises(AutoqError, match="int4-g32-sym: zeros must be None"):
        PackedWeight(sym.spec, sym.shape, sym.qweight, sym.scales, p.zeros)
    with pytest.raises(AutoqError, match=r"fp16 has no weight-only packed format; packed bits are \(2, 3, 4, 5, 6, 8\)"):
        PackedWeight(QuantSpec.half(), p.shape, p.qweight, p.scales, p.zeros)


@pytest.mark.parametrize("name", ["int8-ch-sym", "int8-tensor-sym"])
def test_int8_weight_from_quantized(name):
    spec = QuantSpec.from_name(name)
    qt = quantize(torch.randn(6, 50, generator=torch.Generator().manual_seed(3)), spec)
    w = Int8Weight.from_quantized(qt)
    assert w.qweight.dtype == torch.int8
    assert torch.equal(w.dequantize(), qt.dequantize())
    assert w.nbytes == 6 * 50 + w.scales.numel() * 2


def test_int8_codes_out_of_range_or_not_integers_are_refused_not_wrapped():
    """Codes 256 and 300 wrapped to -128 and -84, and float codes 0.7 and 1.9 were cut to -128 and -127, unsaid."""
    spec, scales = QuantSpec.from_name("int8-ch-sym"), torch.ones(1)
    with pytest.raises(AutoqError, match=r"codes must be in \[0, 255\] \(zero point 128\), got 0 to 300"):
        Int8Weight.from_codes(spec, torch.tensor([[0, 255, 256, 300]]), scales)
    with pytest.raises(AutoqError, match="codes must be integers in \\[0, 255\\], got dtype torch.float32"):
        Int8Weight.from_codes(spec, torch.tensor([[0.7, 1.9]]), scales)
    for dtype in (torch.bool, torch.complex64):  # True and 1+0j would be stored as code -127
        with pytest.raises(AutoqError, match=f"codes must be integers in \\[0, 255\\], got dtype {dtype}"):
            Int8Weight.from_codes(spec, torch.ones(1, 2, dtype=dtype), scales)
    with pytest.raises(AutoqError, match=r"got 1 to 256"):  # the first code past the range, alone
        Int8Weight.from_codes(spec, torch.tensor([[256, 1]]), scales)
    assert Int8Weight.from_codes(spec, torch.tensor([[0, 128, 255]], dtype=torch.uint8), scales).qweight.tolist() == [[-128, 0, 127]]


def test_support_predicates():
    assert supports_w8a8(QuantSpec.from_name("int8-ch-sym"))
    assert not supports_w8a8(QuantSpec.from_name("int8-ch-asym"))
    assert not supports_w8a8(QuantSpec.from_name("int8-g128-sym"))
    assert supports_weight_only(QuantSpec.from_name("int3-g64-asym"))
    assert not supports_weight_only(QuantSpec.half())
    with pytest.raises(AutoqError, match="W8A8"):
        Int8Weight.from_quantized(quantize(torch.randn(3, 8), QuantSpec.from_name("int4-ch-sym")))


def test_a_packed_weight_is_checked_without_allocating(monkeypatch):
    """QuantLinear builds a PackedWeight in every forward; its shape check allocated one float per scale group (524,288
    for an int4-g32 4096 x 4096 layer), more host work than the GPU kernel it wraps."""
    spec = QuantSpec(4, "group", 32, False)
    packed = PackedWeight.from_quantized(quantize(torch.randn(64, 96), spec))

    def refuse(*args, **kwargs):
        raise AssertionError("allocated")

    monkeypatch.setattr(torch, "zeros", refuse)
    again = PackedWeight(packed.spec, packed.shape, packed.qweight, packed.scales, packed.zeros)
    assert again.shape == (64, 96)
    monkeypatch.undo()
    with pytest.raises(AutoqError, match=r"must have shape \(64, 3\)"):
        PackedWeight(packed.spec, packed.shape, packed.qweight, packed.scales[:, :2], packed.zeros)


def test_an_int8_weight_for_the_w8a8_kernel_validates_its_parts():
    """The kernel reads symmetric codes as ``code - 128`` with one scale per row or per tensor: anything else is refused
    before it reaches a launch (these guards ran in no test)."""
    codes, scales = torch.zeros(4, 8, dtype=torch.int8), torch.ones(4, dtype=torch.float16)
    Int8Weight(QuantSpec.from_name("int8-ch-sym"), codes, scales)
    for name in ("int8-ch-asym", "int8-g32-sym", "int4-ch-sym"):
        with pytest.raises(AutoqError, match="W8A8 needs a symmetric 8-bit per-channel or per-tensor weight"):
            Int8Weight(QuantSpec.from_name(name), codes, scales)
    for bad in (codes.to(torch.int32), codes.reshape(-1)):
        with pytest.raises(AutoqError, match="2-D int8 tensor"):
            Int8Weight(QuantSpec.from_name("int8-ch-sym"), bad, scales)
    with pytest.raises(AutoqError, match=r"scales must have shape \(1,\)"):
        Int8Weight(QuantSpec.from_name("int8-tensor-sym"), codes, scales)


@pytest.mark.parametrize("name, scales", [("int8-tensor-sym", (1,)), ("int8-ch-sym", (4,))])
def test_an_empty_int8_weight_has_a_scale_per_tensor_or_per_row(name, scales):
    """The W8A8 layout without data (what compiling a kernel needs): one scale per tensor or one a row."""
    w = Int8Weight.empty(QuantSpec.from_name(name), (4, 8))
    assert tuple(w.scales.shape) == scales and tuple(w.qweight.shape) == (4, 8)


def test_a_copy_to_a_device_is_new_memory_for_every_part_and_keeps_the_split_counters():
    """``to(device, copy=True)`` copies every tensor, scales included, as ``Tensor.to`` does; the split launches'
    counters travel with the weight (without them a split launch zeroes its own)."""
    packed = PackedWeight.from_quantized(quantize(torch.randn(4, 40), QuantSpec.from_name("int4-g32-asym")))
    copied = packed.to("cpu", copy=True)
    for name in ("qweight", "scales", "zeros", "counters"):
        a, b = getattr(packed, name), getattr(copied, name)
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr(), name
    int8 = Int8Weight.from_quantized(quantize(torch.randn(4, 40), QuantSpec.from_name("int8-ch-sym")))
    again = int8.to("cpu", copy=True)
    assert torch.equal(again.scales, int8.scales) and again.scales.data_ptr() != int8.scales.data_ptr()
    assert again.qweight.data_ptr() != int8.qweight.data_ptr()
