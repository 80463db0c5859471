"""Preset validation names the YAML line: unknown method, impossible group size, a pattern that governs nothing."""

from __future__ import annotations

import textwrap

import pytest
import torch
from torch import nn

from autoq.errors import AutoqError
from autoq.model import find_layers
from autoq.search_spaces import load_preset, parse_preset, preset_names
from autoq.space import SearchSpace


def layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 10))
    return find_layers(model)  # '0' has 256 inputs, '2' has 64


def preset(text: str):
    return parse_preset(textwrap.dedent(text), "space.yaml")


def test_unknown_method_names_its_line():
    text = """
    rules:
      - layers: ".*"
        bits: [4]
        granularity: [channel]
        methods: [rtn-mse, gptqq]
    """
    with pytest.raises(AutoqError, match=r"space.yaml, line 6, rule 1: unknown PTQ method 'gptqq'.*gptq"):
        preset(text)


def test_unknown_activation_names_its_line():
    text = """
    rules:
      - layers: ".*"
        bits: [8]
        granularity: [channel]
        methods: [smoothquant]
        activations: [none, a8-row]
    """
    with pytest.raises(AutoqError, match=r"line 7, rule 1: cannot parse activation format 'a8-row'.*; in a rule, none \(lower case\) "
                                         r"leaves the activations unquantized"):
        preset(text)


@pytest.mark.parametrize("token", ["g100", "g0128", "g1２８", "g128x"])  # g0128 and g1２８ were taken for g128, under a name QuantSpec refuses
def test_unknown_granularity_names_its_line(token):
    text = f"rules:\n  - bits: 4\n    granularity: [{token}]\n    methods: rtn-mse\n"
    with pytest.raises(AutoqError, match=rf"line 3, rule 1: unknown granularity '{token}'; use tensor, channel, g32"):
        preset(text)


def test_impossible_group_size_names_the_line_and_layer():
    text = """
    rules:
      - layers: "^2$"
        bits: [4]
        granularity: [channel, g128]
        methods: [rtn-mse]
      - layers: ".*"
        bits: [4]
        granularity: [g128]
        methods: [rtn-mse]
    """
    with pytest.raises(AutoqError, match=r"line 5, rule 1: group size g128 is impossible here.*'2'.*64 inputs"):
        SearchSpace.build(preset(text), layers())
    # a group exactly as wide as the input is one group per row: per-channel, so as impossible (it was kept silently)
    with pytest.raises(AutoqError, match=r"group size g64 is impossible here.*'2'.*64 inputs"):
        SearchSpace.build(preset(text.replace("g128]\n        methods: [rtn-mse]\n      - layers", "g64]\n        methods: [rtn-mse]\n      - layers")), layers())


def test_catch_all_rule_collapses_groups_silently():
    space = SearchSpace.build(load_preset("default"), layers())
    assert all(c.weight.granularity != "group" for c in space.options[1])


def test_a_catch_all_after_a_targeted_rule_still_collapses_groups():
    """One layer overridden, then a '.*' rule as the default preset's: that rule governed the rest only, so it was read as
    targeted and refused g128 on the narrow layer, where the README calls such a rule the catch-all to add."""
    text = """
    rules:
      - layers: "^0$"
        bits: [8]
        granularity: [channel]
        methods: [rtn-mse]
      - layers: ".*"
        bits: [4]
        granularity: [channel, g128]
        methods: [rtn-mse]
    """
    space = SearchSpace.build(preset(text), layers())
    assert [c.name for c in space.options[1]] == ["int4-ch-asym:rtn-mse"]  # g128 on 64 inputs: per-channel, kept once


@pytest.mark.parametrize("pattern, why", [("^head$", "matches no quantizable layer"), ("^0$", "taken by an earlier rule")])
def test_rule_that_governs_nothing_names_its_line(pattern, why):
    text = f"""
    rules:
      - layers: ".*"
        bits: [4]
        granularity: [channel]
        methods: [rtn-mse]
      - layers: "{pattern}"
        bits: [8]
        granularity: [channel]
        methods: [rtn-mse]
    """
    with pytest.raises(AutoqError, match=rf"line 7, rule 2: pattern .* governs no layer \(.*{why}\); the model's 2 quantizable layer\(s\) are named like '0', '2'"):
        SearchSpace.build(preset(text), layers())


@pytest.mark.parametrize("name", ["weights-only-llm", "w8a8", "cnn-mixed", "full"])
def test_new_presets_are_listed_and_build(name):
    assert name in preset_names()
    space = SearchSpace.build(load_preset(name), layers())
    assert all(len(opts) > 1 for opts in space.options)


def test_w8a8_offers_activation_formats_and_fp16():
    space = SearchSpace.build(load_preset("w8a8"), layers())
    names = {c.name for c in space.options[0]}
    assert names == {"fp16"} | {f"int8-ch-sym:{m}+{a}" for m in ("rtn-minmax", "smoothquant", "smoothquant-search") for a in ("a8-tensor", "a8-token")}


