"""The search's MLflow tracker on a real SQLite store: how a session's parent run ends, and what a worker's trial runs carry."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from autoq.choice import Assignment, LayerChoice
from autoq.tracking import MlflowTracker

_ONE_LAYER = Assignment((("0", LayerChoice.from_name("int4-ch-asym:rtn-mse")),))


def test_a_reopened_run_a_crash_left_running_ends_failed_when_the_session_fails_before_its_trials(mlflow_uri):
    """A resume reopening a search whose last session was killed (its run still RUNNING), then failing before its first
    trial: given back the status it had, the run stayed RUNNING, and 'autoq runs' showed a search no process runs."""
    crashed = MlflowTracker.open(mlflow_uri, "autoq")
    parent = crashed.start("s", {"optuna_storage": "memory"}, {"autoq.kind": "search", "autoq.study": "s"})  # never ended: killed
    resumed = MlflowTracker.open(mlflow_uri, "autoq")
    assert resumed.continue_search("s", None) and resumed.parent_id == parent
    resumed.abandon()
    assert MlflowClient(mlflow_uri).get_run(parent).info.status == "FAILED"


def test_a_workers_trial_runs_carry_the_parent_runs_user_and_source(mlflow_uri):
    """A Ray worker logs its trials on a tracker attached to the driver's parent run: the UI's User and Source columns
    (and the git commit) are the driver's, not the worker's process's."""
    context = {"mlflow.user": "ada", "mlflow.source.name": "train.py", "mlflow.source.type": "LOCAL", "mlflow.source.git.commit": "abc123"}
    driver = MlflowTracker.open(mlflow_uri, "autoq")
    parent = driver.start("s", {}, {**context, "autoq.kind": "search"})
    worker = MlflowTracker(mlflow_uri, driver.experiment_id).attach(parent)
    child = worker.log_trial(0, {"quality": 1.0}, {}, _ONE_LAYER)
    tags = MlflowClient(mlflow_uri).get_run(child).data.tags
    assert {key: tags.get(key) for key in context} == context
    assert "autoq.kind" not in tags  # the parent's own tags are not a trial's


def test_a_trials_choices_param_holds_a_long_summary_whole(mlflow_uri):
    """A large model searched over a wide space mixes dozens of choices: the trial's ``choices`` param (its summary, the
    UI's column) is kept whole up to MLflow's 6,000 characters a param."""
    names = [f"int{bits}-{group}-{sym}:{method}" for bits in (2, 3, 4, 8) for group in ("ch", "g32", "g64", "g128")
             for sym in ("sym", "asym") for method in ("rtn-mse", "rtn-minmax")]
    mixed = Assignment(tuple((str(n), LayerChoice.from_name(name)) for n, name in enumerate(names)))
    assert 600 < len(mixed.summary()) < 6000
    tracker = MlflowTracker.open(mlflow_uri, "autoq")
    tracker.start("s", {}, {"autoq.kind": "search"})
    child = tracker.log_trial(0, {"quality": 1.0}, {}, mixed)
    assert MlflowClient(mlflow_uri).get_run(child).data.params["choices"] == mixed.summary()
