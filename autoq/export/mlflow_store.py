"""An export kept in MLflow: an MLflow model logged from the run it came from, loaded back by its URI.

``autoq export --log-to-run`` logs the export as an MLflow 3 logged model named ``quantized_model``, whose source
run is the run it was exported from: ``runs:/<run id>/quantized_model`` and ``models:/<model id>`` address it from any
machine that reaches the tracking store, the run's page lists it, the experiment's Models tab shows it with the
metrics of its point (a trial's, also for a search run's export), and ``--registered-model-name`` (or the UI's
"Register model") puts a version of it in the Model Registry. It is a ``python_function`` model
(`autoq.export.pyfunc`): ``mlflow.pyfunc.load_model`` and ``mlflow models serve`` run it, and ``autoq.load`` takes
any of these URIs. Exports logged before (the two files as plain run artifacts under ``quantized_model/``) load as
they did.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoq.errors import AutoqError

ARTIFACT_PATH = "quantized_model"  # the logged model's name, so runs:/<run id>/quantized_model is its address
EXPORTED_TAG = "autoq.exported"  # on the run: the name of its logged export
MODEL_TYPE = "autoq-quantized"  # the logged model's model_type, to filter the experiment's models by
MODEL_TAGS = ("latency_source",)  # run tags the logged model carries too: where its latency_ms metric came from
ARTIFACT_KEY = "quantized_model"  # the export's folder among the MLflow model's artifacts (artifacts/quantized_model)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")  # runs:/, models:/, mlflow-artifacts:/, s3://, ... (not C:/)


@dataclass(frozen=True)
class LoggedExport:
    """Where an export logged to MLflow is: its logged model, the run's address of it, and a registered version."""

    model_id: str
    run_uri: str  # runs:/<run id>/quantized_model
    registered: str | None = None  # models:/<name>/<version>, when registered

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_id}"


