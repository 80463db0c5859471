"""Searching under a latency budget: the digits CNN with a latency table written here, and a roofline preset.

The table's numbers are made up for the test (``200 us + bits * N*K / 100``), chosen
so that a 3 ms budget splits the default search space; they are not measurements.
"""

from __future__ import annotations

import json

import optuna
import pytest
from helpers import child_runs
from matplotlib.image import imread
from mlflow.tracking import MlflowClient

import autoq
from autoq.builtin import load_workload
from autoq.choice import Assignment
from autoq.cli import main
from autoq.cost import CostModel
from autoq.engine import format_summary
from autoq.kernels.table import LatencyRow, LatencyTable
from autoq.latency import load_table
from autoq.model import find_layers

FORMATS = {"int2-ch-asym": 2, "int4-g128-asym": 4.25, "int4-ch-asym": 4, "int8-ch-asym": 8, "fp16": 16}
DEVICE = "Test GPU (made-up numbers for tests)"


def write_digits_table(path, model) -> str:
    rows = []
    for layer in find_layers(model):
        for fmt, bits in FORMATS.items():
            us = 200 + bits * layer.out_features * layer.in_features / 100
            rows.append(LatencyRow(layer.out_features, layer.in_features, fmt, "test", 1, us, us, us, 0.0))
    LatencyTable(DEVICE, tuple(rows)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def digits():
    return load_workload("digits-cnn")


@pytest.mark.slow  # 19 s on this 2-core machine when idle, 55 s when others' jobs run: mostly MLflow logging
def test_cli_search_under_3ms_returns_only_points_within_the_table_latency(digits, tmp_path, mlflow_uri, capsys):
    table = write_digits_table(tmp_path / "digits-table.json", digits.model)
    code = main(["search", "--model", "digits-cnn", "--budget", "3ms", "--device", table, "--n-trials", "12",
                 "--tracking-uri", mlflow_uri, "--storage", f"sqlite:///{tmp_path / 'optuna.db'}", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"table:{DEVICE}" in out and "latency" in out

    cost_model = CostModel.for_model(digits.model, find_layers(digits.model), load_table(table, batch=1))
    client = MlflowClient(mlflow_uri)
    parent = client.search_runs([client.get_experiment_by_name("autoq").experiment_id], "tags.`autoq.kind` = 'search'")[0]
    assert parent.data.tags["latency_source"] == f"table:{DEVICE}"
    assert parent.data.params["device"] == table
    children = child_runs(client, parent.info.run_id)
    assert len(children) == 12
    latencies = []
    for run in children:
        assignment = Assignment.from_json(open(client.download_artifacts(run.info.run_id, "assignment.json", str(tmp_path))).read())
        latency_ms = cost_model.cost(assignment).latency_us / 1e3
        assert latency_ms <= 3.0
        assert run.data.metrics["latency_ms"] == pytest.approx(latency_ms, rel=1e-9)
        assert run.data.tags["latency_source"] == f"table:{DEVICE}"
        latencies.append(latency_ms)
    assert max(latencies) > 2.0  # the budget is used, not just the cheapest corner
    from autoq.engine.result import best_rank

    best = max(children, key=lambda r: best_rank(r.data.metrics["quality"], r.data.metrics["effective_bits"], r.data.metrics["latency_ms"],
                                                 int(r.data.params["trial"])))
    assert parent.data.metrics["best_latency_ms"] == pytest.approx(best.data.metrics["latency_ms"], rel=1e-12)  # in ms, as named
    png = imread(client.download_artifacts(parent.info.run_id, "frontier.png", str(tmp_path)))
    assert png.shape[:2] == (540, 1440)  # two panels: quality against bits, and against latency (tests/tracking has the rest)
    front = json.load(open(client.download_artifacts(parent.info.run_id, "frontier.json", str(tmp_path))))
    assert front and all(p["latency_source"] == f"table:{DEVICE}" and p["latency_ms"] <= 3.0 for p in front)


def test_roofline_preset_labels_every_latency_as_an_estimate(digits):
    result = autoq.search("digits-cnn", budget="4.5bits", device="h100", n_trials=8, tracking_uri=None, storage=None, progress=False)
    assert all(p.latency_source == "estimate:roofline:h100" and p.latency_us > 0 for p in result.points)
    summary = format_summary(result)
    assert "estimate:roofline:h100" in summary and "ESTIMATE" in summary
    # 3 objectives: no frontier point is dominated in (quality, bits, latency)
    for p in result.frontier:
        assert not any(q.quality > p.quality and q.effective_bits <= p.effective_bits and q.latency_us <= p.latency_us for q in result.points)


def test_latency_is_the_studys_third_objective_and_its_pareto_front_is_the_frontier(digits, tmp_path):
    """With a device, Optuna optimises (quality, bits, latency), resumed too: the dashboard's front is autoq's frontier."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    table = write_digits_table(tmp_path / "digits-table.json", digits.model)
    options = dict(budget="3ms", device=table, tracking_uri=None, storage=storage, progress=False)
    first = autoq.search("digits-cnn", n_trials=8, **options)
    result = autoq.search("digits-cnn", n_trials=14, study_name=first.study_name, resume=True, **options)  # resumed with three
    assert len(result.points) == 14
    study = optuna.load_study(study_name=result.study_name, storage=storage)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE", "MINIMIZE"]
    assert study.metric_names == ["quality", "effective_bits", "latency_ms"]
    told = {t.number: tuple(t.values) for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    assert told == {p.trial: (p.quality, p.effective_bits, p.latency_ms) for p in result.points}
    assert {tuple(t.values) for t in study.best_trials} == {(p.quality, p.effective_bits, p.latency_ms) for p in result.frontier}
    # latency is not a function of bits here (the table's 200 us per layer), so it shapes the front
    assert len({p.latency_ms for p in result.frontier}) > 1


def test_latency_budget_outside_the_table_range_states_it(digits, tmp_path, capsys):
    table = write_digits_table(tmp_path / "digits-table.json", digits.model)
    assert main(["search", "--model", "digits-cnn", "--budget", "500us", "--device", table, "--no-progress"]) == 2
    err = capsys.readouterr().err
    # the cheapest: int2 on the linear layers, the fp16 matmul on the convolutions whatever their format (no kernel runs them)
    cheapest_us = sum(200 + (2 if layer.is_linear else 16) * layer.out_features * layer.in_features / 100 for layer in find_layers(digits.model))
    assert "below the cheapest" in err and f"range for this model and search space is {cheapest_us:.3f} us" in err and f"table:{DEVICE}" in err


def test_latency_budget_above_the_slowest_assignment_is_searched_with_a_note(digits, tmp_path, capsys, mlflow_uri):
    """'3 ms' for a model whose slowest assignment is faster: every point fits, and the user is told so."""
    table = write_digits_table(tmp_path / "digits-table.json", digits.model)
    result = autoq.search("digits-cnn", budget="1s", device=table, n_trials=4, tracking_uri=mlflow_uri, storage=None, progress=False)
    err = capsys.readouterr().err
    assert "autoq: note: budget '1s' is above the dearest assignment" in err and f"table:{DEVICE}" in err
    assert len(result.points) == 4 and all(p.latency_us <= 1e6 for p in result.points)
    client = MlflowClient(mlflow_uri)
    parent = client.search_runs([client.get_experiment_by_name("autoq").experiment_id], "tags.`autoq.kind` = 'search'")[0]
    assert parent.data.tags["budget_note"].startswith("budget '1s' is above the dearest assignment")