def test_full_preset_multiplies_bits_granularity_and_methods():
    space = SearchSpace.build(load_preset("full"), layers())
    wide = space.options[0]
    assert {c.method for c in wide if not c.weight.is_half} == {"rtn-mse", "rtn-lp", "gptq", "awq"}
    assert {c.weight.group_size for c in wide if c.weight.granularity == "group"} == {32, 64, 128}
    assert len(wide) == 6 * 4 * 4 + 1


@pytest.mark.parametrize(("text", "message"), [
    ("""
     rules:
       - layers: ".*"
         bits: [2, 3]
         granularity: [channel]
         methods: [rtn-mse]
         bits: [8]
     """, "space.yaml, line 7: key 'bits' is given twice in one mapping \\(first on line 4\\)"),
    ("""
     rules:
       - {bits: [4], granularity: [channel], methods: [rtn-mse]}
     description: x
     rules:
       - {bits: [8], granularity: [channel], methods: [rtn-mse]}
     """, "space.yaml, line 5: key 'rules' is given twice .*first on line 2"),
    ("""
     rules:
       - {layers: ".*", bits: [2, 3], granularity: [channel], methods: [rtn-mse], bits: [8]}
     """, "space.yaml, line 3: key 'bits' is given twice in one mapping \\(first on line 3\\)"),
])
def test_a_key_given_twice_is_refused_with_its_lines(text, message):
    """YAML keeps the last of two equal keys silently: a second 'bits:' made a 2/3-bit rule an 8-bit one."""
    with pytest.raises(AutoqError, match=message):
        preset(text)


@pytest.mark.parametrize("text, message", [
    ("rules: &a [*a]", "space.yaml, line 1, rule 1: a rule must be a mapping"),
    ("rules:\n  - &r {bits: [4], granularity: [channel], methods: [rtn-mse], me: *r}", r"unknown key\(s\) \['me'\]"),
])
def test_an_alias_that_holds_itself_is_refused_in_words(text, message):
    """The duplicate-key check walked it without end: a RecursionError's thousand lines of traceback."""
    with pytest.raises(AutoqError, match=message):
        preset(text)


def test_aliases_sharing_nodes_are_read_once(monkeypatch):
    """Each alias was walked anew: 24 levels of doubling aliases took 21 s to load (plain YAML: milliseconds)."""
    import autoq.search_spaces as spaces

    walked = []
    walk = spaces._refuse_duplicate_keys
    monkeypatch.setattr(spaces, "_refuse_duplicate_keys", lambda node, *args: walked.append(node) or walk(node, *args))
    levels = ["a0: &a0 [1]"] + [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, 25)]
    text = "rules:\n  - {bits: [4], granularity: [channel], methods: [rtn-mse], symmetric: [false]}\nx:\n" + "\n".join(
        "  " + line for line in levels)
    with pytest.raises(AutoqError, match=r"unknown key\(s\) \['x'\]"):
        preset(text)
    assert 0 < len(walked) < 200  # the file's nodes once each (2**25 visits before)


@pytest.mark.parametrize("key", ["name", "description"])
def test_a_name_or_description_that_is_not_text_is_refused(key):
    """A list or mapping was stored as its str(), and an alias-shared one took minutes to write out."""
    with pytest.raises(AutoqError, match=f"space.yaml: '{key}' must be text, got a list"):
        preset(f"{key}: [1, 2]\nrules:\n  - {{bits: [4], granularity: [channel], methods: [rtn-mse]}}")


def test_unknown_keys_of_mixed_types_are_listed():
    text = """
    rules:
      - {bits: [4], granularity: [channel], methods: [rtn-mse], 1: 2, foo: 3}
    """
    with pytest.raises(AutoqError, match=r"unknown key\(s\) \['1', 'foo'\]"):
        preset(text)


def test_yaml_syntax_errors_name_the_file():
    with pytest.raises(AutoqError, match=r"^space.yaml: not valid YAML: while parsing a flow sequence \(line 2\): expected ',' or '\]', "
                                         r"but got ':' at line 3, column 14$"):  # one line, as every error (it was six)
        preset("rules:\n  - bits: [4\n  granularity: x\n")
    with pytest.raises(AutoqError, match=r"not valid YAML: expected a single document in the stream \(line 2\): but found another "
                                         r"document at line 3"):  # the composer's clauses in their order, too
        preset("---\nname: x\n---\nname: y\n")


def test_a_space_file_that_is_not_text_is_refused(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"rules:\xff\xfe\x00")
    with pytest.raises(AutoqError, match="is not UTF-8 text; a search space is a YAML file"):
        load_preset(str(path))


def test_a_space_nested_hundreds_of_levels_deep_is_one_line():
    """PyYAML's composer recurses a level a list: 500 '[' were a RecursionError traceback."""
    with pytest.raises(AutoqError, match=r"^space.yaml: its lists or mappings nest too deeply to read .* a search space nests three"):
        preset("rules: " + "[" * 600 + "]" * 600)