@contextmanager
def using_store(tracking_uri: str) -> Iterator[None]:
    """MLflow's default tracking store is ``tracking_uri`` while inside. MLflow 3 looks logged models up in the
    process's default store, not the client's, in places (``runs:/<run>/<model name>`` resolved to the model, a
    registered version's ``models:/<id>`` source): without this, a store given as ``tracking_uri`` other than the
    default (``$MLFLOW_TRACKING_URI``, ``mlflow.set_tracking_uri``) was missed. Restores what was set before, the
    environment variable too: MLflow's helper unset it where it was the only setting, and the caller's later runs then
    went to ``./mlflow.db``."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    from autoq.tracking import absolute_uri

    env = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(absolute_uri(tracking_uri)):  # MLflow caches a store per URI string: see tracking_client
            yield
    finally:
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


def is_artifact_uri(location: str | Path) -> bool:
    """Whether ``location`` is an MLflow artifact URI rather than a local folder."""
    return isinstance(location, str) and bool(_SCHEME.match(location))


def check_loggable(tracking_uri: str, run_id: str) -> None:
    """Refuse, before the export quantizes, a log the store would refuse after it: a SQLite store or a local artifact
    folder that cannot be written (the export was written, and then a read-only store was a traceback of 199 lines
    that did not say so). A deleted run is refused before, as the point is read from it."""
    from mlflow.utils.file_utils import local_file_uri_to_path

    from autoq.files import nearest_folder
    from autoq.tracking import absolute_uri, stored_run
    from autoq.tracking.mlflow_logger import check_sqlite_writable

    client, run = stored_run(tracking_uri, run_id, "log the export to the run it was exported from")
    advice = "--log-to-run logs the export there: pass a store you can write to, or leave out --log-to-run"
    check_sqlite_writable(absolute_uri(tracking_uri), "MLflow tracking store", advice)
    location = client.get_experiment(run.info.experiment_id).artifact_location
    if is_artifact_uri(location) and not location.startswith("file:"):
        return  # a server's or a cloud bucket's: it says itself
    folder = nearest_folder(Path(local_file_uri_to_path(location)))
    if not os.access(folder, os.W_OK):
        raise AutoqError(f"the MLflow artifact folder {folder} of run {run_id!r} is not writable; {advice}")


def log_export(tracking_uri: str, run_id: str, out_dir: Path, registered_model_name: str | None = None,
               point_run_id: str | None = None) -> LoggedExport:
    """Log the export in ``out_dir`` (its config and weights, not whatever else the folder holds) as an MLflow model
    from ``run_id``, with the run's parameters and metrics, and tag the run; register a version of it under
    ``registered_model_name`` when given. ``point_run_id``, the trial run of the exported point where ``run_id`` is
    its search's run, adds that trial's parameters and metrics (quality, bits, size, latency): the model of a search
    run held only the search's totals, and the Models tab could not compare it with the trials' models. A failure
    says that the export itself is written, and where (a store that failed said only its own error)."""
    from autoq.errors import any_database_failed, database_reason

    try:
        return _log_export(tracking_uri, run_id, out_dir, registered_model_name, point_run_id)
    except AutoqError as exc:
        if str(out_dir) in str(exc):
            raise
        raise AutoqError(f"{exc} (the export itself is in {out_dir})") from exc
    except Exception as exc:
        if isinstance(exc, OSError):
            why = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
        elif any_database_failed(exc):
            why = database_reason(exc)
        else:
            raise
        raise AutoqError(f"the export is in {out_dir}, but logging it to MLflow run {run_id} failed ({why}); fix that and log it "
                         "again (autoq export --log-to-run)") from exc


def _log_export(tracking_uri: str, run_id: str, out_dir: Path, registered_model_name: str | None,
                point_run_id: str | None) -> LoggedExport:
    """:func:`log_export`'s work."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus

    from autoq.export.mlflow_model import copy_metrics, save_pyfunc
    from autoq.quiet import quiet_logs
    from autoq.tracking import stored_run

    client, run = stored_run(tracking_uri, run_id, "log the export to the run it was exported from")
    if run.info.lifecycle_stage == "deleted":  # MLflow takes the artifacts and then refuses the tag
        from autoq.tracking.mlflow_logger import restore_command

        raise AutoqError(f"MLflow run {run_id!r} is deleted and takes no more logs; the export is in {out_dir}. Restore the run "
                         f"({restore_command(tracking_uri, run_id)}) to log it there")
    if registered_model_name is not None:
        check_registered_name(registered_model_name)
    # the latency's source beside the latency_ms metric copied below: a roofline estimate was shown in the Models tab as
    # a plain number, beside measured ones
    point = client.get_run(point_run_id) if point_run_id and point_run_id != run_id else None
    described = [run] if point is None else [point, run]  # the run's own params and tags over its point's
    tags = {key: r.data.tags[key] for r in described for key in MODEL_TAGS if key in r.data.tags}
    params = {key: value for r in described for key, value in r.data.params.items()}
    logged = client.create_logged_model(run.info.experiment_id, name=ARTIFACT_PATH, source_run_id=run_id, tags=tags,
                                        params=params, model_type=MODEL_TYPE)
    try:
        with tempfile.TemporaryDirectory(prefix="autoq-mlflow-model-") as tmp, quiet_logs():  # not MLflow's INFO lines
            local = save_pyfunc(Path(out_dir), Path(tmp), logged, run_id)
            client.log_model_artifacts(logged.model_id, str(local))
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        for source in described:
            copy_metrics(client, source, logged.model_id)
    except BaseException:
        with suppress(Exception):  # marked FAILED in the Models tab where the store still answers; the cause is raised
            client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    client.set_tag(run_id, EXPORTED_TAG, ARTIFACT_PATH)
    registered = None
    if registered_model_name is not None:
        with using_store(tracking_uri):
            registered = _register(client, registered_model_name, logged.model_id, run_id)
    return LoggedExport(logged.model_id, f"runs:/{run_id}/{ARTIFACT_PATH}", registered)


