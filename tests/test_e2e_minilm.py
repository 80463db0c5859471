"""The README's main command, shortened: ``autoq search`` on the real MiniLM with a real SQLite MLflow store."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import optuna
import pytest
from helpers import child_runs
from mlflow.tracking import MlflowClient

from autoq.builtin import load_workload
from autoq.choice import Assignment
from autoq.cost import CostModel
from autoq.model import find_layers


@pytest.mark.slow
def test_cli_search_on_real_minilm(tmp_path, mlflow_uri):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "autoq", "search", "--budget", "4.5bits", "--n-trials", "6", "--tracking-uri", mlflow_uri, "--no-progress"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "Pareto frontier (quality, bits) within 4.5bits" in out and "mlflow ui --backend-store-uri" in out
    assert "Best uniform within budget" in out and any(w in out for w in ("better.", "ties it", "is this uniform assignment."))

    client = MlflowClient(mlflow_uri)
    parents = client.search_runs([client.get_experiment_by_name("autoq").experiment_id], filter_string="tags.`autoq.kind` = 'search'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.params["model"] == "all-MiniLM-L6-v2" and parent.data.params["model_source"] == "minilm"
    children = child_runs(client, parent.info.run_id)
    assert len(children) == 6
    front = [r for r in children if r.data.tags["pareto"] == "true"]
    assert front and all(r.data.metrics["effective_bits"] <= 4.5 for r in front)
    exported = re.search(rf"Export the best point:  autoq export --run-id (\w+) --tracking-uri {re.escape(mlflow_uri)} --out quantized", out)
    assert exported, out  # the best point's own trial run, on the frontier, with its best quality
    best = next(r for r in front if r.info.run_id == exported.group(1))
    assert best.data.metrics["quality"] == max(r.data.metrics["quality"] for r in front)
    assert {"frontier.csv", "frontier.png"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}

    # recompute one frontier point's bits from its stored assignment, on the real model
    workload = load_workload("minilm")
    cost_model = CostModel.for_model(workload.model, find_layers(workload.model))
    assert len(cost_model.layers) == 37
    run = max(front, key=lambda r: r.data.metrics["quality"])
    assignment = Assignment.from_json(open(client.download_artifacts(run.info.run_id, "assignment.json", str(tmp_path))).read())
    assert cost_model.cost(assignment).effective_bits == pytest.approx(run.data.metrics["effective_bits"])
    assert run.data.metrics["quality"] >= max(r.data.metrics["quality"] for r in children if r.data.tags["uniform"] == "true")

    # the Optuna study sits beside the MLflow database
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.load_study(study_name=parent.data.params["study_name"], storage=storage)
    assert len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) == 6
