"""The search's MLflow tracker on a real SQLite store: how a session's parent run ends (and a resumed one counts itself),
what a trial's run carries, and the frontier's files and descriptions."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
from helpers import logged_search, tracked_point
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from autoq.choice import Assignment, LayerChoice
from autoq.tracking import MlflowTracker
from autoq.tracking.mlflow_logger import STORAGE_TAG

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


def test_a_trial_run_keeps_its_status_start_time_step_and_trial_param(mlflow_uri):
    """A failed trial's run ends FAILED and starts when its evaluation began; its metrics are at step 0 and its number is
    its ``trial`` param, its ``autoq.trial`` tag and its run name."""
    client = MlflowClient(mlflow_uri)
    tracker = MlflowTracker.open(mlflow_uri, "autoq")
    tracker.start("s", {}, {"autoq.kind": "search"})
    began = int(time.time() * 1000) - 60_000
    run_id = tracker.log_trial(7, {"quality": 0.5}, {}, _ONE_LAYER, "FAILED", start_ms=began)
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and run.info.start_time == began
    assert run.data.params["trial"] == "7" and run.data.tags["autoq.trial"] == "7" and run.info.run_name == "trial-7"
    assert [m.step for m in client.get_metric_history(run_id, "quality")] == [0]


def test_a_resumed_session_counts_itself_and_logs_its_summary_at_the_next_step(mlflow_uri):
    """A resume reopens the parent run RUNNING, tags it ``autoq.resumed=1`` and logs its summary metrics at step 1, so
    each session adds a point to the parent's charts."""
    client = MlflowClient(mlflow_uri)
    first = MlflowTracker.open(mlflow_uri, "autoq")
    parent = first.start("s", {"optuna_storage": "memory"}, {"autoq.kind": "search", "autoq.study": "s"})
    a = tracked_point(first, 0, 0.9, 4.0)
    first.finish([a], [a], {"wall_seconds": 1.0}, None)
    assert client.get_run(parent).info.status == "FINISHED"
    resumed = MlflowTracker.open(mlflow_uri, "autoq")
    assert resumed.continue_search("s", None)
    run = client.get_run(parent)
    assert run.info.status == "RUNNING" and run.data.tags["autoq.resumed"] == "1"
    resumed.finish([a], [a], {"wall_seconds": 2.0}, None)
    assert [(m.step, m.value) for m in client.get_metric_history(parent, "wall_seconds")] == [(0, 1.0), (1, 2.0)]


def test_finish_writes_the_three_frontier_files_and_ends_the_run_with_the_given_status(mlflow_uri, tmp_path: Path):
    """finish logs frontier.csv, frontier.json (each point with its assignment) and frontier.png on the parent run, and
    ends it with the status it is given (a search stopped by Ctrl-C ends KILLED)."""
    client = MlflowClient(mlflow_uri)
    tracker = MlflowTracker.open(mlflow_uri, "autoq")
    parent = tracker.start("s", {}, {"autoq.kind": "search"})
    a, b = tracked_point(tracker, 0, 0.9, 4.0), tracked_point(tracker, 1, 0.8, 4.5)
    tracker.finish([a, b], [a], {}, None, status="KILLED")
    assert client.get_run(parent).info.status == "KILLED"
    assert {f.path for f in client.list_artifacts(parent)} >= {"frontier.csv", "frontier.json", "frontier.png"}
    front = json.loads(Path(client.download_artifacts(parent, "frontier.json", str(tmp_path))).read_text())
    assert [row["trial"] for row in front] == [0] and front[0]["assignment"] == _ONE_LAYER.to_dict()


