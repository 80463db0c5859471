"""QuantSpec: bit accounting, names, validation."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
import torch
from spec_cases import GROUPS, INT_BITS, all_int_specs

from autoq.errors import AutoqError
from autoq.quant import QuantSpec, pack_codes, quantize

# ---------------------------------------------------------------- bit accounting


def test_int4_g128_asym_hand_computed():
    spec = QuantSpec(4, "group", 128, symmetric=False)
    # 200 inputs -> ceil(200/128) = 2 groups per row, each with fp16 scale + fp16 zero
    expected = 64 * 200 * 4 + 64 * 2 * 2 * 16
    assert expected == 55296
    assert spec.n_param_groups(64, 200) == 128
    assert spec.storage_bits(64, 200) == expected
    assert spec.bits_per_weight(64, 200) == pytest.approx(expected / (64 * 200))


def test_int4_g128_sym_counts_one_fp16_per_group():
    spec = QuantSpec(4, "group", 128, symmetric=True)
    assert spec.storage_bits(64, 200) == 64 * 200 * 4 + 64 * 2 * 16
    asym = QuantSpec(4, "group", 128, symmetric=False)
    assert asym.storage_bits(64, 200) - spec.storage_bits(64, 200) == 64 * 2 * 16


@pytest.mark.parametrize(
    "spec, out_f, in_f, expected",
    [
        (QuantSpec(4, "tensor"), 64, 200, 64 * 200 * 4 + 2 * 16),
        (QuantSpec(4, "tensor", symmetric=True), 64, 200, 64 * 200 * 4 + 16),
        (QuantSpec(3, "tensor"), 7, 45, 7 * 45 * 3 + 32),
        (QuantSpec(8, "channel"), 64, 200, 64 * 200 * 8 + 64 * 32),
        (QuantSpec(8, "channel", symmetric=True), 64, 200, 64 * 200 * 8 + 64 * 16),
        (QuantSpec(2, "channel"), 7, 45, 7 * 45 * 2 + 7 * 32),
        (QuantSpec(5, "group", 32), 7, 45, 7 * 45 * 5 + 7 * 2 * 32),
        (QuantSpec(6, "group", 64, True), 3, 129, 3 * 129 * 6 + 3 * 3 * 16),
        (QuantSpec(4, "group", 128), 10, 128, 10 * 128 * 4 + 10 * 1 * 32),
        (QuantSpec(4, "group", 128), 10, 129, 10 * 129 * 4 + 10 * 2 * 32),
        (QuantSpec(4, "group", 32), 1, 1, 4 + 32),
    ],
)
def test_storage_bits_cases(spec, out_f, in_f, expected):
    assert spec.storage_bits(out_f, in_f) == expected


def test_bits_per_weight_large_square():
    assert QuantSpec(4, "group", 128).bits_per_weight(4096, 4096) == pytest.approx(4.25)
    assert QuantSpec(4, "group", 32, True).bits_per_weight(4096, 4096) == pytest.approx(4.5)
    assert QuantSpec(3, "group", 64).bits_per_weight(4096, 4096) == pytest.approx(3.5)
    assert QuantSpec(8, "channel").bits_per_weight(4096, 4096) == pytest.approx(8 + 32 / 4096)


def test_fp16_accounting():
    half = QuantSpec.half()
    assert half.is_half
    assert half.n_param_groups(64, 200) == 0
    assert half.storage_bits(64, 200) == 64 * 200 * 16
    assert half.bits_per_weight(64, 200) == 16.0
    assert half.storage_bytes(64, 200) == 64 * 200 * 2
    assert half.storage_bytes(7, 45) == 7 * 45 * 2


@pytest.mark.parametrize(
    "spec, out_f, in_f, expected",
    [
        # 15 codes * 3 bits = 45 bits -> 6 bytes; one (scale, zero) = 4 bytes
        (QuantSpec(3, "tensor"), 3, 5, 6 + 4),
        (QuantSpec(3, "tensor", symmetric=True), 3, 5, 6 + 2),
        # 7*45*5 = 1575 bits -> 197 bytes; 7 rows * 2 groups * 4 bytes
        (QuantSpec(5, "group", 32), 7, 45, 197 + 56),
        (QuantSpec(4, "channel"), 64, 200, 64 * 200 // 2 + 64 * 4),
        (QuantSpec(2, "group", 128, True), 1, 3, 1 + 2),
    ],
)
def test_storage_bytes_cases(spec, out_f, in_f, expected):
    assert spec.storage_bytes(out_f, in_f) == expected


@pytest.mark.parametrize("spec", all_int_specs(), ids=lambda s: s.name)
@pytest.mark.parametrize("shape", [(7, 45), (3, 129), (64, 200), (1, 1)])
def test_storage_bytes_consistent_with_bits_and_packing(spec, shape):
    out_f, in_f = shape
    n = out_f * in_f
    code_bytes = math.ceil(n * spec.bits / 8)
    param_bytes = spec.n_param_groups(out_f, in_f) * 2 * (1 if spec.symmetric else 2)
    assert spec.storage_bytes(out_f, in_f) == code_bytes + param_bytes
    # whole-byte rounding only ever adds < 8 bits to the exact count
    assert 0 <= spec.storage_bytes(out_f, in_f) * 8 - spec.storage_bits(out_f, in_f) < 8
    # and the code part is exactly what pack_codes produces
    codes = torch.randint(0, 1 << spec.bits, shape, generator=torch.Generator().manual_seed(n))
    assert pack_codes(codes, spec.bits).numel() == code_bytes


@pytest.mark.parametrize("spec", all_int_specs(), ids=lambda s: s.name)
def test_param_groups_match_quantized_tensor(spec):
    torch.manual_seed(0)
    w = torch.randn(5, 70)
    qt = quantize(w, spec)
    n = spec.n_param_groups(5, 70)
    assert qt.scale.numel() == n
    assert qt.zero.numel() == n


def test_qmin_qmax():
    for bits in INT_BITS:
        spec = QuantSpec(bits)
        assert spec.qmin == 0
        assert spec.qmax == 2**bits - 1


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("spec", all_int_specs(), ids=lambda s: s.name)
def test_name_round_trip(spec):
    assert QuantSpec.from_name(spec.name) == spec


def test_names_are_unique():
    specs = all_int_specs()
    names = [s.name for s in specs]
    assert len(set(names)) == len(specs) == len(INT_BITS) * 2 * (2 + len(GROUPS))


@pytest.mark.parametrize(
    "spec, name",
    [
        (QuantSpec(4, "group", 128, False), "int4-g128-asym"),
        (QuantSpec(8, "channel", None, True), "int8-ch-sym"),
        (QuantSpec(3, "tensor", None, False), "int3-tensor-asym"),
        (QuantSpec(2, "group", 32, True), "int2-g32-sym"),
        (QuantSpec.half(), "fp16"),
    ],
)
def test_known_names(spec, name):
    assert spec.name == name
    assert QuantSpec.from_name(name) == spec


def test_fp16_round_trip_and_normalisation():
    assert QuantSpec.from_name("fp16") == QuantSpec.half()
    assert QuantSpec.from_name(QuantSpec.half().name) == QuantSpec.half()
    # half precision has one canonical spec whatever granularity/symmetry is asked for
    for spec in (QuantSpec(16, "channel"), QuantSpec(16, "tensor", symmetric=True),
                 QuantSpec(16, "group", 64, True)):
        assert spec == QuantSpec.half()
        assert spec.name == "fp16"
        assert spec.storage_bits(3, 5) == 3 * 5 * 16


def test_default_is_per_channel_asymmetric():
    spec = QuantSpec(4)
    assert (spec.granularity, spec.group_size, spec.symmetric) == ("channel", None, False)
    assert spec.name == "int4-ch-asym"


def test_spec_is_frozen():
    spec = QuantSpec(4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.bits = 8  # type: ignore[misc]


# ---------------------------------------------------------------- validation


_BITS = r"; choose one of \(2, 3, 4, 5, 6, 8, 16\)"
_GRANULARITIES = r"; choose one of \('tensor', 'channel', 'group'\)"
_GROUPS = r" is not supported; choose one of \(32, 64, 128\)"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(bits=7), "unsupported bit-width 7" + _BITS),
        (dict(bits=1), "unsupported bit-width 1" + _BITS),
        (dict(bits=0), "unsupported bit-width 0" + _BITS),
        (dict(bits=9), "unsupported bit-width 9" + _BITS),
        (dict(bits=32), "unsupported bit-width 32" + _BITS),
        (dict(bits=4, granularity="row"), "unknown granularity 'row'" + _GRANULARITIES),
        (dict(bits=4, granularity="Channel"), "unknown granularity 'Channel'" + _GRANULARITIES),
        (dict(bits=4, granularity="group", group_size=48), "group size 48" + _GROUPS),
        (dict(bits=4, granularity="group", group_size=256), "group size 256" + _GROUPS),
        (dict(bits=4, granularity="group", group_size=None), "group size None" + _GROUPS),
        (dict(bits=4, granularity="channel", group_size=128), "group_size is only meaningful with granularity='group'"),
        (dict(bits=4, granularity="tensor", group_size=32), "group_size is only meaningful with granularity='group'"),
    ],
)
def test_invalid_specs_raise(kwargs, match):
    """Each error says which value is wrong and what would be right."""
    with pytest.raises(AutoqError, match=match):
        QuantSpec(**kwargs)


def test_autoq_error_is_value_error():
    with pytest.raises(ValueError):
        QuantSpec(7)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "int4",
        "int4-ch",
        "int4-channel-asym",
        "int4-row-sym",
        "int4-g-asym",
        "int4-g48-asym",
        "int7-ch-asym",
        "int16x-ch-asym",
        "uint4-ch-asym",
        "INT4-ch-asym",
        "int4-ch-asym ",
        " int4-ch-asym",
        "int4-ch-symmetric",
        "fp32",
        "FP16",
        "bf16",
    ],
)
def test_unparsable_or_invalid_names_raise(name):
    """Each error names the format as given (or its bad group size) and what would be right."""
    with pytest.raises(AutoqError) as info:
        QuantSpec.from_name(name)
    message = str(info.value)
    assert message.startswith((f"cannot parse quantization format {name!r}; expected e.g. 'int4-g128-asym'",
                               f"unsupported bit-width in {name!r}: choose")) or \
        (name == "int4-g48-asym" and message == "group size 48 is not supported; choose one of (32, 64, 128)"), message


def test_parse_error_message_names_the_input():
    with pytest.raises(AutoqError, match="int4-row-sym"):
        QuantSpec.from_name("int4-row-sym")


@pytest.mark.parametrize("name", ["int04-ch-sym", "int4-g0128-asym", "int4-ch-sym\n", " int4-ch-sym", "int4-g1２８-asym"])
def test_a_name_is_read_whole_and_as_written(name):
    """Leading zeros and a trailing newline were read, and the name came back as another text."""
    with pytest.raises(AutoqError, match="cannot parse quantization format"):
        QuantSpec.from_name(name)


def test_an_unsupported_bit_width_in_a_name_offers_the_integer_ones():
    """'int7-ch-sym' was told to choose among (2, ..., 8, 16), and 'int16-...' is then refused."""
    with pytest.raises(AutoqError, match=r"unsupported bit-width in 'int7-ch-sym': choose int2, int3, int4, int5, int6 or int8, or 'fp16'"):
        QuantSpec.from_name("int7-ch-sym")


@pytest.mark.parametrize(("args", "field"), [((4.0,), "bits"), ((4, "group", 128.0), "group_size"), (("4",), "bits")])
def test_a_spec_takes_whole_numbers_only(args, field):
    """QuantSpec(4.0) was named 'int4.0-ch-asym' and failed in qmax."""
    with pytest.raises(AutoqError, match=f"{field} must be a whole number"):
        QuantSpec(*args)
    import numpy as np

    assert QuantSpec(np.int64(4), "group", np.int32(64)).name == "int4-g64-asym"


@pytest.mark.parametrize("value", ["false", 0, None, 1.0])
def test_symmetric_takes_a_bool_only(value):
    """QuantSpec(4, 'channel', None, 'false') was symmetric, named 'int4-ch-sym', and that name parsed back unequal."""
    with pytest.raises(AutoqError, match=rf"^symmetric must be True or False, got {type(value).__name__} {re.escape(repr(value))}$"):
        QuantSpec(4, "channel", None, value)
    import numpy as np

    made = QuantSpec(4, "channel", None, np.bool_(True))
    assert made.symmetric is True and QuantSpec.from_name(made.name) == made


def test_quantize_refuses_a_weight_that_is_not_2d():
    with pytest.raises(AutoqError, match=r"quantize takes a 2-D \(out, in\) weight, got shape \(5,\)"):
        quantize(torch.randn(5), QuantSpec(4))
    with pytest.raises(AutoqError, match=r"got shape \(2, 3, 4\)"):
        quantize(torch.randn(2, 3, 4), QuantSpec(4))


def test_pack_codes_refuses_float_codes():
    """1.7 was packed as 1."""
    with pytest.raises(ValueError, match="codes must be an integer tensor, got torch.float32"):
        pack_codes(torch.tensor([1.7]), 4)
