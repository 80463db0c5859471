"""QuantCache with layer statistics: data-driven methods, activation hooks, bias correction, sequential capture."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autoq.choice import Assignment, LayerChoice
from autoq.errors import AutoqError
from autoq.evaluate import QuantCache
from autoq.evaluate.cache import apply_assignment
from autoq.model import find_layers
from autoq.model.capture import CalibrationStats, capture_stats


def model_and_data() -> tuple[nn.Module, list[torch.Tensor]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 48), nn.GELU(), nn.Linear(48, 8))
    gen = torch.Generator().manual_seed(1)
    scale = torch.ones(32)
    scale[3] = 30.0  # an outlier channel, as in LLM activations
    data = [torch.randn(64, 32, generator=gen) * scale for _ in range(4)]
    return model, data


def uniform(model: nn.Module, name: str) -> Assignment:
    return Assignment(tuple((layer.name, LayerChoice.from_name(name)) for layer in find_layers(model)))


def output_error(model, data, cache, assignment) -> float:
    x = torch.cat(data)
    with torch.no_grad():
        ref = model(x)
        with cache.apply(assignment) as m:
            out = m(x)
    return float((out - ref).pow(2).mean())


def test_old_callers_without_stats_still_work():
    model, data = model_and_data()
    cache = QuantCache(model)
    assert output_error(model, data, cache, uniform(model, "int4-ch-asym:rtn-mse")) > 0
    with pytest.raises(AutoqError, match="statistics"):
        cache.weight("0", LayerChoice.from_name("int4-ch-asym:gptq"))


def test_data_methods_read_captured_stats_and_beat_rtn():
    model, data = model_and_data()
    stats = CalibrationStats(model, find_layers(model), data)
    cache = QuantCache(model, stats)
    rtn = output_error(model, data, cache, uniform(model, "int3-ch-asym:rtn-minmax"))
    gptq = output_error(model, data, cache, uniform(model, "int3-ch-asym:gptq"))
    assert gptq < rtn


def test_activation_hooks_are_installed_and_removed():
    model, data = model_and_data()
    cache = QuantCache(model, capture_stats(model, find_layers(model), data))
    x = torch.cat(data)
    with torch.no_grad():
        ref = model(x)
        with cache.apply(uniform(model, "int8-ch-sym:rtn-minmax+a8-tensor")) as m:
            assert all(len(layer._forward_pre_hooks) == 1 for layer in (m[0], m[2]))
            quantized = m(x)
        assert all(len(layer._forward_pre_hooks) == 0 for layer in (model[0], model[2]))
        assert torch.equal(model(x), ref)
    assert not torch.equal(quantized, ref)


def test_smoothquant_beats_plain_per_tensor_w8a8_on_outliers():
    model, data = model_and_data()
    cache = QuantCache(model, capture_stats(model, find_layers(model), data))
    plain = output_error(model, data, cache, uniform(model, "int8-ch-sym:rtn-minmax+a4-tensor"))
    smooth = output_error(model, data, cache, uniform(model, "int8-ch-sym:smoothquant+a4-tensor"))
    assert smooth < 0.7 * plain


def test_weight_only_smoothquant_folds_the_scale():
    model, data = model_and_data()
    cache = QuantCache(model, capture_stats(model, find_layers(model), data))
    layer = cache.layer("0", LayerChoice.from_name("int8-ch-sym:smoothquant"))
    assert layer.input_scale is None and layer.activation is None  # nothing for a hook to do
    assert output_error(model, data, cache, uniform(model, "int8-ch-sym:smoothquant")) < 1e-3


def test_bias_correction_changes_bias_inside_apply_only():
    model, data = model_and_data()
    cache = QuantCache(model, capture_stats(model, find_layers(model), data))
    bias = model[0].bias.detach().clone()
    with cache.apply(uniform(model, "int2-ch-asym:bias-correction")) as m:
        assert not torch.equal(m[0].bias, bias)
    assert torch.equal(model[0].bias, bias)
    with cache.apply(uniform(model, "int2-ch-asym:bias-correction")) as m:
        corrected_bias = m[0].bias.detach().clone()
        with torch.no_grad():
            m[0].bias.add_(100.0)  # an evaluate writing into the corrected bias, which apply puts back anyway
    with cache.apply(uniform(model, "int2-ch-asym:bias-correction")) as m:
        assert torch.equal(m[0].bias, corrected_bias)  # the next trial gets the cached correction, not the written one
    rtn = output_error(model, data, cache, uniform(model, "int2-ch-asym:rtn-mse"))
    corrected = output_error(model, data, cache, uniform(model, "int2-ch-asym:bias-correction"))
    assert corrected < rtn


def _cnn_and_data() -> tuple[nn.Module, list[torch.Tensor]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 8))
    return model, [torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(2)]


def test_an_input_scale_with_an_activation_format_on_a_convolution_is_refused():
    """SmoothQuant's per-input-channel division before an activation format exists on linear layers only (the hook and the
    exported layer are a linear layer's); the same weight format without the activation format is taken."""
    model, data = _cnn_and_data()
    cache = QuantCache(model, capture_stats(model, find_layers(model), data))
    with pytest.raises(AutoqError, match="input scaling with activation quantization is supported on linear layers only"):
        with cache.apply({"0": LayerChoice.from_name("int8-ch-sym:smoothquant+a8-token")}):
            pass
    with cache.apply({"0": LayerChoice.from_name("int8-ch-sym:smoothquant")}) as m:
        assert m(data[0]).shape == (8, 8)


