"""Settings read back from a study's ``autoq.settings`` attribute (anyone's to edit) are taken in the shape autoq
stores them, and each setting of another shape is named with the shape autoq stores."""

from __future__ import annotations

import re
from typing import Any

import pytest

from autoq.engine.settings_shape import checked_settings
from autoq.errors import AutoqError

STORED: dict[str, Any] = {
    "model": "digits-cnn", "budget": "4.5bits", "sampler": "tpe", "strategy": "optuna", "space": "default", "device": None,
    "seed": 0, "batch": 1, "n_trials": 10, "max_retries": 2, "n_fill_seeds": 4, "max_uniform_seeds": None, "sequential": False,
    "skip": ["pooler"], "plugins": [], "pins": [["fc", "fp16"]], "plugin_code": {"my_plugin": "abc123"},
}


def test_settings_in_the_shape_autoq_stores_are_read_back_as_they_are():
    assert checked_settings(STORED, "s") == STORED
    assert checked_settings({**STORED, "max_uniform_seeds": 3, "device": "h100"}, "s")["max_uniform_seeds"] == 3


@pytest.mark.parametrize(("key", "value", "shape"), [
    ("strategy", 3, "a string"),
    ("seed", True, "a whole number"),  # a bool is no whole number here, as in the options
    ("max_uniform_seeds", "4", "a whole number or null"),
    ("device", 3, "a string or null"),
    ("sequential", "no", "true or false"),
    ("skip", [3], "a list of strings"),
    ("plugins", "my_plugin", "a list of strings"),
    ("pins", [["fc", "fp16", "extra"]], r"a list of \[layer pattern, choice\] pairs"),
    ("pins", [["fc", 3]], r"a list of \[layer pattern, choice\] pairs"),
    ("plugin_code", {"my_plugin": 3}, "an object of plug-in names to digests"),
])
def test_a_setting_of_another_shape_is_named_with_the_shape_autoq_stores(key, value, shape):
    with pytest.raises(AutoqError, match=rf"^search 's' cannot be read back: in its study's 'autoq.settings' attribute, "
                                         rf"{re.escape(f'{key!r} is {value!r}')} \(autoq stores {shape}\) \(edited since\); put back what autoq stored"):
        checked_settings({**STORED, key: value}, "s")


def test_every_setting_of_another_shape_is_named_in_one_error():
    with pytest.raises(AutoqError, match=r"'seed' is '0' \(autoq stores a whole number\); 'sequential' is 1 \(autoq stores true or false\)"):
        checked_settings({**STORED, "seed": "0", "sequential": 1}, "s")
