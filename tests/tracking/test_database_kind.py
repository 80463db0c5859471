"""An Optuna database passed as the MLflow store, or an MLflow store as the Optuna storage, is refused read-only."""

from __future__ import annotations

import hashlib

import optuna
import pytest
from mlflow.tracking import MlflowClient

from autoq.engine import SearchConfig
from autoq.engine.resume import load_study
from autoq.errors import AutoqError
from autoq.tracking.mlflow_logger import tracking_client


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_each_tools_database_passed_for_the_others_is_refused_unchanged(tmp_path):
    """Both keep an alembic_version table: MLflow migrated its tables into an optuna.db (then failed with a traceback,
    exit 1), and Optuna its own into an mlflow.db ('pip install -U optuna')."""
    optuna_db, mlflow_db = tmp_path / "optuna.db", tmp_path / "mlflow.db"
    optuna.create_study(study_name="s", storage=f"sqlite:///{optuna_db}")
    MlflowClient(tracking_uri=f"sqlite:///{mlflow_db}").search_experiments()
    before = {p: _digest(p) for p in (optuna_db, mlflow_db)}
    with pytest.raises(AutoqError, match=r"optuna.db is an Optuna database \(a search's trials\), not an MLflow store; pass the MLflow"):
        tracking_client(f"sqlite:///{optuna_db}")
    with pytest.raises(AutoqError, match=r"Optuna storage sqlite:///.*mlflow.db is an MLflow store, not an Optuna database"):
        SearchConfig(budget="4.5bits", tracking_uri=None, storage=f"sqlite:///{mlflow_db}")  # checked as it is made
    with pytest.raises(AutoqError, match=r"is an MLflow store, not an Optuna database"):
        load_study(f"sqlite:///{mlflow_db}", "s")
    assert {p: _digest(p) for p in (optuna_db, mlflow_db)} == before
    assert load_study(f"sqlite:///{optuna_db}", "s").study_name == "s"  # each as itself, as before
    tracking_client(f"sqlite:///{mlflow_db}")
