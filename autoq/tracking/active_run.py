"""A search started from Python inside ``with mlflow.start_run():`` nests its run in that one, as MLflow's own
autologging does: the pipeline step's run shows the search, and the search its trials, without being told."""

from __future__ import annotations

import sys

from autoq.messages import note
from autoq.tracking.mlflow_logger import absolute_uri, shown_uri


def active_parent(tracking_uri: str | None) -> str | None:
    """The id of the active fluent MLflow run (``mlflow.start_run``) for a search logging to ``tracking_uri`` to nest in;
    ``None`` where there is none, or where it is in another store (a note, with ``progress=False`` too: a pipeline that
    expected its run nested has no other sign; MLflow nests runs of one store only).

    mlflow is not imported to look: a process that never imported it has no active run. Where it is in
    ``sys.modules`` it is imported again: another thread (a second search of an outer study's ``n_jobs``) may still be
    importing it, and the import waits for that one to finish; the half-made module had no ``active_run`` yet."""
    if tracking_uri is None or "mlflow" not in sys.modules:
        return None
    import mlflow

    run = mlflow.active_run()
    if run is None:
        return None
    fluent = mlflow.get_tracking_uri()
    if absolute_uri(fluent) != absolute_uri(tracking_uri):
        note(f"MLflow run {run.info.run_id} is active (mlflow.start_run) in {shown_uri(absolute_uri(fluent))}, and the "
             f"search logs to {shown_uri(absolute_uri(tracking_uri))}: its run is not nested in the active one (MLflow nests runs "
             "of one store only); pass tracking_uri=mlflow.get_tracking_uri() to nest it")
        return None
    return run.info.run_id
