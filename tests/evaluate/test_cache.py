"""QuantCache and apply_assignment: swapping fake-quantized weights in and out."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from autoq.choice import Assignment, LayerChoice
from autoq.errors import AutoqError
from autoq.evaluate import QuantCache, apply_assignment, quantize_layer
from autoq.quant import QuantSpec

INT2 = LayerChoice(QuantSpec(2, "channel"), "rtn-minmax")
INT3 = LayerChoice(QuantSpec(3, "group", 32), "rtn-mse")
FP16 = LayerChoice(QuantSpec.half())


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 8)).eval()


def weights(m: nn.Module) -> dict[str, torch.Tensor]:
    return {name: m.get_submodule(name).weight.detach().clone() for name in ("0", "2")}


ASSIGNMENT = Assignment.from_dict({"0": INT3, "2": INT2})


def test_quantize_layer_returns_native_layout_and_changes_values():
    m = model()
    q = quantize_layer(m[0], INT3)
    assert q.shape == m[0].weight.shape
    assert q.dtype == m[0].weight.dtype
    assert not torch.equal(q, m[0].weight.detach())
    # int3 with groups of 32 has at most 8 levels per group
    assert all(len(torch.unique(q[r, g * 32:(g + 1) * 32])) <= 8 for r in range(16) for g in range(2))


def test_quantize_layer_hf_conv1d_layout():
    torch.manual_seed(0)
    module = Conv1D(8, 64)  # weight (64, 8)
    q = quantize_layer(module, INT2)
    assert q.shape == (64, 8)
    # per output channel means per column of the transposed weight: <= 4 levels each
    assert all(len(torch.unique(q[:, o])) <= 4 for o in range(8))


def test_apply_swaps_in_quantized_weights_and_restores():
    m = model()
    original = weights(m)
    ptrs = {name: m.get_submodule(name).weight.data_ptr() for name in original}
    expected = {"0": quantize_layer(m[0], INT3), "2": quantize_layer(m[2], INT2)}
    cache = QuantCache(m)
    with cache.apply(ASSIGNMENT) as applied:
        assert applied is m
        for name, w in expected.items():
            assert torch.equal(m.get_submodule(name).weight.detach(), w)
    for name, w in original.items():
        assert torch.equal(m.get_submodule(name).weight.detach(), w)
        assert m.get_submodule(name).weight.data_ptr() == ptrs[name]


def test_apply_restores_when_body_raises():
    m = model()
    original = weights(m)
    cache = QuantCache(m)
    with pytest.raises(RuntimeError, match="boom"):
        with cache.apply(ASSIGNMENT):
            assert not torch.equal(m[0].weight.detach(), original["0"])
            raise RuntimeError("boom")
    for name, w in original.items():
        assert torch.equal(m.get_submodule(name).weight.detach(), w)


def test_apply_restores_layers_already_swapped_when_a_later_one_fails():
    m = model()
    original = weights(m)
    cache = QuantCache(m)
    bad = Assignment.from_dict({"0": INT3, "ghost": INT2})
    with pytest.raises(AutoqError, match="ghost"):
        with cache.apply(bad):
            pass
    assert torch.equal(m[0].weight.detach(), original["0"])


def test_a_second_cache_on_a_model_in_use_is_refused_and_the_first_restores():
    """Two searches on one module at once (threads, an Optuna study with n_jobs=2): the second took the first's quantized
    weights for the originals, scored wrong qualities and left the model quantized for good."""
    m = model()
    original = weights(m)
    first, second = QuantCache(m), QuantCache(m)
    with first.apply(ASSIGNMENT):
        with pytest.raises(AutoqError, match="does not hold the weight this search started from: another autoq search in this process"):
            with second.apply(ASSIGNMENT):
                pass
        copy = pickle.loads(pickle.dumps(m))  # what an evaluate() may save: the model alone, nothing of the caches
        assert set(vars(copy)) == set(vars(m)) and len(pickle.dumps(m)) < 2 * len(pickle.dumps(model()))
    for name, w in original.items():
        assert torch.equal(m.get_submodule(name).weight.detach(), w)
    with second.apply(ASSIGNMENT):  # free again once the first is done
        pass
    with first.apply(ASSIGNMENT):  # one cache's applies, one after another, as a search makes them
        pass


def test_applied_model_output_differs_and_returns():
    m = model()
    x = torch.randn(5, 64)
    with torch.no_grad():
        before = m(x)
        with QuantCache(m).apply(ASSIGNMENT):
            during = m(x)
        after = m(x)
    assert not torch.allclose(during, before)
    assert torch.equal(after, before)


def test_cache_memoises():
    m = model()
    cache = QuantCache(m)
    assert len(cache) == 0
    first = cache.layer("0", INT3)
    assert cache.layer("0", INT3) is first
    assert len(cache) == 1
    with cache.apply(ASSIGNMENT):
        assert torch.equal(m[0].weight, first.weight)
    assert len(cache) == 2
    with cache.apply(ASSIGNMENT):
        pass
    assert len(cache) == 2
    with cache.apply(Assignment.from_dict({"0": INT2, "2": INT2})):
        pass
    assert len(cache) == 3
    assert cache.weight("0", INT2) is not cache.weight("0", INT3)


def test_repeated_apply_is_reproducible():
    m = model()
    x = torch.randn(3, 64)
    cache = QuantCache(m)
    with torch.no_grad():
        with cache.apply(ASSIGNMENT):
            first = m(x)
        with cache.apply(Assignment.from_dict({"0": FP16, "2": FP16})):
            pass
        with cache.apply(ASSIGNMENT):
            second = m(x)
    assert torch.equal(first, second)


def test_apply_assignment_in_place():
    m = model()
    expected = {"0": quantize_layer(m[0], INT3), "2": quantize_layer(m[2], INT2)}
    out = apply_assignment(m, ASSIGNMENT)
    assert out is m
    for name, w in expected.items():
        assert torch.equal(m.get_submodule(name).weight.detach(), w)
    assert m[0].weight.requires_grad  # still a parameter


def test_apply_assignment_matches_cache():
    m1, m2 = model(), model()
    x = torch.randn(4, 64)
    with torch.no_grad():
        with QuantCache(m1).apply(ASSIGNMENT):
            via_cache = m1(x)
        via_apply = apply_assignment(m2, ASSIGNMENT)(x)
    assert torch.equal(via_cache, via_apply)


def test_fp16_choice_rounds_to_half():
    m = model()
    w = m[0].weight.detach().clone()
    apply_assignment(m, {"0": FP16})
    assert torch.equal(m[0].weight.detach(), w.half().float())
    assert m[0].weight.dtype == torch.float32
    assert not torch.equal(m[0].weight.detach(), w)  # random float32 weights are not all representable in fp16


def test_quantized_output_differs_from_original():
    m = model()
    x = torch.randn(6, 64)
    with torch.no_grad():
        before = m(x)
        after = apply_assignment(m, ASSIGNMENT)(x)
    assert not torch.allclose(before, after)
    # but stays correlated: quantization is an approximation, not noise
    cos = torch.nn.functional.cosine_similarity(before.flatten(), after.flatten(), dim=0)
    assert cos > 0.5


@pytest.mark.parametrize("choice", ["int8-ch-sym:rtn-minmax+a8-token", "int8-ch-sym:smoothquant+a8-tensor", "int8-ch-sym:smoothquant+a4-token"])
def test_hf_conv1d_quantizes_its_inputs_as_the_same_linear_layer_does(choice):
    """transformers' Conv1D takes its features last, as nn.Linear does: per-token scales are per (batch, position)
    row of features (not per feature across positions, as for a channels-first convolution), and SmoothQuant's
    input scale applies to it (it was refused as for a convolution)."""
    from autoq.model import find_layers
    from autoq.model.capture import CalibrationStats

    torch.manual_seed(0)
    linear = nn.Sequential(nn.Linear(16, 12))
    conv1d = nn.Sequential(Conv1D(12, 16))
    with torch.no_grad():
        conv1d[0].weight.copy_(linear[0].weight.T)
        conv1d[0].bias.copy_(linear[0].bias)
    x = torch.randn(3, 7, 16) * torch.linspace(0.1, 4, 16)  # (batch, positions, features), outlier features
    outs = []
    for model in (linear, conv1d):
        cache = QuantCache(model, CalibrationStats(model, find_layers(model), [x[:2], x[2:]]))
        with torch.no_grad(), cache.apply(Assignment((("0", LayerChoice.from_name(choice)),))):
            outs.append(model(x))
    assert not torch.allclose(outs[0], linear(x).detach())  # the format does something
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)


def test_an_input_scale_from_a_method_not_registered_as_scaling_is_refused(monkeypatch):
    """The cost model counts an input scale only for methods registered with ``scales_input``: a method that returns
    one without saying so would be exported larger than the search believed."""
    from autoq.ptq import registry
    from autoq.ptq.result import TransformedTensor
    from autoq.ptq.rtn import rtn_minmax

    def scaled(weight, spec, stats=None):
        q = rtn_minmax(weight, spec)
        return TransformedTensor(q.spec, q.codes, q.scale, q.zero, input_scale=torch.ones(weight.shape[1]))

    m = model()
    choice = LayerChoice(QuantSpec(4, "channel"), "test-scaled")
    base = registry._METHODS
    monkeypatch.setattr(registry, "_METHODS", base.copy())
    registry._METHODS.add("test-scaled", registry.MethodInfo("test-scaled", scaled, needs_stats=False))
    with pytest.raises(AutoqError, match="scales_input=True"):
        quantize_layer(m[0], choice)
    monkeypatch.setattr(registry, "_METHODS", base.copy())
    registry._METHODS.add("test-scaled", registry.MethodInfo("test-scaled", scaled, False, scales_input=True))
    assert quantize_layer(m[0], choice).shape == m[0].weight.shape


def test_apply_tells_on_layer_of_each_layer_it_quantizes_and_of_none_it_cached():
    """The search's live status (a trial quantizing an LLM's layers with GPTQ takes minutes between the bar's steps)."""
    calls: list[tuple[int, int]] = []
    cache = QuantCache(model(), on_layer=lambda done, todo: calls.append((done, todo)))
    with cache.apply(ASSIGNMENT):
        assert calls == [(0, 2), (1, 2), (2, 2)]
    calls.clear()
    with cache.apply(ASSIGNMENT):  # both cached: nothing to say
        pass
    with cache.apply(Assignment.from_dict({"0": INT3, "2": FP16})):
        pass
    assert calls == [(0, 1), (1, 1)]


