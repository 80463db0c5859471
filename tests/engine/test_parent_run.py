"""The search's parent run in MLflow (``autoq.engine.parent_run``): its listed params."""

from __future__ import annotations

import shlex

from autoq.engine.parent_run import listed_param


def test_listed_params_are_shell_words_cut_only_past_mlflows_6000_characters():
    """A --skip or --pin list that fits MLflow's param limit exactly is logged whole; one character more is cut, said."""
    assert listed_param([]) == "none" and shlex.split(listed_param(["a b", "c"])) == ["a b", "c"]
    fits = "a" * 6000
    assert listed_param([fits]) == fits
    cut = listed_param(["a" * 6001])
    assert len(cut) < 6000 and cut.endswith(" ...")
