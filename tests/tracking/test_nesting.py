"""A search nested in a pipeline's MLflow run (``mlflow_parent_run_id``): where its runs go, and what reads them back."""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import artifacts_beside
from mlflow.tracking import MlflowClient

import autoq
from autoq.builtin import load_workload
from autoq.cli import main
from autoq.engine import run_search
from autoq.errors import AutoqError
from autoq.export.from_run import point_from_run
from autoq.tracking.runs import trial_runs


@pytest.fixture
def outer(mlflow_uri):
    """A pipeline step's run, in an experiment of the pipeline's own, with params a search's settings must not be read from."""
    client = MlflowClient(mlflow_uri)
    run = client.create_run(client.create_experiment("pipeline", artifact_location=artifacts_beside(mlflow_uri)), run_name="step-1")
    client.log_param(run.info.run_id, "model_source", "not-a-model")
    return run


def test_search_run_nests_in_the_outer_run_and_its_experiment(outer, mlflow_uri):
    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=6, seed=1, tracking_uri=mlflow_uri, progress=False,
                          mlflow_parent_run_id=outer.info.run_id)
    client = MlflowClient(mlflow_uri)
    search = client.get_run(result.parent_run_id)
    assert search.data.tags["mlflow.parentRunId"] == outer.info.run_id
    assert search.info.experiment_id == outer.info.experiment_id
    assert client.get_experiment_by_name("autoq") is None  # nothing logged to the default experiment
    trials = trial_runs(client, result.parent_run_id)
    assert sorted(int(r.data.tags["autoq.trial"]) for r in trials) == sorted(p.trial for p in result.points)
    assert all(r.info.experiment_id == outer.info.experiment_id for r in trials)
    assert client.get_run(outer.info.run_id).info.status == "RUNNING"  # the pipeline's run is the pipeline's to end
    assert autoq.SearchResult.from_mlflow(result.parent_run_id, mlflow_uri) == result
    # exporting the search run reads the search's settings, not its parent's
    point = point_from_run(mlflow_uri, result.parent_run_id)
    assert point.model_source == "digits-cnn" and point.assignment == max(result.frontier, key=lambda p: (p.quality, -p.effective_bits)).assignment


def test_an_unknown_outer_run_is_refused_before_any_evaluation(mlflow_uri):
    with pytest.raises(AutoqError, match="no MLflow run 'nope' in .*mlflow_parent_run_id .* must be a run in the same tracking_uri"):
        autoq.search("digits-cnn", n_trials=2, tracking_uri=mlflow_uri, progress=False, mlflow_parent_run_id="nope", seed_from="none")
    assert not (Path(mlflow_uri.removeprefix("sqlite:///")).parent / "optuna.db").exists()  # refused before the study was made


def test_a_deleted_outer_run_is_refused(outer, mlflow_uri):
    MlflowClient(mlflow_uri).delete_run(outer.info.run_id)
    with pytest.raises(AutoqError, match="is deleted, and the UI hides the runs nested in it; restore it"):
        autoq.search("digits-cnn", n_trials=2, tracking_uri=mlflow_uri, progress=False, mlflow_parent_run_id=outer.info.run_id, seed_from="none")


def test_an_experiment_other_than_the_outer_runs_is_refused_on_the_command_line(outer, mlflow_uri, capsys):
    """It was ignored without a word: the search went to the parent's experiment, not the one named. (``autoq.search``
    refuses it as well; a `SearchConfig`'s experiment is filled with the default when it is made, so run_search cannot
    tell a named one from it.)"""
    args = ["search", "--no-progress", "--tracking-uri", mlflow_uri, "--model", "digits-cnn", "--n-trials", "2", "--seed-from", "none",
            "--mlflow-parent-run-id", outer.info.run_id]
    assert main([*args, "--experiment", "mine"]) == 2
    err = capsys.readouterr().err
    assert "experiment 'mine' (--experiment) is not the experiment of the parent MLflow run" in err and "give 'pipeline'" in err
    assert "autoq: loading" not in err  # before the model
    assert main([*args, "--experiment", "autoq"]) == 2  # the default's name, typed, is a name too (it was let through)
    assert "experiment 'autoq' (--experiment) is not the experiment of the parent MLflow run" in capsys.readouterr().err
    assert main([*args, "--experiment", "pipeline"]) == 0  # the parent's own, named, is fine
    assert MlflowClient(mlflow_uri).get_experiment_by_name("mine") is None