def _held_bytes(layer) -> int:
    """Bytes of the tensors a cached layer holds (its module aside: the model's own)."""
    def tensors(value):
        if isinstance(value, torch.Tensor):
            yield value
        elif hasattr(value, "__dataclass_fields__"):
            for field in value.__dataclass_fields__:
                yield from tensors(getattr(value, field))
    return sum(t.numel() * t.element_size() for name in layer.__dataclass_fields__ if name != "module"
               for t in tensors(getattr(layer, name)))


@pytest.mark.parametrize("choice", [INT2, INT3, FP16, LayerChoice.from_name("int8-ch-sym:smoothquant+a8-token")])
def test_a_cached_layer_holds_codes_not_a_dense_weight(choice):
    """The search's cache keeps every (layer, choice) it has tried: as fp32 weights, a model's copy per format (5.0 GB
    at peak for 0.4 GB of linear weights in 14 trials, `benchmarks/search_memory.py`). Codes: a byte a weight (fp16: two), scales and biases aside."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(256, 128)).eval()
    stats = None
    if choice.method == "smoothquant":
        from autoq.model import find_layers
        from autoq.model.capture import CalibrationStats

        stats = CalibrationStats(m, find_layers(m), [torch.randn(8, 256)])
    layer = QuantCache(m, stats).layer("0", choice)
    weights = m[0].weight.numel()
    assert _held_bytes(layer) <= (2 if choice.weight.is_half else 1.25) * weights + 8 * 256 + 4 * 128  # dense fp32: 4 a weight
    assert layer.weight.dtype == torch.float32 and layer.weight.shape == m[0].weight.shape


def test_a_cache_refuses_a_weight_changed_in_place_since_it_was_made():
    """It served the quantized weights of the weights it started from: after load_state_dict of weights 10x, the
    model ran with the old ones' codes (mean |w| 0.18 where the model's was 1.8)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16))
    cache = QuantCache(model)
    int4 = LayerChoice.from_name("int4-ch-asym:rtn-mse")
    with cache.apply({"0": int4}):
        pass
    model.load_state_dict({k: v * 10 for k, v in model.state_dict().items()})
    with pytest.raises(AutoqError, match=r"layer '0' does not hold the weight this search started from: .*its weights changed since "
                                         r"\(load_state_dict, a training step\).*a changed model a new QuantCache"):
        with cache.apply({"0": int4}):
            pass
    with QuantCache(model).apply({"0": int4}) as applied:  # a new cache quantizes the weights as they are now
        assert applied[0].weight.abs().mean() > 1.0


