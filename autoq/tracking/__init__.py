"""Experiment tracking (MLflow): logging a search, and reading searches back."""

from autoq.tracking.mlflow_logger import (
    DEFAULT_EXPERIMENT,
    DEFAULT_TRACKING_URI,
    STUDY_TAG,
    TRIAL_TAG,
    MlflowTracker,
    absolute_uri,
    check_experiment,
    default_experiment,
    default_tracking_uri,
    outer_run,
    require_store,
    sqlite_path,
    stored_run,
    tracking_client,
    without_password,
)

__all__ = [
    "DEFAULT_EXPERIMENT",
    "DEFAULT_TRACKING_URI",
    "STUDY_TAG",
    "TRIAL_TAG",
    "MlflowTracker",
    "absolute_uri",
    "check_experiment",
    "default_experiment",
    "default_tracking_uri",
    "outer_run",
    "require_store",
    "sqlite_path",
    "stored_run",
    "tracking_client",
    "without_password",
]
