"""Exporting points that use data-driven methods (GPTQ, AWQ, AdaRound, bias correction).

The export re-quantizes from the same calibration batches the search used, so the
loaded model must give the search cache's outputs (AWQ's input scale and bias
correction's shifted bias included), also with sequential statistics.
"""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch
from helpers import same_tensors
from safetensors import safe_open
from safetensors.torch import load_file

import autoq
from autoq.builtin import load_workload
from autoq.choice import Assignment, LayerChoice
from autoq.cost import CostModel
from autoq.errors import AutoqError
from autoq.evaluate import QuantCache
from autoq.export import CONFIG_NAME, WEIGHTS_NAME, ActQuantLinear, QuantLinear
from autoq.model import find_layers
from autoq.model.capture import CalibrationStats

# digits-cnn layers: conv 0, conv 2, linear 6, linear 8
POINT = {"0": "int4-ch-asym:awq", "2": "int3-g64-asym:gptq", "6": "int4-g128-asym:awq", "8": "int4-ch-asym:bias-correction"}


def assignment(choices: dict[str, str]) -> Assignment:
    return Assignment(tuple((name, LayerChoice.from_name(c)) for name, c in choices.items()))


def search_outputs(float_model: torch.nn.Module, calibration, point: Assignment, x: torch.Tensor, sequential: bool) -> torch.Tensor:
    """What the search evaluated: its cache on the calibration statistics (captured from the float model), with every
    parameter but the quantized weights in fp16, as the export stores them."""
    model = copy.deepcopy(float_model)
    for name, p in model.named_parameters():
        if not name.endswith(".weight"):
            p.data = p.data.half().float()
    stats = CalibrationStats(float_model, find_layers(float_model), calibration, sequential=sequential)
    cache = QuantCache(model, stats)
    with torch.inference_mode(), cache.apply(point) as quantized:
        return quantized(x)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def digits():
    return load_workload("digits-cnn")


@pytest.mark.parametrize("sequential", [False, True])
def test_data_driven_point_round_trips_to_the_search_outputs(digits, tmp_path, sequential, capsys):
    point = assignment(POINT)
    out = autoq.export("digits-cnn", point, tmp_path / "dd", sequential=sequential)  # by name: its calibration set
    # the bar counts layer quantizations: sequentially, each of the 4 data-driven choices sweeps all 4 layers
    done = 16 if sequential else 4
    err = capsys.readouterr().err
    assert "autoq export: 100%" in err and f"| {done}/{done} [" in err
    loaded = autoq.load(out)
    assert isinstance(loaded[6], QuantLinear) and loaded[6].input_scale is not None  # AWQ keeps x / s
    assert loaded[8].input_scale is None
    # the file holds what the cost model counted, AWQ's fp32 input scales (9 + 512 inputs) included
    with safe_open(out / WEIGHTS_NAME, "pt") as f:
        stored = sum(f.get_tensor(k).numel() * f.get_tensor(k).element_size() for k in f.keys())
    assert stored == CostModel.for_model(digits.model, find_layers(digits.model)).cost(point).size_bytes
    x = digits.calibration[0]
    with torch.inference_mode():
        got = loaded(x)
    expected = search_outputs(digits.model, digits.calibration, point, x, sequential)
    assert rel_err(got, expected) < 1e-4  # measured: ~1e-6 (summation order, x / s before the matmul)
    # the data mattered: a plain round-to-nearest export of the same formats gives other outputs
    rtn = {k: v.split(":")[0] + ":rtn-minmax" for k, v in POINT.items()}
    with torch.inference_mode():
        plain = autoq.load(autoq.export("digits-cnn", assignment(rtn), tmp_path / "rtn"))(x)
    assert rel_err(plain, expected) > 1e-3