def test_only_the_frontiers_trial_runs_get_a_description_and_the_search_lists_the_frontier(mlflow_uri):
    """The export description (``mlflow.note.content``) goes on the frontier's trial runs, not on a dominated one; the
    search's description lists the frontier's run ids, not every trial's."""
    client = MlflowClient(mlflow_uri)
    tracker = MlflowTracker.open(mlflow_uri, "autoq")
    parent = tracker.start("s", {}, {"autoq.kind": "search"})
    a, b = tracked_point(tracker, 0, 0.9, 4.0), tracked_point(tracker, 1, 0.8, 4.5)  # b is dominated by a
    tracker.finish([a, b], [a], {}, None)
    assert "mlflow.note.content" in client.get_run(a.run_id).data.tags
    assert "mlflow.note.content" not in client.get_run(b.run_id).data.tags
    note = client.get_run(parent).data.tags["mlflow.note.content"]
    assert a.run_id in note and b.run_id not in note


def test_an_empty_frontier_is_a_csv_with_its_trial_header(mlflow_uri, tmp_path: Path):
    """A search that found no feasible point still logs a frontier.csv a CSV reader reads: a header naming ``trial``."""
    client = MlflowClient(mlflow_uri)
    tracker = MlflowTracker.open(mlflow_uri, "autoq")
    parent = tracker.start("s", {}, {"autoq.kind": "search"})
    tracker.finish([], [], {}, None)
    with open(client.download_artifacts(parent, "frontier.csv", str(tmp_path)), newline="", encoding="utf-8") as fh:
        assert csv.DictReader(fh).fieldnames == ["trial"]


def test_a_resume_whose_sqlite_storage_moved_to_a_database_tags_the_run_without_the_password(mlflow_uri, tmp_path: Path):
    """The run id a study recorded reopens its run where the SQLite file it named is gone (moved), and the run is tagged
    with where the trials are now: a database URL with its password hidden from the experiment's readers."""
    client = MlflowClient(mlflow_uri)
    tracker = MlflowTracker.open(mlflow_uri, "autoq")
    run = logged_search(client, tracker.experiment_id, params={"optuna_storage": f"sqlite:///{tmp_path / 'gone.db'}"})
    assert tracker.continue_search("s", "postgresql://ada:secret@db:5432/optuna", run) and tracker.parent_id == run
    assert client.get_run(run).data.tags[STORAGE_TAG] == "postgresql://ada:***@db:5432/optuna"


def test_a_recorded_run_id_reopens_nothing_for_a_search_in_memory_or_in_another_experiment(mlflow_uri, tmp_path: Path):
    """A search kept in memory is not the one whose SQLite file moved, and a run of another experiment is not this
    experiment's search: neither is reopened, nor its storage tag rewritten."""
    client = MlflowClient(mlflow_uri)
    tracker = MlflowTracker.open(mlflow_uri, "autoq")
    moved = logged_search(client, tracker.experiment_id, params={"optuna_storage": f"sqlite:///{tmp_path / 'gone.db'}"})
    assert not MlflowTracker.open(mlflow_uri, "autoq").continue_search("s", None, moved)
    storage = f"sqlite:///{tmp_path / 'here.db'}"
    kept = logged_search(client, tracker.experiment_id, params={"optuna_storage": storage})
    assert not MlflowTracker.open(mlflow_uri, "elsewhere").continue_search("s", storage, kept)
    assert tracker.continue_search("s", storage, kept) and tracker.parent_id == kept  # in its own experiment, it is the one
    assert STORAGE_TAG not in client.get_run(moved).data.tags and client.get_run(moved).info.status == "FINISHED"


def test_a_store_that_refuses_a_trials_run_is_the_trackers_failure(mlflow_uri):
    """A store error while a trial is logged is kept as ``failure``, which stops the search and its writes (``finish``
    waits through no more retries), and is raised as it is."""
    tracker = MlflowTracker.open(mlflow_uri, "autoq")
    tracker.start("s", {}, {"autoq.kind": "search"})
    MlflowClient(mlflow_uri).delete_experiment(tracker.experiment_id)  # MLflow creates no run in a deleted experiment
    assert tracker.failure is None
    with pytest.raises(MlflowException) as info:
        tracker.log_trial(0, {"quality": 0.5}, {}, _ONE_LAYER)
    assert tracker.failure is info.value