def _alias_bomb(levels: int) -> str:
    """A flow list of ``levels`` anchors, each a list of ten aliases of the one before: 10**levels items, in a few hundred bytes."""
    rungs = ["&a0 [x, x, x, x, x, x, x, x, x, x]"] + [f"&a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "[" + ", ".join(rungs) + "]"


@pytest.mark.parametrize(("key", "says"), [("methods", "'methods' lists names, such as"), ("granularity", "'granularity' lists names"),
                                           ("activations", "'activations' lists names"), ("bits", "'bits' must be integers")])
def test_a_list_where_a_name_goes_is_refused_in_a_short_line(key, says):
    """A list in a rule's list of names was written out with str() in the error: 453 bytes of YAML aliases made a line of 58 MB."""
    rule = {"layers": "'.*'", "bits": "[4]", "granularity": "[channel]", "methods": "[rtn-mse]", key: _alias_bomb(7)}
    text = "rules:\n  - " + "\n    ".join(f"{k}: {v}" for k, v in rule.items()) + "\n"
    assert len(text) < 600
    with pytest.raises(AutoqError, match=says) as info:
        preset(text)
    assert len(str(info.value)) < 400, str(info.value)


def test_a_bad_value_in_a_full_list_of_bit_widths_is_shown():
    """Cut at 4 items, [2, 3, 4, 5, 6, 8, '16'] was shown as [2, 3, 4, 5, ...], every value shown an integer."""
    with pytest.raises(AutoqError, match=r"'bits' must be integers such as \[2, 3, 4, 8\], got \[2, 3, 4, 5, 6, 8, '16'\]$"):
        preset("rules:\n  - bits: [2, 3, 4, 5, 6, 8, '16']\n    granularity: [channel]\n    methods: [rtn-mse]\n")


def test_a_mapping_where_a_name_goes_is_refused_as_no_name():
    """A mapping in a rule's list of names ('methods: [{gptq: 1}]') is no name, said so (cut short, as a list is), not
    looked up as a method."""
    with pytest.raises(AutoqError, match=r"rule 1: 'methods' lists names, such as \[rtn-mse, gptq\], got \[\{\.\.\.\}\]$"):
        preset("rules:\n  - bits: [4]\n    granularity: [channel]\n    methods: [{gptq: 1}]\n")


def test_true_in_bits_is_no_integer():
    """'bits: [true]' (a YAML boolean) is refused as no integer, not taken for bit-width 1."""
    with pytest.raises(AutoqError, match=r"'bits' must be integers such as \[2, 3, 4, 8\], got \[True\]$"):
        preset("rules:\n  - bits: [true]\n    granularity: [channel]\n    methods: [rtn-mse]\n")


def test_a_rules_pattern_matches_anywhere_in_a_layer_name():
    """A rule's 'layers' is searched for in the name, as re.search does: 'attn' governs 'h.0.attn.c_proj'."""
    space = preset("rules:\n  - layers: attn\n    bits: [8]\n    granularity: [channel]\n    methods: [rtn-mse]\n"
                   "  - bits: [4]\n    granularity: [channel]\n    methods: [rtn-mse]\n")
    assert space.rule_for("h.0.attn.c_proj") == 0 and space.rule_for("h.0.mlp.c_fc") == 1


def test_a_rule_made_in_python_is_placed_as_the_search_space():
    """A rule not read from a file, with no line and no index, is placed as 'search space' in messages, not as ''."""
    from autoq.search_spaces import Rule

    assert Rule(".*", (4,), ("channel",), (False,), ("rtn-mse",), False).where() == "search space"


def test_a_rule_whose_layers_are_all_skipped_says_so():
    """A rule whose layers the skip patterns leave out names them as the reason it governs none."""
    from autoq.search_spaces import check_against_layers

    space = preset("rules:\n  - layers: '^0$'\n    bits: [8]\n    granularity: [channel]\n    methods: [rtn-mse]\n"
                   "  - bits: [4]\n    granularity: [channel]\n    methods: [rtn-mse]\n")
    kept = [layer for layer in layers() if layer.name != "0"]
    with pytest.raises(AutoqError, match=r"rule 1: pattern '\^0\$' governs no layer \(the layers it matches, '0', are left out by the skip "
                                         r"patterns\)"):
        check_against_layers(space, kept, skipped=["0"])


def test_a_yml_file_that_does_not_exist_is_named_as_a_missing_file(tmp_path):
    """A '.yml' path, as a '.yaml' one, that does not exist is a missing file, not an unknown preset name."""
    missing = tmp_path / "space.yml"
    with pytest.raises(AutoqError, match=r"^search-space file '.*space\.yml' does not exist$"):
        load_preset(str(missing))


def test_a_space_name_that_is_no_preset_and_no_file_is_stored_as_given():
    """portable_space keeps a name that is neither a preset nor a file as written (its load then says it is unknown):
    only a YAML path, or one that exists, is made absolute."""
    from pathlib import Path

    from autoq.search_spaces import portable_space

    assert portable_space("no-such-space") == "no-such-space" and portable_space("default") == "default"
    assert portable_space("mine.yaml") == str(Path("mine.yaml").resolve())
