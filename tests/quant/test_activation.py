"""Activation formats: names, static per-tensor and dynamic per-token fake quantization, and LayerChoice names."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autoq.choice import Assignment, LayerChoice
from autoq.errors import AutoqError
from autoq.quant import QuantSpec
from autoq.quant.activation import ActRange, ActSpec, fake_quantize_activation, static_range


@pytest.mark.parametrize("name", ["a8-tensor", "a8-token", "a4-token", "a4-tensor", "a8-tensor-asym", "a4-token-asym"])
def test_names_round_trip(name):
    assert ActSpec.from_name(name).name == name


def test_bits_are_a_whole_number():
    """ActSpec(8.0) was named 'a8.0-tensor', which from_name cannot read back; a numpy integer is taken."""
    with pytest.raises(AutoqError, match=r"^activation bits must be a whole number, got 8.0$"):
        ActSpec(8.0)
    assert ActSpec(np.int64(4), "token").name == "a4-token"


def test_symmetric_is_a_bool():
    """ActSpec(8, 'tensor', 'no') was symmetric, as QuantSpec's string 'false' was."""
    with pytest.raises(AutoqError, match=r"^activation symmetric must be True or False, got str 'no'$"):
        ActSpec(8, "tensor", "no")
    assert ActSpec(8, "token", np.bool_(False)).name == "a8-token-asym"


@pytest.mark.parametrize("name", ["a16-tensor", "a8-row", "a8", "8-tensor", "a08-token", "a8-token\n", "a８-token"])  # read whole, as written
def test_bad_names(name):
    """Each error names the format as given (or its bad width) and what would be right."""
    with pytest.raises(AutoqError) as info:
        ActSpec.from_name(name)
    message = str(info.value)
    if name == "a16-tensor":
        assert message == "unsupported activation bit-width 16; choose one of (4, 8)", message
    else:
        assert message.startswith(f"cannot parse activation format {name!r}; expected 'a8-tensor', 'a8-token'"), message


def test_a_spec_built_in_python_is_checked_as_a_name_is():
    with pytest.raises(AutoqError, match=r"^unknown activation mode 'row'; choose 'tensor' \(static\) or 'token' \(dynamic\)$"):
        ActSpec(8, "row")
    with pytest.raises(AutoqError, match=r"^unsupported activation bit-width 2; choose one of \(4, 8\)$"):
        ActSpec(2, "token")


def rows() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(32, 64, generator=gen) * torch.linspace(0.1, 4, 32)[:, None]


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("size", [1.0, 1e-3])  # rows of max 1e-3 too: the scale's floor must not coarsen their step
def test_per_token_error_is_bounded_by_half_a_step_per_row(bits, size):
    x = rows() * size
    y = fake_quantize_activation(x, ActSpec(bits, "token"))
    step = x.abs().amax(dim=-1, keepdim=True) / ((1 << (bits - 1)) - 1)
    assert bool(((y - x).abs() <= step / 2 + 1e-6 * size).all())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_fake_quantize_keeps_the_input_dtype(dtype):
    x = rows().to(dtype)
    assert fake_quantize_activation(x, ActSpec(8, "token")).dtype == dtype
    assert fake_quantize_activation(x, ActSpec(8, "tensor"), ActRange(-1.0, 1.0)).dtype == dtype


def test_eight_bits_finer_than_four():
    x = rows()
    err = {b: float((fake_quantize_activation(x, ActSpec(b, "token")) - x).pow(2).mean()) for b in (4, 8)}
    assert err[8] < err[4] / 50


def test_static_needs_a_calibrated_range_and_clips_outside_it():
    x = rows()
    with pytest.raises(AutoqError, match="calibrated range"):
        fake_quantize_activation(x, ActSpec(8, "tensor"))
    y = fake_quantize_activation(x, ActSpec(8, "tensor"), ActRange(-1.0, 1.0))
    assert float(y.abs().max()) <= 1.0 + 1e-6
    asym = fake_quantize_activation(x.clamp_min(0), ActSpec(8, "tensor", symmetric=False), ActRange(0.0, 2.0))
    assert float(asym.min()) >= 0.0


