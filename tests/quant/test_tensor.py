"""quantize / dequantize: error bounds, code ranges, parameter storage."""

from __future__ import annotations

import math

import pytest
import torch
from spec_cases import GROUPS, INT_BITS, all_int_specs

from autoq.quant import QuantizedTensor, QuantSpec, fake_quantize, quantize

# odd shapes; in_features 45/70/200/300 are not multiples of the group sizes
SHAPES = [(7, 45), (5, 70), (16, 128), (3, 200), (4, 300), (3, 129), (2, 33)]


def weights(shape, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    w = torch.randn(shape) * 0.05
    assert w.abs().max() > 0
    return w


def per_element(params: torch.Tensor, shape, spec: QuantSpec) -> torch.Tensor:
    """Broadcast per-group params (n_groups,) back to an (out, in) map, computed independently."""
    out_f, in_f = shape
    p = params.float()
    if spec.granularity == "tensor":
        assert p.numel() == 1
        return p.reshape(1, 1).expand(out_f, in_f)
    if spec.granularity == "channel":
        assert p.numel() == out_f
        return p.reshape(out_f, 1).expand(out_f, in_f)
    g = spec.group_size
    n_per_row = math.ceil(in_f / g)
    assert p.numel() == out_f * n_per_row
    col_group = torch.arange(in_f) // g  # group index of each input column
    return p.reshape(out_f, n_per_row)[:, col_group]


def reference_dequant(qt: QuantizedTensor) -> torch.Tensor:
    scale = per_element(qt.scale, qt.shape, qt.spec)
    zero = per_element(qt.zero, qt.shape, qt.spec)
    return scale * (qt.codes.float() - zero)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("spec", all_int_specs(), ids=lambda s: s.name)
def test_minmax_error_within_half_step(spec, shape):
    w = weights(shape, seed=shape[0] * 1000 + shape[1])
    qt = quantize(w, spec)
    w_hat = qt.dequantize()
    scale = per_element(qt.scale, shape, spec)
    err = (w - w_hat).abs()
    # half a step, up to fp32 noise in the fp16 scale (at most 1e-6 relative, times qmax)
    bound = scale / 2 * (1 + 1e-4) + scale * spec.qmax * 1e-6 + 1e-7
    worst = (err - bound).max().item()
    assert worst <= 0, f"{spec.name} {shape}: error exceeds scale/2 by {worst}"


@pytest.mark.parametrize(("largest", "codes"), [(1e-3, 250), (1e-5, 160), (1e-6, 30)])
def test_a_row_of_tiny_weights_still_uses_its_codes(largest, codes):
    """The smallest scale was 1e-6: an int8 row up to 1e-5 used 21 of 255 codes, at 13x the int8 error bound, and one
    up to 1e-6 used 2. Now the limit is fp16's own spacing there (6e-8), which the stored scale cannot go below."""
    w = torch.linspace(-largest, largest, 255).reshape(1, 255)
    qt = quantize(w, QuantSpec(8, "channel", symmetric=False))
    assert qt.codes.unique().numel() >= codes
    assert (w - qt.dequantize()).abs().max() <= qt.scale.float().item() / 2 * 1.001


@pytest.mark.parametrize("spec", all_int_specs(), ids=lambda s: s.name)
def test_dequantize_matches_independent_reference(spec):
    # guards the group <-> element mapping used by the bound test above
    shape = (7, 45)
    qt = quantize(weights(shape, 1), spec)
    assert torch.allclose(qt.dequantize(), reference_dequant(qt), atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("shape", SHAPES + [(1, 40)], ids=str)
@pytest.mark.parametrize("spec", all_int_specs(), ids=lambda s: s.name)
def test_shapes_codes_and_param_dtypes(spec, shape):
    w = weights(shape, seed=7)
    qt = quantize(w, spec)
    assert qt.spec == spec
    assert qt.shape == shape
    assert qt.codes.shape == shape
    assert qt.codes.dtype == torch.uint8
    assert int(qt.codes.min()) >= 0
    assert int(qt.codes.max()) <= 2**spec.bits - 1
    assert qt.scale.dtype == torch.float16
    assert qt.zero.dtype == torch.float16
    n_groups = spec.n_param_groups(*shape)
    assert qt.scale.shape == (n_groups,)
    assert qt.zero.shape == (n_groups,)
    assert bool((qt.scale > 0).all())
    deq = qt.dequantize()
    assert deq.shape == shape
    assert deq.dtype == torch.float32
    assert bool(torch.isfinite(deq).all())


@pytest.mark.parametrize("bits", INT_BITS)
@pytest.mark.parametrize("gran", ["tensor", "channel", "group"])
def test_symmetric_zero_is_midpoint(bits, gran):
    spec = QuantSpec(bits, gran, 64 if gran == "group" else None, symmetric=True)
    qt = quantize(weights((6, 150), 3), spec)
    assert qt.zero.dtype == torch.float16
    assert bool((qt.zero.float() == 2 ** (bits - 1)).all())
    # symmetric grid: min-max never needs code 0, so |w_hat| <= (half - 1) * scale
    deq = qt.dequantize()
    assert bool((deq.abs() <= per_element(qt.scale, (6, 150), spec) * (2 ** (bits - 1) - 1) * (1 + 1e-6)).all())


@pytest.mark.parametrize("spec", all_int_specs(), ids=lambda s: s.name)
def test_scale_and_zero_are_exactly_fp16_values(spec):
    qt = quantize(weights((5, 70), 11), spec)
    # dequantize uses exactly the stored fp16 params
    assert torch.equal(qt.dequantize(), reference_dequant(qt))
    assert torch.equal(qt.scale, qt.scale.float().half())


@pytest.mark.parametrize("shape", [(7, 45), (4, 300)], ids=str)
@pytest.mark.parametrize("spec", all_int_specs(), ids=lambda s: s.name)
def test_requantize_on_own_grid_is_idempotent(spec, shape):
    w = weights(shape, 5)
    q1 = quantize(w, spec)
    d1 = q1.dequantize()
    # the grid q1 used: [-zero * scale, (qmax - zero) * scale] per group
    s, z = q1.scale.float(), q1.zero.float()
    if spec.symmetric:
        half = 1 << (spec.bits - 1)
        lo, hi = -(half - 1) * s, (half - 1) * s
    else:
        lo, hi = -z * s, (spec.qmax - z) * s
    q2 = quantize(d1, spec, lo, hi)
    assert torch.equal(q2.scale, q1.scale) and torch.equal(q2.zero, q1.zero)
    assert torch.equal(q2.codes, q1.codes)
    # and re-quantizing with fresh min-max ranges moves no element by more than one step
    d2 = quantize(d1, spec).dequantize()
    assert bool(((d2 - d1).abs() <= per_element(q1.scale, shape, spec) * 1.01 + 1e-7).all())


@pytest.mark.parametrize("bits", INT_BITS)
@pytest.mark.parametrize("symmetric", [False, True])
def test_finer_granularity_not_worse_than_tensor_with_outlier_row(bits, symmetric):
    w = weights((16, 256), 21)
    w[3] *= 40.0  # one row with a much larger range
    tensor_err = (quantize(w, QuantSpec(bits, "tensor", None, symmetric)).dequantize() - w).abs().max()
    for spec in (
        QuantSpec(bits, "channel", None, symmetric),
        *(QuantSpec(bits, "group", g, symmetric) for g in GROUPS),
    ):
        err = (quantize(w, spec).dequantize() - w).abs().max()
        assert err <= tensor_err, spec.name
    # and per-channel really helps the 15 ordinary rows
    ch = quantize(w, QuantSpec(bits, "channel", None, symmetric)).dequantize()
    t = quantize(w, QuantSpec(bits, "tensor", None, symmetric)).dequantize()
    rows = [r for r in range(16) if r != 3]
    assert (ch[rows] - w[rows]).pow(2).mean() < (t[rows] - w[rows]).pow(2).mean()


@pytest.mark.parametrize("gran, group", [("tensor", None), ("channel", None), ("group", 32), ("group", 128)])
@pytest.mark.parametrize("symmetric", [False, True])
def test_more_bits_lower_mse(gran, group, symmetric):
    torch.manual_seed(123)
    w = torch.randn(32, 300)
    mses = [
        (quantize(w, QuantSpec(b, gran, group, symmetric)).dequantize() - w).pow(2).mean().item()
        for b in INT_BITS
    ]
    assert all(a > b for a, b in zip(mses, mses[1:])), mses


def test_quantize_rejects_fp16_spec():
    with pytest.raises(ValueError):
        quantize(torch.randn(3, 4), QuantSpec.half())


def test_fake_quantize():
    w = weights((7, 45), 2)
    spec = QuantSpec(4, "group", 32)
    assert torch.equal(fake_quantize(w, spec), quantize(w, spec).dequantize())
    half = fake_quantize(w, QuantSpec.half())
    assert torch.equal(half, w.half().float())
    assert half.dtype == torch.float32


def test_quantize_does_not_modify_input_or_track_grad():
    w = weights((5, 70), 4).requires_grad_(True)
    before = w.detach().clone()
    qt = quantize(w, QuantSpec(3, "group", 32))
    assert torch.equal(w.detach(), before)
    assert not qt.dequantize().requires_grad


def test_explicit_range_clips():
    # a narrower [lo, hi] than min-max clamps the outside weights to the grid ends
    w = torch.tensor([[-1.0, -0.5, 0.0, 0.5, 1.0]])
    spec = QuantSpec(4, "tensor")
    qt = quantize(w, spec, torch.tensor([-0.5]), torch.tensor([0.5]))
    codes = qt.codes[0].tolist()
    assert codes[0] == codes[1] == 0
    assert codes[4] == 15  # 1.0 clipped to the top code
    assert 7 <= codes[2] <= 8
    deq = qt.dequantize()[0]
    step = qt.scale.float().item()
    assert deq[0] == deq[1]
    assert deq[2] == 0.0  # the integer zero point represents 0 exactly
    # the grid ends lie within half a step (integer zero point) of the requested range,
    # plus the fp16 rounding of the scale (2**-11 relative) over the qmax steps
    slack = step / 2 + spec.qmax * step * 2**-11 + 1e-6
    assert abs(deq[0].item() + 0.5) <= slack
    assert abs(deq[4].item() - 0.5) <= slack


# ---------------------------------------------------------------- regressions: asymmetric zero point


def test_regression_singleton_last_group_dequantizes_to_inf():
    torch.manual_seed(0)
    w = torch.randn(4, 129)
    spec = QuantSpec(4, "group", 128)
    w_hat = quantize(w, spec).dequantize()
    assert bool(torch.isfinite(w_hat).all())
    assert (w_hat - w).abs().max() < 0.5


def test_regression_constant_row_dequantizes_to_inf():
    w = torch.full((2, 16), 0.5)
    w_hat = quantize(w, QuantSpec(4, "channel")).dequantize()
    assert bool(torch.isfinite(w_hat).all())
    assert torch.allclose(w_hat, w, atol=1e-3)


def test_regression_offset_group_error_exceeds_half_step():
    w = torch.linspace(0.9, 1.0, 64).reshape(1, 64)
    qt = quantize(w, QuantSpec(8, "channel"))
    err = (qt.dequantize() - w).abs().max().item()
    assert err <= qt.scale.float().item() / 2 * (1 + 1e-4) + 1e-7


@pytest.mark.parametrize("spec", [QuantSpec(4, "channel"), QuantSpec(3, "group", 32), QuantSpec(8, "tensor", None, True)], ids=lambda s: s.name)
def test_a_weight_with_nan_or_inf_is_refused_not_quantized_to_nan_scales(spec):
    """quantize took it: the row's scale came back NaN and its codes 0, and fake_quantize gave NaN weights back."""
    from autoq.errors import AutoqError

    w = weights((5, 70), 0)
    w[2, 40] = float("nan")
    with pytest.raises(AutoqError, match=r"quantize got a \(5, 70\) weight with 1 NaN or inf value\(s\)"):
        quantize(w, spec)
    finite = weights((5, 70), 0)
    with pytest.raises(AutoqError, match="1 NaN or inf"):  # a range given: the NaN became code 0
        quantize(w, spec, torch.full((spec.n_param_groups(5, 70),), -0.2), torch.full((spec.n_param_groups(5, 70),), 0.2))
    w[2, 40] = float("-inf")
    with pytest.raises(AutoqError, match="NaN or inf"):
        fake_quantize(w, spec)
    assert torch.isfinite(fake_quantize(finite, spec)).all()


def test_weights_too_wide_for_an_fp16_scale_are_refused_in_words_not_dequantized_to_nan():
    """The scale rounded up to fp16 inf: quantize gave NaN weights without a word, and run_method blamed the method."""
    from autoq.errors import AutoqError
    from autoq.evaluate.cache import layer_named
    from autoq.ptq.registry import run_method

    wide = torch.tensor([[1e5, -1.0, 0.5, 2.0]])
    with pytest.raises(AutoqError, match=r"int2-ch-sym: a group's weights reach \|w\| = 1e\+05, and its fp16 scale \(at most 65504\) "
                                         r"covers 6.55e\+04; rescale"):
        quantize(wide, QuantSpec(2, "channel", None, True))
    with pytest.raises(AutoqError, match=r"int2-ch-asym: a group's weights span a range of 2e\+05, .* covers 1.965e\+05"):
        quantize(torch.tensor([[1e5, -1e5, 0.5, 2.0]]), QuantSpec(2, "channel"))
    assert torch.isfinite(quantize(wide, QuantSpec(2, "channel")).dequantize()).all()  # 1e5 is within int2-asym's 196,512
    assert torch.isfinite(quantize(wide, QuantSpec(8, "channel", None, True)).dequantize()).all()  # and int8-sym's 8.3e6
    with pytest.raises(AutoqError, match=r"^layer 'fc': int2-ch-sym: a group's weights reach") as raised, layer_named("fc"):
        run_method("rtn-minmax", wide, QuantSpec(2, "channel", None, True))
    assert "returned scales" not in str(raised.value)  # the input's magnitude, not the method, is named


@pytest.mark.parametrize("spec", [s for s in all_int_specs() if s.bits in (2, 8)], ids=lambda s: s.name)
def test_an_all_zero_weight_keeps_a_positive_scale_and_dequantizes_to_zero(spec):
    """A group of zeros gets fp16's smallest scale, not 0 (0 would make the zero point 0/0 = NaN, and the weights NaN)."""
    w = torch.zeros(3, 70)
    qt = quantize(w, spec)
    assert bool((qt.scale.float() == 2.0**-24).all()) and bool(torch.isfinite(qt.zero.float()).all())
    assert torch.equal(qt.dequantize(), w) and torch.equal(fake_quantize(w, spec), w)


@pytest.mark.parametrize("symmetric", [False, True])
def test_a_range_one_fp32_ulp_wider_than_a_stored_grid_keeps_that_scale(symmetric):
    """fp32 noise above an fp16 scale's range (a relative 1e-6: a range computed from a stored scale) does not move
    the scale up an fp16 step."""
    spec = QuantSpec(4, "tensor", None, symmetric)
    s = torch.tensor([0.01]).half().float()
    hi = torch.nextafter(s * (7 if symmetric else 15), torch.tensor([1.0]))
    lo = -hi if symmetric else torch.zeros(1)
    w = torch.linspace(float(lo), float(hi), 16).reshape(1, 16)
    assert quantize(w, spec, lo, hi).scale.float().item() == s.item()


def test_one_bound_alone_is_refused_in_words():
    """A range is both bounds or neither (min-max): lo without hi was dropped without a word, for min-max."""
    from autoq.errors import AutoqError

    w = weights((3, 8), 0)
    with pytest.raises(AutoqError, match=r"^quantize takes a range per group as both lo and hi, or neither \(min-max\); got lo alone$"):
        quantize(w, QuantSpec(4), lo=torch.full((3,), -0.1))
    with pytest.raises(AutoqError, match=r"got hi alone$"):
        quantize(w, QuantSpec(4), hi=torch.full((3,), 0.1))
