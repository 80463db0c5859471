"""Conformance: every registered PTQ method keeps the registry's contract (add a method, it is tested here)."""

from __future__ import annotations

import sys

import pytest
import torch

from autoq.errors import AutoqError
from autoq.ptq import get_method, method_info, method_names, method_needs_stats, register_method, registry, run_method
from autoq.ptq.result import TransformedTensor
from autoq.quant import QuantizedTensor, QuantSpec, quantize

SPECS = [QuantSpec(4, "group", 32), QuantSpec(3, "channel", None, True), QuantSpec(8, "tensor"), QuantSpec(2, "group", 64)]
BUILTINS = {"rtn-minmax", "rtn-mse", "rtn-lp", "rtn-percentile", "gptq", "gptq-act", "awq", "adaround", "smoothquant", "smoothquant-search", "bias-correction"}


def test_builtins_are_registered():
    assert BUILTINS <= set(method_names())


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
@pytest.mark.parametrize("name", method_names())
def test_method_contract(name, spec, layer):
    w, stats = layer  # 96 inputs: group 64 pads the last group
    q = get_method(name)(w, spec, stats)
    assert isinstance(q, QuantizedTensor)
    assert q.spec == spec
    assert q.codes.shape == w.shape and q.codes.dtype == torch.uint8
    assert int(q.codes.max()) <= spec.qmax
    assert q.scale.dtype == torch.float16 and q.scale.numel() == spec.n_param_groups(*w.shape)
    assert q.zero.numel() == q.scale.numel()
    w_hat = q.dequantize()
    assert w_hat.shape == w.shape and torch.isfinite(w_hat).all()
    assert float((w_hat - w).norm()) < float(w.norm())  # a quantizer, not noise: closer than all-zeros
    # deterministic
    again = get_method(name)(w, spec, stats)
    assert torch.equal(again.codes, q.codes)
    if isinstance(q, TransformedTensor) and q.input_scale is not None:
        assert q.input_scale.shape == (w.shape[1],) and bool((q.input_scale > 0).all())
        assert method_info(name).scales_input  # else the cost model would not count the stored scale


@pytest.mark.parametrize("name", method_names())
def test_stats_requirement_is_declared(name, layer):
    w, _ = layer
    spec = QuantSpec(4, "channel")
    if method_needs_stats(name):
        with pytest.raises(AutoqError, match="calibration statistics"):
            get_method(name)(w, spec, None)
    else:
        assert isinstance(get_method(name)(w, spec, None), QuantizedTensor)


@pytest.mark.parametrize("name", method_names())
def test_the_fp16_spec_is_refused(name, layer):
    """A layer kept in half precision has nothing to quantize (GPTQ wrapped its 65535-level codes into uint8)."""
    w, stats = layer
    with pytest.raises(ValueError, match="not an integer format"):
        get_method(name)(w, QuantSpec.half(), stats)


@pytest.mark.parametrize("name", [n for n in method_names() if method_needs_stats(n)])
def test_statistics_of_another_width_are_refused_by_name(name, layer):
    w, stats = layer  # statistics of 96 inputs
    with pytest.raises(AutoqError, match="statistics are for 96 inputs, the weight has 64"):
        get_method(name)(w[:, :64], QuantSpec(4, "channel"), stats)


def test_unknown_method_lists_known():
    with pytest.raises(AutoqError, match="gptq"):
        get_method("no-such-method")


def test_duplicate_registration_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_method("gptq")(lambda w, spec, stats=None: None)
    assert get_method("gptq").__name__ != "<lambda>"


def test_a_new_method_is_found_by_name(monkeypatch):
    monkeypatch.setattr(registry, "_METHODS", registry._METHODS.copy())

    @register_method("test-identity")
    def ident(weight, spec, stats=None):
        return quantize(weight, spec)

    assert get_method("test-identity") is ident and "test-identity" in method_names()


@pytest.mark.parametrize("name", ["my+method", "my:method", "", "a b", "w/abs", "-x", "none", "fp16", None])
def test_names_that_cannot_be_read_back_are_refused(name, monkeypatch):
    """``int4-ch-asym:my+method`` registered, searched and exported, then failed to load as activation format 'method'."""
    monkeypatch.setattr(registry, "_METHODS", registry._METHODS.copy())
    with pytest.raises(ValueError, match="cannot register PTQ method"):
        register_method(name)(lambda w, spec, stats=None: quantize(w, spec))
    assert set(registry._METHODS.names()) == set(method_names()) and name not in method_names()


def _shifted(q: QuantizedTensor, **changes) -> QuantizedTensor:
    fields = {"spec": q.spec, "codes": q.codes, "scale": q.scale, "zero": q.zero, **changes}
    return QuantizedTensor(**fields)


