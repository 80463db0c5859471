"""Experiment tracking (MLflow)."""

from autoq.tracking.mlflow_logger import (
    DEFAULT_TRACKING_URI,
    MlflowTracker,
    sqlite_path,
)

__all__ = ["DEFAULT_TRACKING_URI", "MlflowTracker", "sqlite_path"]
