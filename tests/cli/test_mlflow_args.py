"""The MLflow options the commands share (``autoq.cli.mlflow_args``)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from autoq.cli.mlflow_args import fill_experiment, tracking_uri_of


@pytest.mark.parametrize("given", ["none", "None", "NONE"])
def test_tracking_uri_none_in_any_case_is_no_mlflow(given):
    """As the Python API's ``tracking_uri=None``; MLflow itself would take 'NONE' for a store in a folder of that name."""
    assert tracking_uri_of(argparse.Namespace(tracking_uri=given)) is None


def test_any_other_tracking_uri_is_taken_as_given():
    assert tracking_uri_of(argparse.Namespace(tracking_uri="sqlite:///None.db")) == "sqlite:///None.db"


def test_a_tracking_uri_none_in_capitals_looks_the_experiment_id_up_in_the_default_store(mlflow_uri, monkeypatch):
    """--tracking-uri NONE is no MLflow, as 'none' is: $MLFLOW_EXPERIMENT_ID is looked up in the default store, not in a
    store named 'NONE' (where it would not be found, and the experiment fall back to 'autoq')."""
    from mlflow.tracking import MlflowClient

    folder = Path(mlflow_uri[len("sqlite:///"):]).parent
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.chdir(folder)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", MlflowClient(mlflow_uri).create_experiment("x", artifact_location=str(folder / "x")))
    args = argparse.Namespace(tracking_uri="NONE", experiment=None)
    fill_experiment(args)
    assert args.experiment == "x"