@pytest.mark.parametrize("wrong, message", [
    (lambda w, spec: quantize(w, QuantSpec(8, "channel")), "int8-ch-asym;"),
    (lambda w, spec: _shifted(quantize(w, spec), codes=quantize(w, spec).codes[:, :-1]), r"codes of shape \(16, 95\)"),
    (lambda w, spec: _shifted(quantize(w, spec), scale=quantize(w, spec).scale[:-1]), "15 scales and 16 zero points, not 16"),
    (lambda w, spec: _shifted(quantize(w, spec), codes=quantize(w, spec).codes + 200), r"outside \[0, 15\]"),
    (lambda w, spec: w.half(), "a Tensor;"),
    (lambda w, spec: _shifted(quantize(w, spec), scale=torch.full_like(quantize(w, spec).scale, float("inf"))), "not finite"),
    (lambda w, spec: _shifted(quantize(w, spec), codes=quantize(w, spec).codes.float()), "codes of dtype torch.float32"),
    (lambda w, spec: _shifted(quantize(w, spec), codes=quantize(w, spec).codes.float() + 0.25), "codes of dtype torch.float32"),
    # the export stores whole zero points: autoq.load refused such an export as damaged, after the search had scored it
    (lambda w, spec: _shifted(quantize(w, spec), zero=quantize(w, spec).zero + 0.25), r"zero points that are not whole numbers in \[0, 15\]"),
    (lambda w, spec: _shifted(quantize(w, spec), zero=torch.full_like(quantize(w, spec).zero, 99)), r"not whole numbers in \[0, 15\]"),
    (lambda w, spec: _shifted(quantize(w, spec), zero=quantize(w, spec).zero[:-1]), "16 scales and 15 zero points, not 16"),
    (lambda w, spec: _shifted(quantize(w, spec), codes=quantize(w, spec).codes.t()), r"codes of shape \(96, 16\)"),
    (lambda w, spec: _shifted(quantize(w, spec), codes=quantize(w, spec).codes.long() - 20), r"codes from -20 to -5, outside \[0, 15\]"),
    (lambda w, spec: _shifted(quantize(w, spec), codes=quantize(w, spec).codes > 7), "codes of dtype torch.bool"),
    (lambda w, spec: _shifted(quantize(w, spec), codes=quantize(w, spec).codes.to(torch.complex64)), "codes of dtype torch.complex64"),
    (lambda w, spec: _shifted(quantize(w, spec), zero=torch.full_like(quantize(w, spec).zero, float("nan"))), "zero points that are not finite"),
])
def test_a_method_returning_something_else_than_asked_is_named(wrong, message, monkeypatch):
    """A plug-in that ignores ``spec`` was searched as int2 with int8's quality and exported at 3.4x its recorded size."""
    monkeypatch.setattr(registry, "_METHODS", registry._METHODS.copy())
    register_method("test-wrong")(lambda w, spec, stats=None: wrong(w, spec))
    w = torch.randn(16, 96, generator=torch.Generator().manual_seed(0))
    spec = QuantSpec(4, "channel")
    with pytest.raises(AutoqError, match=f"'test-wrong' was asked for int4-ch-asym on a \\(16, 96\\) weight and returned .*{message}"):
        run_method("test-wrong", w, spec)
    assert torch.equal(run_method("rtn-minmax", w, spec).codes, get_method("rtn-minmax")(w, spec).codes)


def _transformed(w: torch.Tensor, spec: QuantSpec, **extras) -> TransformedTensor:
    q = quantize(w, spec)
    return TransformedTensor(q.spec, q.codes, q.scale, q.zero, **extras)


@pytest.mark.parametrize("extras, scales_input, message", [
    ({"input_scale": torch.full((96,), float("nan"))}, True, "input scale that is not finite and positive"),
    ({"input_scale": torch.zeros(96)}, True, "input scale that is not finite and positive"),
    ({"input_scale": torch.ones(97)}, True, r"input scale of shape \(97,\), not \(96,\)"),
    ({"input_scale": torch.ones(96)}, False, "registered without scales_input=True"),
    ({"bias_delta": torch.full((16,), float("nan"))}, False, "bias shift that is not finite"),
    ({"bias_delta": torch.zeros(17)}, False, r"bias shift of shape \(17,\), not \(16,\)"),
    ({"bias_delta": torch.zeros(16, 1)}, False, r"bias shift of shape \(16, 1\), not \(16,\)"),
])
def test_a_wrong_input_scale_or_bias_shift_is_named(extras, scales_input, message, monkeypatch):
    """A NaN input scale was scored at chance and exported; a misshapen one failed every trial naming no method."""
    monkeypatch.setattr(registry, "_METHODS", registry._METHODS.copy())
    register_method("test-transform", scales_input=scales_input)(lambda w, spec, stats=None: _transformed(w, spec, **extras))
    w = torch.randn(16, 96, generator=torch.Generator().manual_seed(0))
    with pytest.raises(AutoqError, match=f"'test-transform' was asked for int4-ch-asym .*{message}"):
        run_method("test-transform", w, QuantSpec(4, "channel"))