def check_registered_name(name: str) -> None:
    """Refuse a name the Model Registry would refuse, or take and then not address: empty, with '/' or ':' (the
    separators of ``models:/<name>/<version>``, which MLflow 3.1 still took), or a path like '../x' (MLflow's rule)."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_model_name

    if not isinstance(name, str):  # name.strip() of 5 was an AttributeError
        raise AutoqError(f"registered_model_name must be a str (the Model Registry's name, e.g. 'digits-cnn-w4'), got "
                         f"{type(name).__name__} {name!r}")
    if not name.strip() or "/" in name or ":" in name:
        why = "it is empty" if not name.strip() else "a models:/<name>/<version> URI could not address it: no '/' or ':'"
        raise AutoqError(f"{name!r} cannot name a registered model ({why}); pass a name such as 'digits-cnn-w4'")
    try:
        _validate_model_name(name)
    except MlflowException as exc:
        raise AutoqError(f"{name!r} cannot name a registered model ({exc.message}); pass a name such as 'digits-cnn-w4'") from None


def _register(client: Any, name: str, model_id: str, run_id: str) -> str:
    """A new version of the registered model ``name`` (created if new) for the logged model, whose source is the
    model's ``models:/<id>`` as ``mlflow.register_model`` gives it; the version's ``models:/`` URI."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="autoq quantized models (autoq export --registered-model-name)")
    version = client.create_model_version(name, source=f"models:/{model_id}", run_id=run_id, model_id=model_id)
    _link_version(client, model_id, name, str(version.version))
    return f"models:/{name}/{version.version}"


def _link_version(client: Any, model_id: str, name: str, version: str) -> None:
    """List the version in the logged model's ``mlflow.modelVersions`` tag, from which the MLflow UI links a model to
    its registered versions: ``mlflow.register_model`` and a tracking server's handler add it, and
    ``create_model_version`` on a database store does not. An entry the server already added is not repeated."""
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    listed = json.loads(client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS) or "[]")
    if any((entry.get("name"), str(entry.get("version"))) == (name, version) for entry in listed):
        return
    client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps([*listed, {"name": name, "version": int(version)}])})


def export_folder(local: Path) -> Path:
    """The export in a downloaded MLflow location: the model's ``artifacts/quantized_model`` for an MLflow model
    (``MLmodel`` beside it), else the folder itself (an export logged as plain run artifacts)."""
    inner = local / "artifacts" / ARTIFACT_KEY
    return inner if (local / "MLmodel").is_file() and inner.is_dir() else local


@contextmanager
def downloaded(uri: str, tracking_uri: str | None) -> Iterator[Path]:
    """A local copy of the export at the artifact URI ``uri`` (removed on exit; the loader reads it whole)."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    from autoq.tracking import absolute_uri, default_tracking_uri, require_store
    from autoq.tracking.runs import no_download_bars

    store = tracking_uri or default_tracking_uri()
    if uri.startswith(("runs:/", "models:/")):
        require_store(store)  # MLflow would create an empty store and then miss the run
    with tempfile.TemporaryDirectory(prefix="autoq-load-") as tmp, no_download_bars(), using_store(store):
        try:
            path = download_artifacts(artifact_uri=uri, dst_path=tmp, tracking_uri=absolute_uri(store))
        except (MlflowException, OSError) as exc:
            raise AutoqError(f"cannot download {uri} from {store} ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                             f"an export logged with 'autoq export --log-to-run' is at runs:/<run id>/{ARTIFACT_PATH} "
                             "(or models:/<model id>, models:/<registered name>/<version>), in the store given as tracking_uri") from None
        yield export_folder(Path(path))


def staged(out_dir: Path, into: Path) -> Path:
    """The export's two files (not whatever else ``out_dir`` holds) copied into ``into/quantized_model``."""
    from autoq.export.config import CONFIG_NAME, WEIGHTS_NAME

    folder = into / ARTIFACT_KEY
    folder.mkdir()
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        try:
            os.link(out_dir / name, folder / name)  # the weights can be GBs, and MLflow copies them once more
        except OSError:  # another filesystem, or one without hard links
            shutil.copy2(out_dir / name, folder / name)
    return folder
