"""autoq's MLflow defaults follow MLflow's own variables: ``MLFLOW_TRACKING_URI`` and ``MLFLOW_EXPERIMENT_NAME``."""

from __future__ import annotations

import shlex
from pathlib import Path

from mlflow.tracking import MlflowClient

import autoq
from autoq.cli import main


def test_without_the_variables_a_local_sqlite_store_and_the_autoq_experiment():
    config = autoq.SearchConfig()
    assert (config.tracking_uri, config.experiment) == ("sqlite:///mlflow.db", "autoq")


def test_the_variables_direct_every_command_that_is_not_told_otherwise(mlflow_uri, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "pipeline-exp")
    work = tmp_path / "work"  # the store is tmp_path/mlflow.db: work in another folder
    work.mkdir()
    monkeypatch.chdir(work)
    assert (autoq.SearchConfig().tracking_uri, autoq.SearchConfig().experiment) == (mlflow_uri, "pipeline-exp")

    assert main(["search", "--model", "digits-cnn", "--n-trials", "3", "--no-progress", "--seed-from", "none", "--study-name", "env"]) == 0
    out = capsys.readouterr().out
    assert not (work / "mlflow.db").exists()  # logged to the store the environment names
    client = MlflowClient(mlflow_uri)
    searches = client.search_runs([client.get_experiment_by_name("pipeline-exp").experiment_id], "tags.`autoq.kind` = 'search'")
    assert [r.data.tags["autoq.study"] for r in searches] == ["env"]

    export = next(line.split(":  ", 1)[1].split("   (")[0] for line in out.splitlines() if "Export the best point:" in line)
    assert "--tracking-uri" not in export  # the default store is the environment's, so the printed command needs none
    assert main(shlex.split(export)[1:] + ["--no-progress"]) == 0
    assert main(["runs"]) == 0 and "env" in capsys.readouterr().out


def test_a_pipelines_set_experiment_is_followed(mlflow_uri, monkeypatch, tmp_path, capsys):
    """mlflow.set_experiment() tells the rest of the process through MLFLOW_EXPERIMENT_ID; the search landed in 'autoq'."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    experiment = mlflow.set_experiment("pipeline")
    try:
        assert autoq.SearchConfig().experiment == "pipeline"
    finally:
        mlflow.tracking.fluent._active_experiment_id = None
    capsys.readouterr()
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "999")  # an id of another store: the variable outlives it
    assert autoq.SearchConfig().experiment == "autoq"
    said = capsys.readouterr().err  # said, not silent; "using": autoq runs and pareto log nothing
    assert "$MLFLOW_EXPERIMENT_ID=999 names no experiment in" in said and "; using experiment 'autoq' (set --experiment" in said
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'none-yet.db'}")
    assert autoq.SearchConfig().experiment == "autoq" and not (tmp_path / "none-yet.db").exists()  # no store made to look
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "by-name")  # the name wins, as in MLflow
    assert autoq.SearchConfig().experiment == "by-name" and experiment.name == "pipeline"


def test_a_command_reads_the_experiment_variable_once(mlflow_uri, monkeypatch, capsys):
    """Every subcommand's parser looked the id up in the store (and the note about an unknown one came 8 times):
    the default is resolved once the command runs."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "999")
    MlflowClient(mlflow_uri).create_experiment("autoq", artifact_location=str(Path(mlflow_uri[len("sqlite:///"):]).parent / "a"))
    assert main(["runs"]) == 0
    assert capsys.readouterr().err.count("$MLFLOW_EXPERIMENT_ID=999 names no experiment") == 1


def test_the_experiment_id_variable_is_read_in_the_store_the_command_names(mlflow_uri, monkeypatch, tmp_path, capsys):
    """$MLFLOW_EXPERIMENT_ID was looked up in ./mlflow.db whatever --tracking-uri said: the search landed in 'autoq',
    and the note named the wrong store (or, without a ./mlflow.db, there was none)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    work = tmp_path / "work"  # the store is tmp_path/mlflow.db: no ./mlflow.db in this folder
    work.mkdir()
    monkeypatch.chdir(work)
    experiment_id = MlflowClient(mlflow_uri).create_experiment("x", artifact_location=str(tmp_path / "x"))
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment_id)
    assert autoq.SearchConfig(tracking_uri=mlflow_uri).experiment == "x"
    assert main(["runs", "--tracking-uri", mlflow_uri]) == 0 and "no searches in experiment 'x'" in capsys.readouterr().out
    assert autoq.SearchConfig(tracking_uri=f"sqlite:///{tmp_path / 'other.db'}").experiment == "autoq"
    assert f"names no experiment in sqlite:///{tmp_path / 'other.db'}" in capsys.readouterr().err
    assert not (work / "mlflow.db").exists() and not (tmp_path / "other.db").exists()
