"""Reading back what a search left in MLflow, for assertions."""

from __future__ import annotations

from mlflow.tracking import MlflowClient


def child_runs(client: MlflowClient, parent_id: str) -> list:
    parent = client.get_run(parent_id)
    return client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'", max_results=5000
    )
