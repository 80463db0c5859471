"""An export kept in MLflow: logged as artifacts of the run it came from, loaded back by an artifact URI.

``runs:/<run id>/quantized_model`` is then the model's address from any machine that reaches the
tracking store, as MLflow users address a run's models; the run a user picked in the MLflow UI holds
the model it describes.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from autoq.errors import AutoqError

ARTIFACT_PATH = "quantized_model"  # the export's folder among the run's artifacts
EXPORTED_TAG = "autoq.exported"  # on the run: the artifact path of its export
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")  # runs:/, models:/, mlflow-artifacts:/, s3://, ... (not C:/)


def is_artifact_uri(location: str | Path) -> bool:
    """Whether ``location`` is an MLflow artifact URI rather than a local folder."""
    return isinstance(location, str) and bool(_SCHEME.match(location))


def log_export(tracking_uri: str, run_id: str, out_dir: Path) -> str:
    """Log the export in ``out_dir`` (its config and weights, not whatever else the folder holds) as artifacts of
    ``run_id`` and tag the run; returns its ``runs:/`` URI."""
    from autoq.export.config import CONFIG_NAME, WEIGHTS_NAME
    from autoq.tracking import stored_run

    client, run = stored_run(tracking_uri, run_id, "log the export to the run it was exported from")
    if run.info.lifecycle_stage == "deleted":  # MLflow takes the artifacts and then refuses the tag
        raise AutoqError(f"MLflow run {run_id!r} is deleted and takes no more logs; the export is in {out_dir}. Restore the run "
                         f"(mlflow runs restore --run-id {run_id}) to log it there")
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        client.log_artifact(run_id, str(Path(out_dir) / name), ARTIFACT_PATH)
    client.set_tag(run_id, EXPORTED_TAG, ARTIFACT_PATH)
    return f"runs:/{run_id}/{ARTIFACT_PATH}"


@contextmanager
def downloaded(uri: str, tracking_uri: str | None) -> Iterator[Path]:
    """A local copy of the export at the artifact URI ``uri`` (removed on exit; the loader reads it whole)."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    from autoq.tracking import default_tracking_uri, require_store
    from autoq.tracking.runs import no_download_bars

    store = tracking_uri or default_tracking_uri()
    if uri.startswith("runs:/"):
        require_store(store)  # MLflow would create an empty store and then miss the run
    with tempfile.TemporaryDirectory(prefix="autoq-load-") as tmp, no_download_bars():
        try:
            path = download_artifacts(artifact_uri=uri, dst_path=tmp, tracking_uri=store)
        except (MlflowException, OSError) as exc:
            raise AutoqError(f"cannot download {uri} from {store} ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                             f"an export logged with 'autoq export --log-to-run' is at runs:/<run id>/{ARTIFACT_PATH}, "
                             "in the store given as tracking_uri") from None
        yield Path(path)