def test_a_config_made_before_the_pipeline_set_its_experiment_nests(outer, mlflow_uri, monkeypatch):
    """A config built before ``mlflow.set_experiment`` holds the default then: it is not an experiment the user named."""
    base = autoq.SearchConfig(budget="4.5bits", n_trials=2, tracking_uri=mlflow_uri, progress=False, seed_from="none")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "pipeline")
    result = run_search(load_workload("digits-cnn"), dataclasses.replace(base, mlflow_parent_run_id=outer.info.run_id))
    assert MlflowClient(mlflow_uri).get_run(result.parent_run_id).info.experiment_id == outer.info.experiment_id


def test_nesting_needs_mlflow_logging():
    with pytest.raises(AutoqError, match="MLflow logging is off"):
        autoq.SearchConfig(tracking_uri=None, mlflow_parent_run_id="abc")


def test_cli_resume_continues_the_nested_search(outer, mlflow_uri, capsys):
    base = ["search", "--no-progress", "--tracking-uri", mlflow_uri, "--model", "digits-cnn", "--n-trials", "3", "--seed-from", "none"]
    assert main([*base, "--study-name", "nested", "--mlflow-parent-run-id", outer.info.run_id]) == 0
    capsys.readouterr()
    # 'autoq runs' in the default experiment names the one the search went to; there, its resume command works
    assert main(["runs", "--tracking-uri", mlflow_uri]) == 2
    assert "no experiment 'autoq' in" in (err := capsys.readouterr().err) and "one of: 'pipeline'" in err
    assert main(["runs", "--tracking-uri", mlflow_uri, "--experiment", "pipeline"]) == 0
    resume = shlex.split(capsys.readouterr().out.splitlines()[-1].split("   ")[0].replace("NAME", "nested"))
    assert resume[-2:] == ["--experiment", "pipeline"]  # refused as 'experiment pipeline (stored: autoq)' before
    assert main([*resume[1:], "--n-trials", "5", "--no-progress"]) == 0
    capsys.readouterr()
    client = MlflowClient(mlflow_uri)
    searches = client.search_runs([outer.info.experiment_id], "tags.`autoq.kind` = 'search'")
    assert len(searches) == 1  # the resumed search found its run in the outer run's experiment
    assert len(trial_runs(client, searches[0].info.run_id)) == 5


def test_python_api_resume_finds_the_nested_run_without_being_told(outer, mlflow_uri):
    options = dict(tracking_uri=mlflow_uri, progress=False, seed_from="none", study_name="api-nested")
    first = autoq.search("digits-cnn", budget="5bits", n_trials=3, mlflow_parent_run_id=outer.info.run_id, **options)
    resumed = autoq.search("digits-cnn", n_trials=5, resume=True, **options)  # its budget too, as --resume takes it
    assert resumed.parent_run_id == first.parent_run_id and len(resumed.points) == 5
    assert resumed.budget.text == "5bits"  # the default, 4.5bits, was taken as given: "cannot resume ... with other settings"
    assert MlflowClient(mlflow_uri).get_experiment_by_name("autoq") is None


@pytest.fixture
def fluent_store(mlflow_uri, monkeypatch):
    """mlflow.set_tracking_uri(mlflow_uri), as a pipeline does, undone after the test (it sets $MLFLOW_TRACKING_URI too)."""
    import mlflow

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(name, raising=False)  # restored at teardown, whatever mlflow sets them to
    mlflow.set_tracking_uri(mlflow_uri)
    yield mlflow
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