def test_a_method_that_raises_is_named_with_its_layer(monkeypatch):
    """A space mixing several plug-in methods said only 'RuntimeError: boom': neither the method nor the layer."""
    from autoq.choice import LayerChoice
    from autoq.evaluate.cache import QuantCache

    monkeypatch.setattr(registry, "_METHODS", registry._METHODS.copy())

    @register_method("test-raises")
    def boom(weight, spec, stats=None):
        raise RuntimeError("boom from my plugin")

    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    choice = LayerChoice(QuantSpec(4, "channel"), "test-raises")
    with pytest.raises(registry.MethodError, match=r"layer '2': PTQ method 'test-raises' failed on int4-ch-asym for a \(2, 4\) "
                                                    r"weight: RuntimeError: boom from my plugin") as info:
        QuantCache(model).layer("2", choice)
    assert isinstance(info.value.__cause__.__cause__, RuntimeError)


def test_a_methods_own_refusal_passes_through_as_it_was_worded(monkeypatch):
    """An AutoqError a method raises already says what is wrong with the weight (AWQ's 'past an fp16 scale'): it is not
    wrapped as the method's failure."""
    monkeypatch.setattr(registry, "_METHODS", registry._METHODS.copy())

    @register_method("test-refuses")
    def refuses(weight, spec, stats=None):
        raise AutoqError("the weights span 1e6, past what an fp16 scale holds")

    with pytest.raises(AutoqError, match=r"^the weights span 1e6, past what an fp16 scale holds$") as info:
        run_method("test-refuses", torch.randn(4, 8), QuantSpec(4, "channel"))
    assert not isinstance(info.value, registry.MethodError)


def test_a_plugin_files_method_records_its_code_and_its_older_digest_still_matches(tmp_path, monkeypatch):
    """A method of a plug-in file (module ``autoq_plugin_<stem>``, which is not autoq's own) has its code recorded, and a
    search that recorded what an older autoq took (its ``legacy`` digest) is not refused as edited."""
    from autoq.plugins import import_plugin

    monkeypatch.setattr(registry, "_METHODS", registry._METHODS.copy())
    path = tmp_path / "preg_file.py"
    path.write_text("from autoq.quant import quantize\n\n\ndef method(weight, spec, stats=None):\n    return quantize(weight, spec)\n")
    monkeypatch.setitem(sys.modules, "autoq_plugin_preg_file", None)  # taken out again after the test
    module = import_plugin(str(path))
    assert module.__name__ == "autoq_plugin_preg_file" and sys.modules[module.__name__] is module
    register_method("test-file-method")(module.method)
    now, older = registry.plugin_code(["test-file-method"]), registry.plugin_code(["test-file-method"], legacy=True)
    assert set(now) == {"test-file-method"} and now != older
    assert registry.changed_code(older, ["test-file-method"]) == registry.changed_code(now, ["test-file-method"]) == []
    assert registry.changed_code({"test-file-method": "edited"}, ["test-file-method"]) == ["test-file-method"]


def test_a_symmetric_result_with_another_zero_point_is_named(monkeypatch):
    """The export stores no zero point for a symmetric format and reads back 2^(bits-1): another was scored, not shipped."""
    monkeypatch.setattr(registry, "_METHODS", registry._METHODS.copy())
    spec = QuantSpec(4, "channel", symmetric=True)
    register_method("test-sym-zero")(lambda w, s, stats=None: _shifted(quantize(w, s), zero=quantize(w, s).zero + 1))
    w = torch.randn(16, 96, generator=torch.Generator().manual_seed(0))
    with pytest.raises(AutoqError, match=r"returned symmetric zero points other than 8 \(2\^\(bits-1\), which the export assumes\)"):
        run_method("test-sym-zero", w, spec)
    assert run_method("rtn-minmax", w, spec).zero.eq(8).all()


@pytest.mark.parametrize("name", ["rtn-minmax", "rtn-mse", "rtn-percentile", "gptq", "adaround"])
def test_a_weight_that_is_not_2d_is_refused_naming_the_reshape(name):
    """An unflattened (8, 3, 3, 3) convolution kernel failed in each method with 'too many values to unpack'."""
    with pytest.raises(AutoqError, match=rf"PTQ method '{name}' takes a 2-D \(out, in\) weight tensor, got \(8, 3, 3, 3\); reshape"):
        run_method(name, torch.randn(8, 3, 3, 3), QuantSpec.from_name("int4-ch-asym"))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("name", method_names())
def test_a_weight_with_nan_or_inf_is_refused_as_the_weights_not_the_methods(name, value, layer):
    """Every method then failed the result check, whose message blamed the method ('returned scales ... not finite')."""
    w, stats = layer
    w = w.clone()
    w[3, 5] = value
    with pytest.raises(registry.MethodError, match=rf"the \({w.shape[0]}, 96\) weight given to PTQ method {name!r} holds 1 NaN or inf value\(s\); quantize finite"):
        run_method(name, w, SPECS[0], stats)  # a MethodError: the quantized-weight cache names the layer (layer_named)