def test_a_choice_or_layer_that_cannot_be_quantized_is_one_clear_error_and_changes_nothing():
    """A string choice and a layer without a weight were AttributeErrors; apply_assignment quantized the layers before
    a refused one in place, and left the model half quantized."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    int4 = LayerChoice.from_name("int4-ch-asym:rtn-mse")
    with pytest.raises(AutoqError, match=r"layer '0': a choice is a LayerChoice \(LayerChoice.from_name\('int4-ch-asym:rtn-mse'\)\), got str"):
        QuantCache(model).weight("0", "int4-ch-asym:rtn-mse")
    with pytest.raises(AutoqError, match=r"layer '1' is a ReLU, which has no weight to quantize"):
        QuantCache(model).weight("1", int4)
    for bad, match in (({"0": int4, "1": int4}, "layer '1' is a ReLU, which has no weight to quantize"),
                       ({"0": int4, "2": LayerChoice.from_name("int8-ch-sym:rtn-minmax+a8-token")},
                        r"layer '2': int8-ch-sym:rtn-minmax\+a8-token quantizes activations, and apply_assignment quantizes weights only; "
                        r"use QuantCache\(model, stats\).apply\(assignment\)")):
        with pytest.raises(AutoqError, match=match):
            apply_assignment(model, bad)
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_trial_that_writes_into_the_parameter_is_not_taken_for_a_change_of_the_model():
    """An evaluate that puts a snapshot back with load_state_dict (test-time adaptation) bumps the parameter's version
    inside the trial, into the swapped-in weight: every later trial was refused as if the model had changed."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16))
    cache = QuantCache(model)
    for choice in ("int4-ch-asym:rtn-mse", "int8-ch-asym:rtn-mse", "int4-ch-asym:rtn-mse"):
        with cache.apply({"0": LayerChoice.from_name(choice)}) as applied:
            applied.load_state_dict({"0.weight": applied[0].weight.clone()}, strict=False)


