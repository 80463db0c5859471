"""The search's parent run in MLflow (``autoq.engine.parent_run``): its listed params, summary metrics and logged space."""

from __future__ import annotations

import json
import shlex

from torch import nn

from autoq.choice import Assignment
from autoq.engine.parent_run import listed_param, space_json, summary_metrics
from autoq.engine.result import Point


def test_listed_params_are_shell_words_cut_only_past_mlflows_6000_characters():
    """A --skip or --pin list that fits MLflow's param limit exactly is logged whole; one character more is cut, said."""
    assert listed_param([]) == "none" and shlex.split(listed_param(["a b", "c"])) == ["a b", "c"]
    fits = "a" * 6000
    assert listed_param([fits]) == fits
    cut = listed_param(["a" * 6001])
    assert len(cut) < 6000 and cut.endswith(" ...")


INT4 = Assignment({"a": "int4-ch-asym:rtn-mse", "b": "int4-ch-asym:rtn-mse"})
MIXED = Assignment({"a": "int4-ch-asym:rtn-mse", "b": "int8-ch-asym:rtn-mse"})


def test_the_summary_counts_every_trial_and_each_uniform_assignment_once():
    """n_evaluated counts every trial, a sampler's repeats too; n_uniform_evaluated counts distinct uniform assignments,
    and with 1 of 2 baselines evaluated no gain over uniform is logged."""
    points = [Point(0, INT4, 0.5, 4.2, 100, uniform=True), Point(1, INT4, 0.5, 4.2, 100, uniform=True), Point(2, MIXED, 0.8, 6.1, 150)]
    metrics = summary_metrics(points, 1.0, 0, 0, 2)
    assert metrics["n_evaluated"] == 3 and metrics["n_distinct"] == 2 and metrics["n_uniform_evaluated"] == 1
    assert "gain_over_uniform" not in metrics and "best_uniform_quality" not in metrics


def test_a_summary_without_uniform_points_or_baselines_logs_no_gain():
    """A search of no uniform baseline (a space whose layers share no option: n_uniform 0) gets its summary, gainless."""
    metrics = summary_metrics([Point(0, MIXED, 0.9, 6.1, 150)], 1.0, 0, 0, 0)
    assert metrics["n_uniform_evaluated"] == 0 and metrics["best_quality"] == 0.9 and "gain_over_uniform" not in metrics


def test_a_best_latency_of_zero_is_logged():
    """A best point's latency is logged whenever it has one, 0.0 ms included (only None means no device)."""
    assert summary_metrics([Point(0, INT4, 0.9, 4.2, 100, latency_us=0.0)], 1.0, 0, 0, 0)["best_latency_ms"] == 0.0
    assert "best_latency_ms" not in summary_metrics([Point(0, INT4, 0.9, 4.2, 100)], 1.0, 0, 0, 0)


def test_the_logged_search_space_gives_each_weight_shape_as_out_then_in():
    """search_space.json names each layer's weight shape as nn.Linear holds it, [out_features, in_features]."""
    from autoq.model import find_layers
    from autoq.search_spaces import load_preset
    from autoq.space import SearchSpace

    model = nn.Sequential(nn.Linear(64, 10))
    space = SearchSpace.build(load_preset("default"), find_layers(model))
    logged = json.loads(space_json(space))
    assert logged["0"]["shape"] == [10, 64] and logged["0"]["options"] == [c.name for c in space.options[0]]