def test_static_range_of_scaled_input():
    lo, hi = torch.tensor([-2.0, -1.0]), torch.tensor([4.0, 1.0])
    assert static_range(lo, hi) == ActRange(-2.0, 4.0)
    assert static_range(lo, hi, torch.tensor([4.0, 0.5])) == ActRange(-2.0, 2.0)
    assert static_range(torch.tensor([-3.0, -2.0]), torch.tensor([-1.0, -0.5])) == ActRange(-3.0, -0.5)  # all below zero


@pytest.mark.parametrize("name", ["int8-ch-sym:smoothquant+a8-tensor", "int4-g128-asym:gptq+a8-token", "int4-g128-asym:rtn-mse", "fp16"])
def test_layer_choice_names_round_trip(name):
    choice = LayerChoice.from_name(name)
    assert choice.name == name
    assert Assignment.from_json(Assignment((("l", choice),)).to_json())["l"] == choice


def test_layer_choice_activation_parsed_and_fp16_has_none():
    choice = LayerChoice.from_name("int8-ch-sym:smoothquant+a8-tensor")
    assert choice.activation == ActSpec(8, "tensor") and choice.method == "smoothquant"
    assert LayerChoice(QuantSpec.half(), activation=ActSpec()).activation is None
    with pytest.raises(AutoqError, match=r"cannot parse layer choice 'int8-ch-sym:smoothquant\+'; expected 'FORMAT:METHOD\[\+ACT\]'"):
        LayerChoice.from_name("int8-ch-sym:smoothquant+")


def _asym_by_hand(values, lo, hi, bits):
    """The asymmetric format written out one value at a time: the range widened to hold 0, ``2**bits`` levels."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    step = max((hi - lo) / (2**bits - 1), 1e-8)
    zero = round(-lo / step)
    return [(min(max(round(v / step) + zero, 0), 2**bits - 1) - zero) * step for v in values]


@pytest.mark.parametrize("bits, lo, hi", [(8, -1.0, 3.0), (4, -1.0, 3.0), (8, 0.5, 3.0), (4, -2.0, -0.5)])
def test_static_asymmetric_values_by_hand(bits, lo, hi):
    """Its only check was codes >= 0: a step of 1e-8 (clamp_max for clamp_min) read every value as the range's low end."""
    x = torch.tensor([-2.5, -1.05, -0.3, 0.0, 0.37, 1.55, 2.99, 3.0, 7.0], dtype=torch.float64)  # no value on a tie
    got = fake_quantize_activation(x, ActSpec(bits, "tensor", symmetric=False), ActRange(lo, hi))
    assert got.tolist() == pytest.approx(_asym_by_hand(x.tolist(), lo, hi, bits), rel=1e-6, abs=1e-6)  # computed in fp32


@pytest.mark.parametrize("symmetric", [True, False])
def test_per_token_is_per_row_of_the_last_dimension_whatever_the_leading_ones(symmetric):
    """(batch, tokens, channels): each token its own range, as a 2-D row does; not a range over the tokens."""
    x = torch.randn(3, 5, 16, generator=torch.Generator().manual_seed(2)) * torch.linspace(0.5, 8, 5)[None, :, None]
    spec = ActSpec(8, "token", symmetric=symmetric)
    rows = torch.stack([fake_quantize_activation(row[None], spec)[0] for row in x.reshape(-1, 16)]).reshape(x.shape)
    assert torch.equal(fake_quantize_activation(x, spec), rows)


def test_static_range_divides_by_a_scale_that_is_not_a_power_of_two():
    """x / s of each channel's extremes: a floor division gave 5.0 for 4 / 0.7 (the scale above divides exactly)."""
    rng = static_range(torch.tensor([-2.0, -1.0]), torch.tensor([4.0, 1.0]), torch.tensor([0.7, 2.0]))
    assert rng.lo == pytest.approx(-2.0 / 0.7) and rng.hi == pytest.approx(4.0 / 0.7)