def test_a_point_of_a_result_exports_as_its_search_quantized(digits, tmp_path):
    """``autoq.export(model, result.best, ...)`` took other calibration batches without a word and left out the search's
    ``sequential``: its loaded model scored otherwise than the search (``result.apply`` refused the same batches)."""
    result = autoq.search("digits-cnn", budget="6bits", n_trials=2, pins={".*": "int3-ch-asym:gptq"}, seed_from="none", sequential=True,
                          tracking_uri=None, storage=None, progress=False)
    fewer = digits.calibration[:-2]
    with pytest.raises(AutoqError, match=rf"these {len(fewer)} calibration batches are not the {len(digits.calibration)} the search calibrated on"):
        autoq.export(copy.deepcopy(digits.model), result.best, tmp_path / "other", calibration=fewer, progress=False)
    out = autoq.export(copy.deepcopy(digits.model), result.best, tmp_path / "same", calibration=digits.calibration, progress=False)
    loaded = autoq.load(out, model=copy.deepcopy(digits.model))
    applied = result.apply(copy.deepcopy(digits.model), calibration=digits.calibration)  # sequential, as searched
    assert torch.allclose(loaded[-1].dequantized_weight(), applied[-1].weight, rtol=0, atol=1e-6)
    assert result.best == dataclasses.replace(result.best, searched=None)  # how it was searched is not part of a point's equality
    unrecorded = dataclasses.replace(result, calibration_digest="", n_calibration=0)  # a search that recorded no digest
    unrecorded.apply(copy.deepcopy(digits.model), calibration=fewer)  # takes any batches: there is nothing to compare them with


def test_bias_correction_stores_the_shifted_bias(digits, tmp_path):
    point = assignment({**{k: "fp16" for k in POINT}, "8": "int3-ch-asym:bias-correction"})
    loaded = autoq.load(autoq.export("digits-cnn", point, tmp_path / "bc"))
    assert not torch.allclose(loaded[8].bias.float(), digits.model[8].bias.half().float())


def test_a_module_needs_its_calibration_batches(digits, tmp_path):
    point = assignment(POINT)
    with pytest.raises(AutoqError, match="need the calibration data the search used"):
        autoq.export(digits.model, point, tmp_path / "x")
    out = autoq.export(digits.model, point, tmp_path / "ok", calibration=digits.calibration)
    by_name = autoq.export("digits-cnn", point, tmp_path / "named")
    assert same_tensors(out / WEIGHTS_NAME, by_name / WEIGHTS_NAME)
    # an iterator of batches (a DataLoader's) too: the NaN check used it up, and the export then found no batch
    from_iterator = autoq.export(digits.model, point, tmp_path / "iter", calibration=iter(digits.calibration))
    assert same_tensors(from_iterator / WEIGHTS_NAME, by_name / WEIGHTS_NAME)


def test_other_calibration_data_is_refused(tmp_path):
    with pytest.raises(AutoqError, match="calibrated on other data"):
        autoq.export("digits-cnn", assignment(POINT), tmp_path / "x", data_fingerprint="some-other-data")


W8A8 = {"0": "int4-ch-asym:rtn-mse", "2": "int8-ch-sym:rtn-minmax", "6": "int8-ch-sym:smoothquant+a8-tensor", "8": "int8-ch-sym:rtn-minmax+a8-token"}


@pytest.mark.parametrize("sequential", [False, True])
def test_w8a8_point_round_trips_to_the_search_outputs(digits, tmp_path, sequential):
    # a sequential sweep runs SmoothQuant+a8 on every layer: the convolutions weight-only (autoq.space, the cache)
    choices = W8A8
    point = assignment(choices)
    config_entry = json.loads((autoq.export("digits-cnn", point, tmp_path / "w", sequential=sequential) / CONFIG_NAME).read_text())["layers"]
    assert config_entry["6"]["activation"] == "a8-tensor" and len(config_entry["6"]["act_range"]) == 2
    assert config_entry["8"]["activation"] == "a8-token" and "act_range" not in config_entry["8"]
    loaded = autoq.load(tmp_path / "w")
    assert isinstance(loaded[6], ActQuantLinear) and loaded[6].input_scale is not None  # SmoothQuant's x / s
    assert isinstance(loaded[8], ActQuantLinear) and loaded[8].input_scale is None
    x = digits.calibration[0]
    with torch.inference_mode():
        got = loaded(x)
    expected = search_outputs(digits.model, digits.calibration, point, x, sequential)
    assert rel_err(got, expected) < 1e-4  # the same fake quantization of x / s, the same stored weights
    weight_only = {k: v.split("+")[0] for k, v in choices.items()}
    with torch.inference_mode():
        plain = autoq.load(autoq.export("digits-cnn", assignment(weight_only), tmp_path / "wo"))(x)
    assert rel_err(plain, expected) > 1e-4  # activation quantization changed the outputs


