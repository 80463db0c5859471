"""Range setting (min-max vs MSE search) and the PTQ method registry."""

from __future__ import annotations

import pytest
import torch
from spec_cases import all_int_specs

from autoq.ptq import get_method, method_names
from autoq.quant import (
    QuantizedTensor,
    QuantSpec,
    lp_search_range,
    minmax_range,
    quantize,
)


def sq_err(w: torch.Tensor, qt: QuantizedTensor) -> float:
    return (qt.dequantize() - w).pow(2).sum().item()


def gaussian_with_outlier(shape=(16, 200), seed=0) -> torch.Tensor:
    torch.manual_seed(seed)
    w = torch.randn(shape)
    w[2, 5] = 12.0
    return w


@pytest.mark.parametrize("spec", all_int_specs(), ids=lambda s: s.name)
@pytest.mark.parametrize("shape", [(16, 200), (7, 45)], ids=str)
def test_mse_search_never_worse_than_minmax(spec, shape):
    w = gaussian_with_outlier(shape, seed=shape[1])
    lo, hi = lp_search_range(w, spec)
    mse_err = sq_err(w, quantize(w, spec, lo, hi))
    mm_err = sq_err(w, quantize(w, spec))
    assert mse_err <= mm_err * (1 + 1e-6) + 1e-9
    # the searched range is alpha * [min, max] with alpha in [0.4, 1]
    lo0, hi0 = minmax_range(w, spec)
    assert lo.shape == lo0.shape == (spec.n_param_groups(*shape),)
    assert bool((hi0.abs() > 0).all())
    alpha = hi / hi0
    assert bool(((alpha >= 0.4 - 1e-5) & (alpha <= 1 + 1e-6)).all())
    assert torch.allclose(lo, alpha * lo0, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spec", all_int_specs(), ids=lambda s: s.name)
def test_mse_search_never_worse_per_group(spec):
    # the guarantee holds group by group, padding excluded
    w = gaussian_with_outlier((6, 70), seed=9)
    lo, hi = lp_search_range(w, spec)
    e_mse = (quantize(w, spec, lo, hi).dequantize() - w).pow(2)
    e_mm = (quantize(w, spec).dequantize() - w).pow(2)
    if spec.granularity == "tensor":
        per_mse, per_mm = e_mse.sum().reshape(1), e_mm.sum().reshape(1)
    elif spec.granularity == "channel":
        per_mse, per_mm = e_mse.sum(1), e_mm.sum(1)
    else:
        cols = torch.arange(70) // spec.group_size
        n = int(cols.max()) + 1
        per_mse = torch.stack([e_mse[:, cols == j].sum(1) for j in range(n)], 1)
        per_mm = torch.stack([e_mm[:, cols == j].sum(1) for j in range(n)], 1)
    assert bool((per_mse <= per_mm * (1 + 1e-5) + 1e-9).all())


@pytest.mark.parametrize("symmetric", [False, True])
def test_mse_search_strictly_better_at_3_bits_per_tensor(symmetric):
    w = gaussian_with_outlier((16, 200), seed=1)
    spec = QuantSpec(3, "tensor", None, symmetric)
    lo, hi = lp_search_range(w, spec)
    lo0, hi0 = minmax_range(w, spec)
    mse_err = sq_err(w, quantize(w, spec, lo, hi))
    mm_err = sq_err(w, quantize(w, spec))
    assert mse_err < 0.9 * mm_err
    # the outlier was clipped: the range shrank
    assert hi.item() < hi0.item()


def test_minmax_range_matches_groups():
    w = torch.arange(2 * 70, dtype=torch.float32).reshape(2, 70)
    lo, hi = minmax_range(w, QuantSpec(4, "group", 64))
    # row 0: cols 0..63 and 64..69 (padded with col 69); row 1 likewise + 70
    assert lo.tolist() == [0.0, 64.0, 70.0, 134.0]
    assert hi.tolist() == [63.0, 69.0, 133.0, 139.0]
    lo, hi = minmax_range(w, QuantSpec(4, "channel"))
    assert lo.tolist() == [0.0, 70.0] and hi.tolist() == [69.0, 139.0]
    lo, hi = minmax_range(w, QuantSpec(4, "tensor"))
    assert lo.tolist() == [0.0] and hi.tolist() == [139.0]


# ---------------------------------------------------------------- registry


def test_builtin_methods_registered():
    names = method_names()
    assert "rtn-minmax" in names and "rtn-mse" in names
    assert names == sorted(names)


@pytest.mark.parametrize("method", ["rtn-minmax", "rtn-mse"])
@pytest.mark.parametrize(
    "spec",
    [QuantSpec(4, "group", 128), QuantSpec(3, "channel", symmetric=True), QuantSpec(8, "tensor"),
     QuantSpec(2, "group", 32, True)],
    ids=lambda s: s.name,
)
def test_registered_methods_return_quantized_tensor(method, spec):
    w = gaussian_with_outlier((7, 45), seed=3)
    fn = get_method(method)
    qt = fn(w, spec)
    assert isinstance(qt, QuantizedTensor)
    assert qt.spec == spec
    assert qt.shape == (7, 45)
    assert qt.scale.numel() == spec.n_param_groups(7, 45)
    assert qt.dequantize().shape == (7, 45)
    # stats are accepted and ignored by data-free methods
    qt2 = fn(w, spec, {"anything": 1})
    assert torch.equal(qt2.codes, qt.codes)


def test_rtn_minmax_equals_plain_quantize():
    w = gaussian_with_outlier((7, 45), seed=4)
    spec = QuantSpec(4, "group", 32)
    a, b = get_method("rtn-minmax")(w, spec), quantize(w, spec)
    assert torch.equal(a.codes, b.codes)
    assert torch.equal(a.scale, b.scale) and torch.equal(a.zero, b.zero)


def test_rtn_mse_uses_searched_range():
    w = gaussian_with_outlier((16, 200), seed=1)
    spec = QuantSpec(3, "tensor")
    qt = get_method("rtn-mse")(w, spec)
    lo, hi = lp_search_range(w, spec)
    ref = quantize(w, spec, lo, hi)
    assert torch.equal(qt.codes, ref.codes)
    assert sq_err(w, qt) < sq_err(w, get_method("rtn-minmax")(w, spec))


@pytest.mark.parametrize("name", ["int4-g128-asym", "int3-ch-asym", "int2-g32-sym", "int8-tensor-asym"])
@pytest.mark.parametrize("p", [2.0, 2.4])
def test_the_range_search_picks_what_the_plain_formula_picks(name, p):
    """The search computes each candidate in one reused buffer (4x faster): the same ranges, to the bit, as the
    formula written out, also with a padded last group (200 inputs)."""
    from autoq.quant.spec import QuantSpec
    from autoq.quant.tensor import GroupView, params_from_range

    spec = QuantSpec.from_name(name)
    w = torch.randn(24, 200, generator=torch.Generator().manual_seed(5))
    view = GroupView(tuple(w.shape), spec)
    grouped, mask = view.split(w), view.mask(torch.device("cpu"))
    lo0, hi0 = grouped.amin(dim=1), grouped.amax(dim=1)
    best_err, best_lo, best_hi = torch.full_like(lo0, float("inf")), lo0.clone(), hi0.clone()
    for alpha in torch.linspace(1.0, 0.4, 40).tolist():
        lo, hi = lo0 * alpha, hi0 * alpha
        scale, zero = params_from_range(lo, hi, spec)
        codes = torch.round(grouped / scale.float()[:, None] + zero.float()[:, None]).clamp(spec.qmin, spec.qmax)
        err = (scale.float()[:, None] * (codes - zero.float()[:, None]) - grouped).abs().pow(p)
        err = (err if mask is None else err * mask).sum(dim=1)
        better = err < best_err
        best_err, best_lo, best_hi = torch.where(better, err, best_err), torch.where(better, lo, best_lo), torch.where(better, hi, best_hi)
    lo, hi = lp_search_range(w, spec, p=p)
    assert torch.equal(lo, best_lo) and torch.equal(hi, best_hi)


def test_of_shrinks_equally_good_the_search_keeps_the_widest():
    """Candidates are tried from min-max inwards and a narrower one must do strictly better: of two equal errors the
    wider range (its codes reach further) stays, the same on every run."""
    w = torch.tensor([[-0.375, 0.75, -1.0, -0.5, 0.5]])
    spec = QuantSpec.from_name("int2-ch-sym")
    errors = {}
    for alpha in torch.linspace(1.0, 0.4, 40).tolist():
        errors[alpha] = sq_err(w, quantize(w, spec, torch.tensor([-1.0 * alpha]), torch.tensor([0.75 * alpha])))
    tied = [alpha for alpha, err in errors.items() if err == min(errors.values())]
    assert len(tied) == 2  # this weight has a tie
    lo, hi = lp_search_range(w, spec)
    assert torch.equal(hi, torch.tensor([0.75 * max(tied)])) and torch.equal(lo, torch.tensor([-1.0 * max(tied)]))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("find_range", [minmax_range, lp_search_range], ids=lambda f: f.__name__)
def test_the_range_functions_refuse_non_finite_weights_in_words(find_range, bad):
    """A NaN weight came back as a NaN range without a word; an inf one was told to rescale a range of inf."""
    from autoq.errors import AutoqError

    w = torch.randn(2, 40)
    w[0, 1] = bad
    with pytest.raises(AutoqError, match=rf"^{find_range.__name__} got a \(2, 40\) weight with 1 NaN or inf value\(s\)"):
        find_range(w, QuantSpec(4, "channel"))
    w[0, 1] = 0.0
    lo, hi = find_range(w, QuantSpec(4, "channel"))
    assert torch.isfinite(lo).all() and torch.isfinite(hi).all()