def test_a_parameter_changed_in_place_within_a_trial_is_said_once():
    """An evaluate that takes a training step changed the caller's biases (and norms) for good, and every later trial
    scored the changed model, unsaid: apply restores the quantized layers' weights alone."""
    import warnings

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.LayerNorm(16), nn.Linear(16, 4))
    cache = QuantCache(model)
    int4 = {"0": LayerChoice.from_name("int4-ch-asym:rtn-mse")}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with cache.apply(int4) as applied:  # reading, and writing the swapped-in weight's fresh copy, say nothing
            applied(torch.randn(2, 16))
            applied[0].weight.data.zero_()
    with pytest.warns(UserWarning, match=r"parameters or buffers \['1.weight'\] were changed in place while a quantized assignment was applied"):
        with cache.apply(int4) as applied:
            with torch.no_grad():
                applied[1].weight.add_(1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per cache
        with cache.apply(int4) as applied:
            with torch.no_grad():
                applied[2].bias.add_(1.0)
    with pytest.warns(UserWarning, match=r"parameters or buffers \['2.weight'\] were changed"), pytest.raises(RuntimeError):
        with QuantCache(model).apply(int4) as applied:  # then raised: the change stays all the same
            applied[2].weight = nn.Parameter(torch.zeros(4, 16))
            raise RuntimeError("evaluate failed")


def test_a_non_persistent_buffer_a_forward_updates_is_not_a_change_of_the_model():
    """A cache the model keeps for itself (rotary tables, a step counter, rebuilt by its code and not in its state dict)
    may change in every forward: no warning; a persistent buffer changed in place is the model's state, and is said."""
    import warnings

    class Counting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)
            self.register_buffer("calls", torch.zeros(1), persistent=False)
            self.register_buffer("seen", torch.zeros(1))
            self.count_seen = False

        def forward(self, x):
            self.calls.add_(1)
            if self.count_seen:
                self.seen.add_(1)
            return self.lin(x)

    model = Counting()
    int4 = {"lin": LayerChoice.from_name("int4-ch-asym:rtn-mse")}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with QuantCache(model).apply(int4) as applied:
            applied(torch.randn(2, 4))
    model.count_seen = True
    with pytest.warns(UserWarning, match=r"parameters or buffers \['seen'\] were changed in place"):
        with QuantCache(model).apply(int4) as applied:
            applied(torch.randn(2, 4))


def test_a_layer_whose_weight_a_parametrization_computes_is_named_as_such():
    """weight_norm's layer, named in an assignment by hand, was refused as 'another autoq search in this process is
    quantizing the same nn.Module': its computed weight is a new tensor on every read."""
    from torch.nn.utils.parametrizations import weight_norm

    torch.manual_seed(0)
    m = nn.Sequential(weight_norm(nn.Linear(32, 16)), nn.ReLU(), nn.Linear(16, 8)).eval()
    with pytest.raises(AutoqError, match="layer '0' has a weight that a parametrization computes .*remove_parametrizations"):
        with QuantCache(m).apply(Assignment.from_dict({"0": "int4-ch-asym:rtn-mse"})):
            pass
    with QuantCache(m).apply(Assignment.from_dict({"2": "int4-ch-asym:rtn-mse"})) as quantized:  # the other layer quantizes
        assert quantized(torch.randn(2, 32)).shape == (2, 8)
