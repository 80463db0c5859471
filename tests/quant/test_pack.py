"""Round trips and bit layout of autoq.quant.pack_codes / unpack_codes."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from autoq.quant import pack_codes, unpack_codes

ALL_BITS = (1, 2, 3, 4, 5, 6, 7, 8)


def reference_pack(codes: list[int], bits: int) -> bytes:
    """Little-endian bit stream built with Python integers: code i at bits [i*b, (i+1)*b)."""
    stream = 0
    for i, c in enumerate(codes):
        stream |= c << (i * bits)
    return stream.to_bytes(math.ceil(len(codes) * bits / 8), "little")


@st.composite
def codes_and_bits(draw, max_len: int = 300):
    bits = draw(st.sampled_from(ALL_BITS))
    n = draw(st.one_of(st.sampled_from([0, 1, 7, 8, 9, 15, 17]), st.integers(0, max_len)))
    codes = draw(st.lists(st.integers(0, (1 << bits) - 1), min_size=n, max_size=n))
    return bits, codes


@settings(max_examples=200, deadline=None, database=None)
@given(codes_and_bits())
def test_round_trip_1d(case):
    bits, codes = case
    t = torch.tensor(codes, dtype=torch.uint8)
    packed = pack_codes(t, bits)
    assert packed.dtype == torch.uint8
    assert packed.dim() == 1
    assert packed.numel() == math.ceil(len(codes) * bits / 8)
    out = unpack_codes(packed, bits, len(codes))
    assert out.dtype == torch.uint8
    assert out.shape == (len(codes),)
    assert out.tolist() == codes


@settings(max_examples=150, deadline=None, database=None)
@given(codes_and_bits(max_len=120))
def test_layout_matches_reference_bit_stream(case):
    bits, codes = case
    packed = pack_codes(torch.tensor(codes, dtype=torch.int64), bits)
    assert bytes(packed.tolist()) == reference_pack(codes, bits)


@settings(max_examples=150, deadline=None, database=None)
@given(codes_and_bits(max_len=120), st.sampled_from([8, 16, 24, 64]))
def test_packing_in_steps_gives_the_same_stream(case, chunk):
    """The steps meet at whole bytes (a multiple of 8 codes): any step size gives the one stream, and reads back."""
    bits, codes = case
    packed = pack_codes(torch.tensor(codes, dtype=torch.uint8), bits, chunk=chunk)
    assert bytes(packed.tolist()) == reference_pack(codes, bits)
    assert unpack_codes(packed, bits, len(codes), chunk=chunk).tolist() == codes


def test_a_step_that_is_not_whole_bytes_is_refused():
    with pytest.raises(ValueError, match="multiple of 8"):
        pack_codes(torch.zeros(20, dtype=torch.uint8), 3, chunk=12)
    with pytest.raises(ValueError, match="multiple of 8"):
        unpack_codes(torch.zeros(20, dtype=torch.uint8), 3, 20, chunk=0)
    with pytest.raises(ValueError, match="positive multiple of 8 codes, got 0"):
        pack_codes(torch.zeros(20, dtype=torch.uint8), 3, chunk=0)


def test_boolean_codes_are_refused_as_not_integers():
    """A bool mask is not codes: it would pack as 0s and 1s whatever the bit width meant."""
    with pytest.raises(ValueError, match="codes must be an integer tensor, got torch.bool"):
        pack_codes(torch.tensor([True, False, True]), 1)


@pytest.mark.parametrize(("bits", "count"), [(3, 3), (5, 1), (8, 2)])
def test_a_stream_a_byte_short_is_refused_saying_how_many_bytes_it_needs(bits, count):
    """``count`` codes take ceil(count * bits / 8) bytes, the last one partly padding: one byte fewer is refused."""
    packed = pack_codes(torch.ones(count, dtype=torch.uint8), bits)
    needed = math.ceil(count * bits / 8)
    assert packed.numel() == needed
    with pytest.raises(ValueError, match=rf"^{count} codes of {bits} bits need {needed} bytes, got {needed - 1}$"):
        unpack_codes(packed[:-1], bits, count)


@settings(max_examples=100, deadline=None, database=None)
@given(
    bits=st.sampled_from(ALL_BITS),
    rows=st.integers(0, 13),
    cols=st.integers(0, 37),
    data=st.data(),
)
def test_round_trip_2d(bits, rows, cols, data):
    n = rows * cols
    flat = data.draw(st.lists(st.integers(0, (1 << bits) - 1), min_size=n, max_size=n))
    codes = torch.tensor(flat, dtype=torch.uint8).reshape(rows, cols)
    packed = pack_codes(codes, bits)
    assert packed.numel() == math.ceil(n * bits / 8)
    out = unpack_codes(packed, bits, n).reshape(rows, cols)
    assert torch.equal(out, codes)


@pytest.mark.parametrize("bits", ALL_BITS)
def test_full_code_range_round_trips(bits):
    # Every representable code at once, length deliberately not a multiple of 8.
    codes = torch.arange(1 << bits, dtype=torch.int64).repeat(3)[:-1]
    packed = pack_codes(codes, bits)
    assert packed.numel() == math.ceil(codes.numel() * bits / 8)
    assert torch.equal(unpack_codes(packed, bits, codes.numel()).long(), codes)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.int64])
def test_accepts_integer_dtypes(dtype):
    codes = torch.tensor([[3, 0, 1], [2, 2, 3]], dtype=dtype)
    packed = pack_codes(codes, 2)
    assert unpack_codes(packed, 2, 6).tolist() == [3, 0, 1, 2, 2, 3]


def test_hand_written_layout_bits3():
    # codes 1, 2, 3 at 3 bits: stream (LSB first) = 1 | 2<<3 | 3<<6 = 1 + 16 + 192 = 209;
    # bit 8 (MSB of the third code) is 0, and the rest of byte 1 is zero padding.
    packed = pack_codes(torch.tensor([1, 2, 3]), 3)
    assert packed.tolist() == [0b11010001, 0]
    assert packed.tolist() == [209, 0]


def test_hand_written_layout_spills_into_second_byte():
    # 7, 7, 7 at 3 bits = nine one-bits: 0xFF then 0x01.
    assert pack_codes(torch.tensor([7, 7, 7]), 3).tolist() == [255, 1]
    # 31, 1 at 5 bits: 31 | 1<<5 = 63, second byte is padding.
    assert pack_codes(torch.tensor([31, 1]), 5).tolist() == [63, 0]
    # 1-bit codes: bit i of the byte is code i.
    assert pack_codes(torch.tensor([1, 0, 0, 0, 0, 0, 0, 1, 1]), 1).tolist() == [129, 1]
    # 4-bit codes: the first code is the low nibble.
    assert pack_codes(torch.tensor([0xA, 0x5, 0xF]), 4).tolist() == [0x5A, 0x0F]


def test_empty_and_single():
    assert pack_codes(torch.tensor([], dtype=torch.uint8), 4).numel() == 0
    assert unpack_codes(torch.tensor([], dtype=torch.uint8), 4, 0).numel() == 0
    p = pack_codes(torch.tensor([5]), 3)
    assert p.tolist() == [5]
    assert unpack_codes(p, 3, 1).tolist() == [5]


def test_unpack_ignores_trailing_bytes():
    codes = [1, 2, 3, 0, 3]
    packed = pack_codes(torch.tensor(codes), 2)
    longer = torch.cat([packed, torch.tensor([255, 255], dtype=torch.uint8)])
    assert unpack_codes(longer, 2, len(codes)).tolist() == codes


@pytest.mark.parametrize("bits", ALL_BITS)
def test_out_of_range_codes_raise(bits):
    with pytest.raises(ValueError):
        pack_codes(torch.tensor([0, 1 << bits], dtype=torch.int64), bits)
    with pytest.raises(ValueError):
        pack_codes(torch.tensor([0, -1], dtype=torch.int64), bits)
    # the largest valid code is accepted
    pack_codes(torch.tensor([(1 << bits) - 1], dtype=torch.int64), bits)


@pytest.mark.parametrize("bits", [0, 9, 16, -1])
def test_invalid_bit_width_raises(bits):
    with pytest.raises(ValueError):
        pack_codes(torch.tensor([0]), bits)
    with pytest.raises(ValueError):
        unpack_codes(torch.tensor([0], dtype=torch.uint8), bits, 1)


def test_unpack_too_few_bytes_raises():
    packed = pack_codes(torch.tensor([1, 2, 3]), 3)  # 2 bytes
    with pytest.raises(ValueError):
        unpack_codes(packed, 3, 6)  # needs 3 bytes
    with pytest.raises(ValueError):
        unpack_codes(packed[:1], 3, 3)
