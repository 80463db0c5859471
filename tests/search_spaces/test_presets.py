"""Search-space presets: built-ins, YAML files, and the loader's errors."""

from __future__ import annotations

import textwrap

import pytest

from autoq.errors import AutoqError
from autoq.ptq import method_names
from autoq.search_spaces import Preset, Rule, load_preset, parse_preset, preset_names

GOOD = """
name: tiny
description: two rules
rules:
  - layers: "^head$"
    bits: 8
    granularity: channel
    methods: rtn-minmax
  - layers: ".*"
    bits: [2, 4]
    granularity: [channel, g64]
    symmetric: [false, true]
    methods: [rtn-mse]
    half: true
"""


def write(tmp_path, text: str, name: str = "space.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_preset_names_lists_builtins():
    names = preset_names()
    assert "default" in names
    assert "per-channel" in names
    assert names == sorted(names)
    assert all(not n.endswith(".yaml") for n in names)


@pytest.mark.parametrize("name", preset_names())
def test_every_builtin_loads_with_known_methods(name):
    preset = load_preset(name)
    assert isinstance(preset, Preset)
    assert preset.name == name
    assert preset.description.strip()
    assert preset.rules
    for rule in preset.rules:
        assert isinstance(rule, Rule)
        assert rule.bits and rule.granularity and rule.methods and rule.symmetric
        assert set(rule.methods) <= set(method_names())


def test_default_preset_contents():
    (rule,) = load_preset("default").rules
    assert rule.layers == ".*"
    assert rule.bits == (2, 3, 4, 5, 6, 8)
    assert rule.granularity == ("channel", "g128")
    assert rule.symmetric == (False,)
    assert rule.methods == ("rtn-mse",)
    assert rule.half is True


def test_per_channel_preset_contents():
    (rule,) = load_preset("per-channel").rules
    assert rule.granularity == ("channel",)
    assert rule.methods == ("rtn-minmax", "rtn-mse")
    assert rule.half is True


def test_load_yaml_file(tmp_path):
    preset = load_preset(str(write(tmp_path, GOOD)))
    assert preset.name == "tiny"
    assert preset.description == "two rules"
    head, rest = preset.rules
    # scalars become 1-tuples, omitted keys take defaults
    assert head == Rule("^head$", (8,), ("channel",), (False,), ("rtn-minmax",), False)
    assert rest == Rule(".*", (2, 4), ("channel", "g64"), (False, True), ("rtn-mse",), True)


def test_file_name_is_the_default_name(tmp_path):
    path = write(tmp_path, "rules:\n  - bits: 4\n    granularity: channel\n    methods: rtn-mse\n", name="my-space.yml")
    preset = load_preset(str(path))
    assert preset.name == "my-space"
    assert preset.description == ""
    assert preset.rules[0].layers == ".*"


def test_unknown_preset_lists_builtins():
    with pytest.raises(AutoqError) as info:
        load_preset("no-such-space")
    message = str(info.value)
    assert "no-such-space" in message
    assert "default" in message and "per-channel" in message


def test_missing_file(tmp_path):
    with pytest.raises(AutoqError, match="does not exist"):
        load_preset(str(tmp_path / "missing.yaml"))


def test_directory_is_not_a_preset_file(tmp_path):
    with pytest.raises(AutoqError, match="is a folder; pass a YAML file or a built-in preset"):
        load_preset(str(tmp_path))


def test_a_builtin_name_is_the_preset_whatever_the_working_folder_holds(tmp_path, monkeypatch):
    """A run's output folder named 'default' in the working folder made 'default' a missing file."""
    (tmp_path / "default").mkdir()
    (tmp_path / "full").write_text("not yaml: [")
    monkeypatch.chdir(tmp_path)
    assert load_preset("default").name == "default" and load_preset("full").name == "full"


@pytest.mark.parametrize(
    "text, match",
    [
        ("rules: [unclosed\n", "YAML"),
        ("- just\n- a list\n", "rules"),
        ("name: x\n", "rules"),
        ("rules:\n  - {bits: 4, granularity: channel, methods: rtn-mse}\nextra: 1\n", "extra"),
        ("rules:\n  - {bits: 4, granularity: channel, methods: rtn-mse, group: 64}\n", "group"),
        ("rules:\n  - {bits: 4, granularity: channel}\n", "methods"),
        ("rules:\n  - {layers: '.*'}\n", "bits"),
        ("rules: []\n", "empty"),
        ("rules:\n", "empty"),
        ("rules:\n  - 4\n", "mapping"),
        # empty lists: a traceback (min() of an empty sequence), or with half: true an fp16-only search
        ("rules:\n  - {bits: [], granularity: channel, methods: rtn-mse, half: true}\n", r"line 2, rule 1: 'bits' is empty"),
        ("rules:\n  - {bits: 4, granularity: [], methods: [], symmetric: []}\n", "'granularity', 'methods', 'symmetric' is empty"),
        ("rules:\n  - {bits: 4, granularity: channel, methods: rtn-mse, activations: []}\n", "'activations' is empty"),
        # a key left with its list items commented out is None: "unknown granularity 'None'", activations weight-only unsaid
        ("rules:\n  - bits: [4]\n    granularity:\n    methods: [rtn-mse]\n", r"rule 1: 'granularity' is empty; give at least one"),
        ("rules:\n  - bits: [4]\n    granularity: [channel]\n    methods:\n    activations:\n", "'methods', 'activations' is empty"),
        ("rules:\n  - {bits: [4, 7], granularity: channel, methods: rtn-mse}\n", r"rule 1: unsupported bit-width\(s\) \[7\] in 'bits'; choose from"),
        ("rules:\n  - {layers: , bits: 4, granularity: channel, methods: rtn-mse}\n", "'layers' must be a regular expression in quotes"),
    ],
)
def test_bad_files(tmp_path, text, match):
    path = write(tmp_path, text)
    with pytest.raises(AutoqError, match=match) as info:
        load_preset(str(path))
    assert str(path) in str(info.value)


def test_missing_keys_are_all_named():
    with pytest.raises(AutoqError) as info:
        parse_preset("rules:\n  - {layers: '.*'}\n", "x.yaml")
    message = str(info.value)
    for key in ("bits", "granularity", "methods"):
        assert key in message
    assert "rule 1" in message


def test_a_misspelled_rules_key_is_named():
    """'rule:' for 'rules:' said only that the space needs a top-level 'rules' list, naming no unknown key."""
    with pytest.raises(AutoqError, match=r"needs a top-level 'rules' list \(it has unknown key\(s\) \['rule'\]; allowed: "):
        parse_preset("rule:\n  - {layers: '.*', bits: 4, granularity: channel, methods: rtn-mse}\n", "x.yaml")
    with pytest.raises(AutoqError, match=r"needs a top-level 'rules' list$"):
        parse_preset("name: x\n", "x.yaml")


def test_error_names_the_rule_number():
    text = "rules:\n  - {bits: 4, granularity: channel, methods: rtn-mse}\n  - {bits: 4, granularity: channel, methods: rtn-mse, oops: 1}\n"
    with pytest.raises(AutoqError, match="rule 2"):
        parse_preset(text, "x.yaml")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("rules: 5\n", "x.yaml: 'rules' must be a list of rules"),
        ("rules:\n  - {bits: four, granularity: channel, methods: rtn-mse}\n",
         r"x.yaml, line 2, rule 1: 'bits' must be integers such as \[2, 3, 4, 8\], got 'four'"),
        # a block rule: the key's own line (the rule's first was given, as the other keys' errors do not)
        ("rules:\n  - layers: '.*'\n    bits: '4'\n    granularity: channel\n    methods: rtn-mse\n",
         r"x.yaml, line 3, rule 1: 'bits' must be integers such as \[2, 3, 4, 8\], got '4'"),
        ("rules:\n  - layers: '.*'\n    bits: 4\n    granularity: channel\n    methods: rtn-mse\n    symmetric: 'yes'\n",
         r"x.yaml, line 6, rule 1: 'symmetric' takes true or false \(unquoted\), got 'yes'"),
        ("rules:\n  - layers: '.*'\n    bits: 4\n    granularity: channel\n    methods: rtn-mse\n    half: 1\n",
         r"x.yaml, line 6, rule 1: 'half' takes true or false \(unquoted\), got 1"),
        # fp16 was an option whatever 'half: false' said
        ("rules:\n  - layers: '.*'\n    bits: [4, 16]\n    granularity: channel\n    methods: rtn-mse\n    half: false\n",
         r"x.yaml, line 6, rule 1: 'half: false' and 16 in 'bits' contradict each other \(16 bits is fp16\); drop 16"),
    ],
)
def test_malformed_values_are_user_errors(text, match):
    with pytest.raises(AutoqError, match=match):
        parse_preset(text, "x.yaml")