def test_a_sequential_sweep_quantizes_a_convolution_weight_only_and_keeps_it_as_such():
    """A sweep with a W8A8 choice gives the convolutions its weight format alone (as the search space does): the
    convolution's entry is its weight-only choice, which a later trial then finds without a second sweep."""
    model, data = _cnn_and_data()
    cache = QuantCache(model, CalibrationStats(model, find_layers(model), data, sequential=True))
    w8a8 = LayerChoice.from_name("int8-ch-sym:gptq+a8-token")
    cache.layer("2", w8a8)
    assert len(cache) == 2
    cache.layer("0", LayerChoice(w8a8.weight, w8a8.method))
    assert len(cache) == 2  # no second sweep


def test_sequential_cache_quantizes_every_layer_in_one_sweep():
    model, data = model_and_data()
    cache = QuantCache(model, CalibrationStats(model, find_layers(model), data, sequential=True))
    before = [p.detach().clone() for p in model.parameters()]
    cache.layer("2", LayerChoice.from_name("int3-ch-asym:gptq"))
    assert len(cache) == 2  # the sweep filled layer 0 too
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    flat = QuantCache(model, CalibrationStats(model, find_layers(model), data))
    choice = LayerChoice.from_name("int3-ch-asym:gptq")
    assert torch.equal(cache.weight("0", choice), flat.weight("0", choice))  # first layer: same float input
    assert not torch.equal(cache.weight("2", choice), flat.weight("2", choice))


def test_sequential_entries_do_not_depend_on_the_order_layers_are_met():
    """A mixed assignment's sweeps must quantize the float weights of earlier layers, never the ones the same
    ``apply`` already swapped in (a bug once: later sweeps re-quantized quantized weights)."""
    model, data = model_and_data()
    mixed = Assignment((("0", LayerChoice.from_name("int3-ch-asym:awq")), ("2", LayerChoice.from_name("int3-ch-asym:gptq"))))
    met_in_apply = QuantCache(model, CalibrationStats(model, find_layers(model), data, sequential=True))
    met_before = QuantCache(model, CalibrationStats(model, find_layers(model), data, sequential=True))
    for name in reversed(list(mixed)):  # fill the entries outside apply, last layer first
        met_before.layer(name, mixed[name])
    assert output_error(model, data, met_in_apply, mixed) == output_error(model, data, met_before, mixed)
    gptq = LayerChoice.from_name("int3-ch-asym:gptq")
    assert torch.equal(met_in_apply.weight("0", gptq), met_before.weight("0", gptq))


def test_apply_assignment_refuses_activation_formats():
    model, data = model_and_data()
    with pytest.raises(AutoqError, match="activations"):
        apply_assignment(model, uniform(model, "int8-ch-sym:rtn-minmax+a8-token"))


def test_search_cache_gets_lazy_stats_and_the_sequential_flag():
    from autoq.builtin.workload import Workload
    from autoq.engine import SearchConfig
    from autoq.engine.runner import new_cache

    model, data = model_and_data()
    workload = Workload("toy", model, data, lambda m: 1.0, "none")
    cache = new_cache(workload, SearchConfig(sequential=True, tracking_uri=None, storage=None))
    assert isinstance(cache.stats, CalibrationStats) and cache.stats.sequential
    assert [layer.name for layer in cache.stats.layers] == ["0", "2"]
    assert not new_cache(workload).stats.sequential
    cache.weight("2", LayerChoice.from_name("int4-ch-asym:awq"))
    assert len(cache) == 2
