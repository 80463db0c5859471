"""Resume of a study that other code added trials to (``study.optimize`` with a user's own objective, as Optuna's
tools invite): those trials are not autoq's measurements."""

from __future__ import annotations

import optuna
import pytest
import torch
from helpers import child_runs
from mlflow.tracking import MlflowClient

import autoq
from autoq.engine.strategy import CONSTRAINT, CONSTRAINT_ATTR
from autoq.errors import AutoqWarning


def test_the_constraint_attribute_is_where_optuna_stores_a_trials_constraint():
    study = optuna.create_study()
    trial = study.ask()
    trial.set_constraint(CONSTRAINT, 0.5)
    assert study.trials[0].system_attrs[CONSTRAINT_ATTR] == 0.5


def test_trials_told_by_a_users_own_objective_are_left_out_of_the_frontier_mlflow_and_the_count(tmp_path, mlflow_uri):
    """A resume took them as measured: the frontier showed the user's made-up quality for an assignment autoq had
    measured lower, logged it to MLflow as a Pareto run, and counted them toward --n-trials."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    data = [torch.randn(8, 16) for _ in range(2)]
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    options = dict(budget="6bits", n_trials=6, seed_from="none", tracking_uri=mlflow_uri, storage=storage, study_name="s", progress=False)
    first = autoq.search(model, data, **options)
    study = optuna.load_study(study_name="s", storage=storage)
    measured = first.points[0]
    study.enqueue_trial({name: choice.name for name, choice in measured.assignment.items()})
    distributions = study.trials[0].distributions

    def own(trial):
        for name, distribution in distributions.items():
            trial.suggest_categorical(name, distribution.choices)
        return 2.0, 1.0  # a quality no quantized model reaches, at 1 bit

    study.optimize(own, n_trials=2)
    foreign = [t.number for t in study.trials[-2:]]
    with pytest.warns(AutoqWarning, match=rf"2 finished trial\(s\) autoq did not evaluate \(trial {foreign[0]}, {foreign[1]}:"):
        again = autoq.search(model, data, resume=True, **options)
    assert max(p.quality for p in again.points) < 2.0
    assert {p.trial for p in again.points} == {p.trial for p in first.points}  # the 6 asked for are done: nothing more
    assert all(float(r.data.metrics["quality"]) < 2.0 for r in child_runs(MlflowClient(mlflow_uri), first.parent_run_id))