def test_invalid_layers_regex_names_the_rule():
    text = "rules:\n  - layers: '('\n    bits: [4]\n    granularity: [channel]\n    methods: [rtn-mse]\n"
    with pytest.raises(AutoqError, match="rule 1: invalid 'layers' pattern"):
        parse_preset(text, "bad.yaml")


def test_a_bits_budget_no_option_reaches_is_refused_before_any_model():
    """'0.45' (for 4.5) was refused only after the model loaded (minutes for a large folder): no option of the space stores
    fewer code bits a weight than its lowest bit-width, so no model's assignment meets a budget under it."""
    from autoq.budget import parse_budget
    from autoq.search_spaces import check_bits_reachable, fewest_bits

    preset = load_preset("default")
    assert fewest_bits(preset) == min(b for rule in preset.rules for b in rule.bits) == 2
    assert fewest_bits(load_preset("w8a8")) == 8
    assert fewest_bits(load_preset("w8a8"), pins=(("fc1", "int4-ch-asym:rtn-mse"), ("fc2", "not a choice"))) == 4  # a pin counts
    half_only = parse_preset("name: h\ndescription: x\nrules:\n  - {bits: 16, granularity: tensor, methods: rtn-mse}\n", "h.yaml")
    assert fewest_bits(half_only) == 16
    check_bits_reachable(parse_budget("1MB"), preset)  # sizes and latency depend on the model
    with pytest.raises(AutoqError, match=r"budget '1.99bits' is below 2 bits a weight, the fewest any option of the search space 'default'"):
        check_bits_reachable(parse_budget("1.99bits"), preset, space="default")
    with pytest.raises(AutoqError, match="below 8 bits a weight"):
        check_bits_reachable(parse_budget("4.5bits"), load_preset("w8a8"))
    with pytest.raises(AutoqError, match=r"below 8 bits a weight, .* stores \(codes alone: scales add more\), .* budget above 8 bits"):
        check_bits_reachable(parse_budget("7.9bits"), load_preset("w8a8"))
    with pytest.raises(AutoqError, match=r"^budget '2bits' is at 2 bits a weight, the fewest .* stores \(codes alone: scales add more\)"):
        check_bits_reachable(parse_budget("2bits"), preset)  # refused after the model loaded: minutes for an LLM
    with pytest.raises(AutoqError, match=r"below 16 bits a weight, the fewest any option of the search space 'h' stores, so no .* a "
                                         r"budget of at least 16 bits") as raised:  # fp16 stores no scales: 16 bits is met exactly
        check_bits_reachable(parse_budget("8bits"), half_only)
    assert "scales add more" not in str(raised.value)
    check_bits_reachable(parse_budget("16bits"), half_only)