def test_a_search_inside_mlflow_start_run_nests_in_the_active_run(fluent_store, mlflow_uri, tmp_path, capsys):
    """An MLflow user's pipeline step (``with mlflow.start_run():``) made a top-level search run beside it, in another
    experiment, unless it passed its own run id: MLflow's autologging nests in the active run."""
    mlflow = fluent_store
    client = MlflowClient(mlflow_uri)
    kwargs = dict(budget="4.5bits", n_trials=2, seed_from="none", storage=None, progress=False)
    pipeline = client.create_experiment("pipeline", artifact_location=artifacts_beside(mlflow_uri))
    with mlflow.start_run(run_name="step", experiment_id=pipeline) as step:
        nested = autoq.search("digits-cnn", **kwargs)  # the store from $MLFLOW_TRACKING_URI, which set_tracking_uri set
        alone = autoq.search("digits-cnn", mlflow_parent_run_id=None, **kwargs)  # None, given: not nested
        elsewhere = autoq.search("digits-cnn", tracking_uri=f"sqlite:///{tmp_path / 'other.db'}", **kwargs)  # said with progress off too
        with pytest.raises(AutoqError, match=r"experiment 'mine' \(--experiment\) is not the experiment of the parent MLflow run "
                                             rf"'{step.info.run_id}', 'pipeline'.*give 'pipeline'"):
            autoq.search("digits-cnn", experiment="mine", **kwargs)  # it logged to 'pipeline' without a word, as the CLI did once
        named = autoq.search("digits-cnn", experiment="pipeline", **kwargs)
        # a pipeline's SearchConfig: its defaults are not given (asdict splatted passed mlflow_parent_run_id=None: not nested)
        configured = autoq.search("digits-cnn", config=autoq.SearchConfig(**kwargs))
    search = client.get_run(nested.parent_run_id)
    assert search.data.tags["mlflow.parentRunId"] == step.info.run_id
    assert search.info.experiment_id == step.info.experiment_id
    assert "mlflow.parentRunId" not in client.get_run(alone.parent_run_id).data.tags
    assert client.get_run(named.parent_run_id).data.tags["mlflow.parentRunId"] == step.info.run_id
    assert client.get_run(configured.parent_run_id).data.tags["mlflow.parentRunId"] == step.info.run_id
    assert MlflowClient(mlflow_uri).get_experiment_by_name("mine") is None
    other = MlflowClient(f"sqlite:///{tmp_path / 'other.db'}").get_run(elsewhere.parent_run_id)
    assert "mlflow.parentRunId" not in other.data.tags
    assert f"MLflow run {step.info.run_id} is active (mlflow.start_run) in {mlflow_uri}" in capsys.readouterr().err
    outside = autoq.search("digits-cnn", **kwargs)  # no active run any more
    assert "mlflow.parentRunId" not in client.get_run(outside.parent_run_id).data.tags


def test_the_active_run_is_read_while_another_thread_still_imports_mlflow(tmp_path):
    """Two searches in threads (an outer study's n_jobs=2) of a process that had not imported mlflow: the second read
    the half-imported module, 'partially initialized module 'mlflow' has no attribute 'active_run''. In a new process,
    so that mlflow is not imported yet; its import takes seconds, so the lookup lands inside it."""
    script = (
        "import sys, threading, time\n"
        "from autoq.tracking.active_run import active_parent\n"
        "assert 'mlflow' not in sys.modules\n"
        "importer = threading.Thread(target=lambda: __import__('mlflow'))\n"
        "importer.start()\n"
        "while 'mlflow' not in sys.modules:\n"
        "    time.sleep(0.0005)\n"
        f"print('active run:', active_parent('sqlite:///{tmp_path}/mlflow.db'))\n"
        "importer.join()\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "active run: None", proc.stderr[-2000:]


def test_a_resume_inside_another_active_run_continues_its_own_search_run(fluent_store, mlflow_uri, tmp_path):
    """A pipeline's later step resuming a search its first step started: the search's run stays nested in the first
    step's run (the resume finds its stored parent); taking the active run as its parent refused the resume as other
    settings ('mlflow_parent_run_id ... (stored: ...)')."""
    mlflow = fluent_store
    client = MlflowClient(mlflow_uri)
    pipeline = client.create_experiment("pipeline", artifact_location=artifacts_beside(mlflow_uri))
    kwargs = dict(budget="4.5bits", seed_from="none", storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="s", progress=False)
    with mlflow.start_run(run_name="first", experiment_id=pipeline) as first_step:
        first = autoq.search("digits-cnn", n_trials=2, **kwargs)
    with mlflow.start_run(run_name="later", experiment_id=pipeline):
        resumed = autoq.search("digits-cnn", n_trials=3, resume=True, **kwargs)
    assert resumed.parent_run_id == first.parent_run_id and len(resumed.points) == 3
    assert client.get_run(resumed.parent_run_id).data.tags["mlflow.parentRunId"] == first_step.info.run_id


def test_a_relative_uri_of_the_active_runs_store_nests_in_it(fluent_store, mlflow_uri, monkeypatch, capsys):
    """'sqlite:///mlflow.db' named from the store's folder is the active run's store, set by its absolute path: nested."""
    from autoq.tracking.active_run import active_parent

    db = Path(mlflow_uri.removeprefix("sqlite:///"))
    monkeypatch.chdir(db.parent)
    with fluent_store.start_run() as run:
        assert active_parent(f"sqlite:///{db.name}") == run.info.run_id
    assert "is not nested" not in capsys.readouterr().err


def test_a_search_without_mlflow_logging_nests_in_nothing_and_says_nothing(fluent_store, capsys):
    """tracking_uri=None (MLflow logging off) inside mlflow.start_run: no parent, and no note about another store."""
    from autoq.tracking.active_run import active_parent

    with fluent_store.start_run():
        assert active_parent(None) is None
    assert "is active (mlflow.start_run)" not in capsys.readouterr().err
