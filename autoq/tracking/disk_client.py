"""An ``MlflowClient`` whose artifact writes that fail on the disk raise MLflow's own error.

A local store's artifacts are files copied into its ``mlartifacts`` folder: a full or unwritable disk raised a bare
``OSError`` there, which none of the search's store handling took for the store's failure. The search then stopped
on "No space left on device", naming neither the store nor the trials it kept, and left its MLflow run RUNNING. As
an ``MlflowException`` it is the store's failure, which says where the trials are and how to resume."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient


class DiskClient(MlflowClient):
    """``MlflowClient`` with `log_text` and `log_artifact` raising `MlflowException` for a write the disk refused."""

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        with self._disk_errors(run_id):
            super().log_text(run_id, text, artifact_file)

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None = None) -> None:
        with self._disk_errors(run_id):
            super().log_artifact(run_id, local_path, artifact_path)

    @contextmanager
    def _disk_errors(self, run_id: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise MlflowException(f"the run's artifacts could not be written to {self._artifact_uri(run_id)} "
                                  f"({exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''})") from exc

    def _artifact_uri(self, run_id: str) -> Any:
        try:
            return self.get_run(run_id).info.artifact_uri
        except Exception:  # noqa: BLE001 - the store's own failure: its artifacts' place goes unnamed
            return "its artifact store"