@pytest.mark.parametrize("choice", ["int4-g32-asym:awq+a4-token", "int8-ch-sym:smoothquant+a8-token"])
def test_a_bf16_layer_with_input_scale_and_activation_format_is_scored_as_it_deploys(tmp_path, choice):
    """The search divided a bf16 input by the input scale rounded to bf16 (0.4% off a channel), the exported layer by
    the fp32 scale: its output was 3% (AWQ with 4-bit activations) from what the search scored. Both divide in fp32
    now, so the layer is one bf16 rounding from the search's output, as a layer without an input scale is."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(48, 64), torch.nn.GELU(), torch.nn.Linear(64, 40)).eval().to(torch.bfloat16)
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randn(8, 48, generator=generator).to(torch.bfloat16) for _ in range(4)]
    point = assignment({"2": choice})
    loaded = autoq.load(autoq.export(model, point, tmp_path / "bf16", calibration=batches, progress=False), model=copy.deepcopy(model))
    stats = CalibrationStats(model, find_layers(model), batches)
    hidden = model[:2](torch.randn(64, 48, generator=generator).to(torch.bfloat16))
    with torch.inference_mode(), QuantCache(copy.deepcopy(model), stats).apply(point) as simulated:
        assert rel_err(loaded[2](hidden).float(), simulated[2](hidden).float()) < 2 ** -7  # bf16's relative step


def test_a_damaged_input_range_in_the_config_says_so(tmp_path):
    """A config whose static input range is not ``[lo, hi]`` raised a bare ``TypeError`` from ``ActRange``."""
    out = autoq.export("digits-cnn", assignment(W8A8), tmp_path / "w")
    config = json.loads((out / CONFIG_NAME).read_text())
    for damaged in ("0.5", [0.1, 0.2, 0.3], [1.0, -1.0], [None, 2.0], [0.0, float("nan")]):
        config["layers"]["6"]["act_range"] = damaged
        (out / CONFIG_NAME).write_text(json.dumps(config))
        with pytest.raises(AutoqError, match=r"gives layer '6' the input range .*not \[lo, hi\].*damaged; export again"):
            autoq.load(out)


def test_activation_formats_on_convolutions_are_refused(tmp_path):
    point = assignment({**W8A8, "2": "int8-ch-sym:rtn-minmax+a8-token"})
    with pytest.raises(AutoqError, match="linear layers only"):
        autoq.export("digits-cnn", point, tmp_path / "x")


class _SmallCnn(torch.nn.Module):
    """A convolution whose input channels differ 30x in range (AWQ scales them apart), then two linear layers."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.fc, self.out = torch.nn.Conv2d(4, 8, 3), torch.nn.Linear(8 * 4 * 4, 64), torch.nn.Linear(64, 10)
        self.register_buffer("spread", torch.tensor([0.2, 1.0, 3.0, 6.0]).view(1, 4, 1, 1))

    def forward(self, x):
        h = torch.relu(self.conv(x * self.spread)).flatten(1)
        return self.out(torch.relu(self.fc(h)))


def test_a_small_data_driven_point_round_trips_to_the_simulation(tmp_path):
    """The fast twin of the digits round trips above: a convolution's AWQ scale folded into its weight at load, the fp32
    input scales stored as computed, a static activation range stored as calibrated, a W8A8 layer's output in the input's
    dtype. Each of these, broken, gave outputs 0.5% to 30% from the simulation (or an fp32 output) here."""
    model = _SmallCnn().eval()
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randn(16, 4, 6, 6, generator=generator) for _ in range(3)]
    point = assignment({"conv": "int3-ch-asym:awq", "fc": "int8-ch-sym:smoothquant+a8-tensor", "out": "int4-g32-asym:awq"})
    out = autoq.export(model, point, tmp_path / "small", calibration=batches, progress=False)
    scale = load_file(str(out / WEIGHTS_NAME))["conv.input_scale"]
    assert float(scale.max() / scale.min()) > 1.5  # the data mattered: AWQ scaled the convolution's input channels apart
    loaded = autoq.load(out, model=_SmallCnn().eval())
    assert loaded.conv.weight.dtype == torch.float32 and isinstance(loaded.fc, ActQuantLinear)
    x = torch.randn(32, 4, 6, 6, generator=generator)
    expected = search_outputs(model, batches, point, x, sequential=False)
    with torch.inference_mode():
        assert rel_err(loaded(x), expected) < 1e-6  # measured: 0.0
        h = torch.relu(loaded.conv(x * model.spread)).flatten(1)
        assert loaded.fc(h.half()).dtype == torch.float16  # as an nn.Linear of a half model gives
