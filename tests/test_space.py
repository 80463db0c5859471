"""SearchSpace: per-layer options from a preset, pins, uniform assignments, extremes."""

from __future__ import annotations

import itertools
import re

import pytest
import torch
from torch import nn

from autoq.choice import Assignment, LayerChoice
from autoq.cost import CostModel
from autoq.errors import AutoqError
from autoq.model import find_layers
from autoq.quant import QuantSpec
from autoq.search_spaces import Preset, Rule, load_preset
from autoq.space import SearchSpace

FP16 = LayerChoice(QuantSpec.half())
N_DEFAULT_LABELS = 6 * 2 + 1  # 6 bit-widths x (channel, g128) + fp16


def model() -> nn.Module:
    """Layer '0' is wide (256 inputs: g128 is real groups); '2' is narrow (64 inputs)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(64, 4))


@pytest.fixture(scope="module")
def layers():
    m = model()
    return find_layers(m)


@pytest.fixture(scope="module")
def cost_model(layers):
    return CostModel.for_model(model(), layers)


@pytest.fixture(scope="module")
def space(layers):
    return SearchSpace.build(load_preset("default"), layers)


def rule(**kw) -> Rule:
    base = dict(layers=".*", bits=(4,), granularity=("channel",), symmetric=(False,), methods=("rtn-mse",), half=False)
    base.update(kw)
    return Rule(**base)


def test_layer_shapes(layers):
    assert [(layer.name, layer.in_features) for layer in layers] == [("0", 256), ("2", 16), ("4", 64)]


def test_options_are_distinct_and_hold_fp16_once(space):
    assert space.names == ["0", "2", "4"]
    for opts in space.options:
        assert len(set(opts)) == len(opts)
        assert sum(c.weight.is_half for c in opts) == 1
        assert FP16 in opts


def test_wide_layer_offers_every_preset_option(space):
    opts = space.options[0]
    assert len(opts) == N_DEFAULT_LABELS
    names = {c.name for c in opts}
    for bits in (2, 3, 4, 5, 6, 8):
        assert f"int{bits}-ch-asym:rtn-mse" in names
        assert f"int{bits}-g128-asym:rtn-mse" in names


@pytest.mark.parametrize("index", [1, 2])
def test_narrow_layer_has_no_group_128(space, index):
    opts = space.options[index]
    assert all(c.weight.granularity != "group" for c in opts)
    assert len(opts) == 6 + 1  # g128 collapsed onto per-channel
    assert {c.weight.bits for c in opts} == {2, 3, 4, 5, 6, 8, 16}


def test_labels_keep_preset_wording(space):
    for labs in space.labels:
        assert len(labs) == N_DEFAULT_LABELS
    narrow = space.labels[1]
    assert narrow["int4-g128-asym:rtn-mse"] == narrow["int4-ch-asym:rtn-mse"]
    assert narrow["int4-g128-asym:rtn-mse"].weight == QuantSpec(4, "channel", None, False)
    wide = space.labels[0]
    assert wide["int4-g128-asym:rtn-mse"].weight == QuantSpec(4, "group", 128, False)


def test_uniform_assignments_one_per_label(space):
    uniform = space.uniform_assignments()
    assert len(uniform) == N_DEFAULT_LABELS
    assert len(set(uniform)) == len(uniform)
    labels = list(space.labels[0])
    for a in uniform:
        space.validate(a)
        assert list(a) == space.names
        # uniform in the preset-label sense: one label explains every layer
        matching = [lab for lab in labels if all(a[name] == labs[lab] for name, labs in zip(space.names, space.labels))]
        assert len(matching) == 1


def test_uniform_g128_falls_back_to_channel_on_narrow_layers(space):
    uniform = space.uniform_assignments()
    g128 = [a for a in uniform if a["0"].weight == QuantSpec(4, "group", 128, False)]
    assert len(g128) == 1
    assert g128[0]["2"].weight == QuantSpec(4, "channel", None, False)
    assert g128[0]["4"].weight == QuantSpec(4, "channel", None, False)
    all_fp16 = [a for a in uniform if all(c == FP16 for c in a.values())]
    assert len(all_fp16) == 1


def test_convolutions_take_activation_formats_weight_only_under_the_same_labels():
    """A convolution cannot take an activation format (the simulation and the export run them on features-last
    GEMMs only), so under ``w8a8`` it gets each option weight-only: the uniform "+a8-tensor" point quantizes the
    linear layers' activations and the convolutions' weights, as a narrow layer turns g128 per-channel."""
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    space = SearchSpace.build(load_preset("w8a8"), find_layers(cnn))
    conv, linear = space.options
    assert all(c.activation is None for c in conv) and len(conv) == 4  # rtn-minmax, smoothquant(-search), fp16
    assert {c.activation.name for c in linear if c.activation is not None} == {"a8-tensor", "a8-token"}
    label = "int8-ch-sym:smoothquant+a8-tensor"
    assert space.labels[0][label] == LayerChoice.from_name("int8-ch-sym:smoothquant")
    assert space.labels[1][label] == LayerChoice.from_name(label)
    uniform = [a for a in space.uniform_assignments() if a["3"] == LayerChoice.from_name(label)]
    assert len(uniform) == 1 and uniform[0]["0"] == LayerChoice.from_name("int8-ch-sym:smoothquant")
    with pytest.raises(AutoqError, match=r"pin '\^0\$' gives '0', a conv2d layer, the activation format of 'int8-ch-sym:rtn-minmax\+a8-token'; "
                                         r"activation formats run on linear layers only: pin 'int8-ch-sym:rtn-minmax' there"):
        SearchSpace.build(load_preset("w8a8"), find_layers(cnn), {"^0$": "int8-ch-sym:rtn-minmax+a8-token"})
    assert SearchSpace.build(load_preset("w8a8"), find_layers(cnn), {"^3$": "int8-ch-sym:rtn-minmax+a8-token"}).options[1][0].activation


def test_layers_data_driven_methods_cannot_run_on_get_the_data_free_ones_only():
    """A depthwise convolution has no single input per output channel: GPTQ, AdaRound and bias correction failed on
    it in every trial that picked them (half the trials of a cnn-mixed search), or in all of them."""
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 8, 3, padding="same"), nn.Flatten(), nn.Linear(8 * 4 * 4, 4))
    layers = find_layers(cnn)
    assert [bool(layer.no_rows) for layer in layers] == [False, True, True, False]
    assert "grouped convolution (groups=8)" in layers[1].no_rows and "padding='same'" in layers[2].no_rows
    space = SearchSpace.build(load_preset("cnn-mixed"), layers)
    methods = [{c.method for c in opts if not c.weight.is_half} for opts in space.options]
    assert methods[0] == methods[3] == {"rtn-mse", "rtn-percentile", "bias-correction", "adaround"}
    assert methods[1] == methods[2] == {"rtn-mse", "rtn-percentile"}
    assert all(a["1"].weight.is_half or a["1"].method in ("rtn-mse", "rtn-percentile") for a in space.uniform_assignments())
    gptq_only = Preset("g", "", (Rule(".*", (4,), ("channel",), (False,), ("gptq",), False),))
    with pytest.raises(AutoqError, match=r"gives '1' only data-driven methods \['gptq'\], and a grouped convolution \(groups=8\).* cannot take them"):
        SearchSpace.build(gptq_only, layers)
    half_rule = Rule("^1$", (16,), ("channel",), (False,), ("gptq",), False)  # fp16 alone runs no method: as a pin of fp16, taken
    assert SearchSpace.build(Preset("h", "", (half_rule, *gptq_only.rules)), layers[:2]).options[1] == (LayerChoice.from_name("fp16"),)
    with pytest.raises(AutoqError, match=r"pin '\^1\$' gives '1' 'int4-ch-asym:gptq', a data-driven method, and a grouped convolution"):
        SearchSpace.build(load_preset("cnn-mixed"), layers, {"^1$": "int4-ch-asym:gptq"})


def test_a_layer_the_data_never_reaches_is_refused_what_needs_its_inputs_in_plain_words():
    """A static activation pinned on it passed, and every trial failed advising a data-free method it already had; the
    messages read 'and not called by the model on any calibration batch cannot take them'."""
    from autoq.model import mark_unreached

    layers = mark_unreached(find_layers(nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16))), ["1"])
    with pytest.raises(AutoqError, match=r"pin '\^1\$' gives '1' 'int8-ch-sym:rtn-minmax\+a8-tensor', whose static activation format "
                                         r"a8-tensor calibrates its range on the layer's inputs, and a layer the model never calls on the "
                                         r"calibration batches has none; pin a dynamic format \(a8-token\)"):
        SearchSpace.build(load_preset("w8a8"), layers, {"^1$": "int8-ch-sym:rtn-minmax+a8-tensor"})
    assert SearchSpace.build(load_preset("w8a8"), layers, {"^1$": "int8-ch-sym:rtn-minmax+a8-token"}).options[1][0].activation.name == "a8-token"
    offered = SearchSpace.build(load_preset("w8a8"), layers).options  # a rule's static format: to the layers that see data only
    static = [[c.activation.static for c in opts if c.activation is not None] for opts in offered]
    assert any(static[0]) and static[1] and not any(static[1])  # every trial giving it one failed
    gptq_only = Preset("g", "", (Rule(".*", (4,), ("channel",), (False,), ("gptq",), False),))
    with pytest.raises(AutoqError, match=r"and a layer the model never calls on the calibration batches cannot take them; .*or skip the layer"):
        SearchSpace.build(gptq_only, layers)


def test_a_group_exactly_as_wide_as_the_layer_is_per_channel():
    """g128 on 128 inputs is one group a row: per channel, stored alike. Kept apart, each bit-width's two options were two
    baselines of equal cost, and trials went to the duplicates."""
    opts = SearchSpace.build(load_preset("default"), find_layers(nn.Sequential(nn.Linear(128, 8)))).options[0]
    assert all(c.weight.granularity != "group" for c in opts) and len(opts) == 6 + 1


def test_assignment_by_indices(space):
    a = space.assignment([0, 1, 2])
    assert isinstance(a, Assignment)
    assert [a[n] for n in space.names] == [space.options[0][0], space.options[1][1], space.options[2][2]]


# ---------------------------------------------------------------- pins


def test_pin_fixes_a_layer(layers):
    space = SearchSpace.build(load_preset("default"), layers, pins={"^0$": "fp16"})
    assert space.options[0] == (FP16,)
    assert len(space.options[1]) == 7


def test_pin_with_plain_name(layers):
    space = SearchSpace.build(load_preset("default"), layers, pins={"0": "int8-ch-asym:rtn-minmax"})
    assert space.options[0] == (LayerChoice.from_name("int8-ch-asym:rtn-minmax"),)
    assert len(space.options[2]) == 7


def test_a_pinned_group_as_wide_as_the_layer_is_per_channel_as_a_rules_is(layers):
    """A rule turns g128 per-channel on a 64-input layer; a pin kept the name int4-g128-asym for what is one group a row."""
    space = SearchSpace.build(load_preset("default"), layers, pins={".*": "int4-g128-asym:gptq"})
    assert [opts[0].name for opts in space.options] == ["int4-g128-asym:gptq", "int4-ch-asym:gptq", "int4-ch-asym:gptq"]
    # generic even where every layer is narrower than the group: each per channel, as a rule's
    narrow = find_layers(nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 4)))
    assert [opts[0].name for opts in SearchSpace.build(load_preset("default"), narrow, pins={".*": "int4-g128-asym:gptq"}).options] == \
        ["int4-ch-asym:gptq", "int4-ch-asym:gptq"]


@pytest.mark.parametrize("pattern, group", [("^2$", "g128"), ("^[24]$", "g64"), ("^4$", "g64")])
def test_a_pinned_group_too_wide_for_every_layer_it_names_is_refused_as_a_rules_is(layers, pattern, group):
    """Layer '2' has 16 inputs, '4' 64: the pin was stored per-channel unsaid, where a targeted rule is refused."""
    with pytest.raises(AutoqError, match=rf"^pin '{re.escape(pattern)}': group size {group} is impossible here: the widest layer "
                                         r"it matches \('4'|'2'\) has only (64|16) inputs, .* pin 'int4-ch-asym:gptq' or a smaller group"):
        SearchSpace.build(load_preset("default"), layers, pins={pattern: f"int4-{group}-asym:gptq"})
    wide_enough = SearchSpace.build(load_preset("default"), layers, pins={"^[04]$": "int4-g128-asym:gptq"})  # '0' has 256
    assert [wide_enough.options[i][0].name for i in (0, 2)] == ["int4-g128-asym:gptq", "int4-ch-asym:gptq"]


def test_pinned_layer_keeps_pin_in_every_uniform_assignment(layers):
    space = SearchSpace.build(load_preset("default"), layers, pins={"^0$": "fp16"})
    uniform = space.uniform_assignments()
    # the unpinned layers are narrow: 7 distinct uniform choices remain
    assert len(uniform) == 7
    assert len(set(uniform)) == 7
    for a in uniform:
        assert a["0"] == FP16
        assert a["2"] == a["4"]
        space.validate(a)


def test_pin_matching_nothing_raises(layers):
    with pytest.raises(AutoqError, match="nomatch"):
        SearchSpace.build(load_preset("default"), layers, pins={"nomatch": "fp16"})


@pytest.mark.parametrize("order", [1, -1])
def test_pins_that_give_one_layer_different_choices_are_refused_in_either_order(layers, order):
    """The first matching pin won, so the result hung on their order, and a fully shadowed pin was said to match no
    layer; the error now names the layer, both pins and an anchored pattern."""
    pins = dict(list({"0|2": "int8-ch-asym:rtn-mse", "^2$": "fp16"}.items())[::order])
    with pytest.raises(AutoqError, match=r"all match layer '2' and give it different choices.*'\^2\$'"):
        SearchSpace.build(load_preset("default"), layers, pins=pins)


def test_overlapping_pins_that_agree_are_both_used(layers):
    space = SearchSpace.build(load_preset("default"), layers, pins={"0|2": "fp16", "^2$": "fp16"})
    assert space.options[0] == space.options[1] == (FP16,) and len(space.options[2]) == 7


def test_one_pattern_pinned_twice_to_different_choices_is_refused():
    from autoq.api import pins_from_strings

    assert pins_from_strings(["0=fp16", "0=fp16"]) == {"0": "fp16"}
    with pytest.raises(AutoqError, match="'0' is pinned twice, to 'fp16' and to 'int8-ch-asym:rtn-mse'"):
        pins_from_strings(["0=fp16", "0=int8-ch-asym:rtn-mse"])


def test_pin_with_bad_choice_raises_naming_the_pin(layers):
    with pytest.raises(AutoqError, match="pin '0=int4-ch-asym': cannot parse layer choice 'int4-ch-asym'; expected 'FORMAT:METHOD"):
        SearchSpace.build(load_preset("default"), layers, pins={"0": "int4-ch-asym"})


def test_pin_with_unknown_method_raises_naming_the_pin(layers):
    with pytest.raises(AutoqError, match="pin '0=int4-ch-asym:magic': unknown PTQ method 'magic'; choose one of .*rtn-mse"):
        SearchSpace.build(load_preset("default"), layers, pins={"0": "int4-ch-asym:magic"})


# ---------------------------------------------------------------- preset errors


def test_unknown_method_lists_known_ones(layers):
    preset = Preset("p", "", (rule(methods=("rtn-mse", "gptq-magic")),))
    with pytest.raises(AutoqError) as info:
        SearchSpace.build(preset, layers)
    message = str(info.value)
    assert "gptq-magic" in message
    assert "rtn-minmax" in message and "rtn-mse" in message


def test_no_rule_for_a_layer_raises(layers, tmp_path):
    preset = Preset("p", "", (rule(layers="^0$"),))
    with pytest.raises(AutoqError, match="'2'"):
        SearchSpace.build(preset, layers)
    # a space from a file names the file and the rule's line, as its other errors do (it named the YAML's name: only)
    from autoq.search_spaces import load_preset as load

    (tmp_path / "mine.yaml").write_text("name: my-space\nrules:\n  - layers: '^0$'\n    bits: [4]\n    granularity: [channel]\n"
                                        "    methods: [gptq]\n")
    with pytest.raises(AutoqError, match=rf"search space {tmp_path / 'mine.yaml'} has no rule for layer '2'"):
        SearchSpace.build(load(str(tmp_path / "mine.yaml")), layers)


def test_first_matching_rule_wins(layers):
    preset = Preset("p", "", (rule(layers="^2$", bits=(8,)), rule(bits=(3,))))
    space = SearchSpace.build(preset, layers)
    assert [tuple(c.weight.bits for c in opts) for opts in space.options] == [(3,), (8,), (3,)]


@pytest.mark.parametrize("token", ["rows", "group", "g", "128"])
def test_unknown_granularity_raises(layers, token):
    preset = Preset("p", "", (rule(granularity=("channel", token)),))
    with pytest.raises(AutoqError, match="granularity"):
        SearchSpace.build(preset, layers)


def test_bits_16_means_fp16(layers):
    preset = Preset("p", "", (rule(bits=(4, 16)),))
    space = SearchSpace.build(preset, layers)
    for opts in space.options:
        assert opts == (LayerChoice(QuantSpec(4, "channel")), FP16)


def test_symmetric_and_methods_multiply_options(layers):
    preset = Preset("p", "", (rule(bits=(4,), symmetric=(False, True), methods=("rtn-mse", "rtn-minmax"), half=True),))
    space = SearchSpace.build(preset, layers)
    assert all(len(opts) == 2 * 2 + 1 for opts in space.options)


# ---------------------------------------------------------------- validate


def test_validate_accepts_options(space):
    space.validate(space.assignment([0, 0, 0]))
    space.validate(space.assignment([len(o) - 1 for o in space.options]))


def test_validate_rejects_unknown_layer(space):
    a = {**dict(space.assignment([0, 0, 0])), "ghost": FP16}
    with pytest.raises(AutoqError, match=r"\['ghost'\]; the model's 3 quantizable layer\(s\) are named like '0', '2', '4'"):
        space.validate(a)


def test_validate_rejects_missing_layer(space):
    a = dict(space.assignment([0, 0, 0]))
    del a["4"]
    with pytest.raises(AutoqError, match="'4'"):
        space.validate(a)


@pytest.mark.parametrize(
    "name, choice",
    [
        ("0", "int4-g64-asym:rtn-mse"),  # granularity not in the preset
        ("0", "int4-ch-asym:rtn-minmax"),  # method not in the preset
        ("2", "int4-g128-asym:rtn-mse"),  # not an option of a narrow layer (it is per-channel there)
        ("4", "int4-ch-sym:rtn-mse"),  # symmetric not in the preset
    ],
)
def test_validate_rejects_choices_outside_space(space, name, choice):
    a = dict(space.assignment([0, 0, 0]))
    a[name] = LayerChoice.from_name(choice)
    with pytest.raises(AutoqError, match="not an option"):
        space.validate(a)


# ---------------------------------------------------------------- extremes


def test_extremes_match_brute_force(space, cost_model):
    cheapest, dearest = space.extremes(cost_model)
    costs = [cost_model.cost(space.assignment(idx)) for idx in itertools.product(*(range(len(o)) for o in space.options))]
    assert cheapest.effective_bits == pytest.approx(min(c.effective_bits for c in costs))
    assert dearest.effective_bits == pytest.approx(max(c.effective_bits for c in costs))
    assert dearest.effective_bits == 16.0


def test_extremes_are_all_min_and_all_max(space, cost_model):
    cheapest, dearest = space.extremes(cost_model)
    all_min = space.assignment([min(range(len(o)), key=lambda i, o=o, layer=layer: cost_model.layer_bits(layer, o[i])) for o, layer in zip(space.options, space.layers)])
    all_max = space.assignment([max(range(len(o)), key=lambda i, o=o, layer=layer: cost_model.layer_bits(layer, o[i])) for o, layer in zip(space.options, space.layers)])
    assert cheapest == cost_model.cost(all_min)
    assert dearest == cost_model.cost(all_max)
    assert all(c.weight.bits == 2 for c in all_min.values())
    assert all(c == FP16 for c in all_max.values())


def test_uniform_costs_lie_within_extremes(space, cost_model):
    cheapest, dearest = space.extremes(cost_model)
    for a in space.uniform_assignments():
        cost = cost_model.cost(a)
        assert cheapest.effective_bits <= cost.effective_bits <= dearest.effective_bits
        assert cheapest.size_bytes <= cost.size_bytes <= dearest.size_bytes


def test_a_pin_that_matches_nothing_shows_what_names_look_like(layers):
    with pytest.raises(AutoqError, match=r"\['head'\] match no quantizable layer; the model's 3 quantizable layer\(s\) are named like '0'"):
        SearchSpace.build(load_preset("default"), layers, {"head": "fp16"})
    with pytest.raises(AutoqError, match=r"\['head'\] match no quantizable layer"):  # a pinned group too (max() of no layer)
        SearchSpace.build(load_preset("default"), layers, {"head": "int4-g32-asym:rtn-mse"})


def test_invalid_pin_regex_is_a_clear_error():
    model = nn.Sequential(nn.Linear(16, 8))
    with pytest.raises(AutoqError, match="invalid pin pattern"):
        SearchSpace.build(load_preset("default"), find_layers(model), {"(": "fp16"})


def test_uniform_assignments_are_named_by_the_option_they_give_every_layer():
    """On digits-cnn the first layer (64 inputs) takes g128 as per channel: naming a baseline by that layer's choice
    labelled the g128 baselines 'int4-ch-asym' beside the real per-channel ones (benchmarks/search_default.py)."""
    from autoq.builtin import load_workload
    from autoq.engine.runner import SearchConfig, prepare

    space = prepare(load_workload("digits-cnn"), SearchConfig(budget="8bits", tracking_uri=None)).space
    by_label = space.uniform_by_label()
    assert list(by_label.values()) == space.uniform_assignments()
    g128 = by_label["int4-g128-asym:rtn-mse"]
    assert next(iter(g128.values())).name == "int4-ch-asym:rtn-mse" != "int4-g128-asym:rtn-mse"  # the first layer's own
    assert g128 != by_label["int4-ch-asym:rtn-mse"]


def test_a_pin_or_rule_matching_only_skipped_layers_names_the_skip(tmp_path, capsys):
    """'--skip ^8$ --pin 8=fp16' said the pin matched no quantizable layer, and a rule for '^8$' that it governed none,
    while layer 8 is there: the skip pattern took it, which neither message said."""
    import autoq

    kwargs = dict(budget="4.5bits", n_trials=2, tracking_uri=None, storage=None, progress=False, seed_from="none", skip=["^8$"])
    with pytest.raises(AutoqError, match=r"pin pattern\(s\) \['8'\] match only layers the skip patterns leave out \('8'\): drop the pin"):
        autoq.search("digits-cnn", pins={"8": "fp16"}, **kwargs)
    space = tmp_path / "rule8.yaml"
    rule = "    granularity: [channel]\n    methods: [rtn-mse]\n"
    space.write_text(f"rules:\n  - layers: '^8$'\n    bits: [4]\n{rule}  - layers: '.*'\n    bits: [4, 8]\n{rule}")
    with pytest.raises(AutoqError, match=r"pattern '\^8\$' governs no layer \(the layers it matches, '8', are left out by the skip patterns\)"):
        autoq.search("digits-cnn", space=str(space), **kwargs)
    from autoq.cli import main  # the sensitivity command said 'it matches no quantizable layer' of the same rule

    assert main(["sensitivity", "--metric", "sqnr", "--model", "digits-cnn", "--space", str(space), "--skip", "^8$",
                 "--out", str(tmp_path / "out"), "--tracking-uri", "none", "--no-progress"]) == 2
    assert "governs no layer (the layers it matches, '8', are left out by the skip patterns)" in capsys.readouterr().err
    with pytest.raises(AutoqError, match=r"pin pattern\(s\) \['nine'\] match no quantizable layer"):  # no skipped layer matches
        autoq.search("digits-cnn", pins={"nine": "fp16"}, **kwargs)
