"""MLflow logging through `MlflowClient` with explicit run ids (never the global active run).

One parent run per search; one nested child run per trial with the per-layer
choices as ``assignment.json``; ``pareto=true`` tags on the frontier's trials;
the frontier as CSV, JSON and a PNG plot among the parent's artifacts.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from autoq.choice import Assignment
from autoq.engine.result import Point
from autoq.errors import AutoqError, database_reason
from autoq.files import folder_lock, nearest_folder
from autoq.interrupts import ForcedInterrupt, deferred_interrupts
from autoq.messages import note
from autoq.tracking.database_kind import check_database_kind
from autoq.tracking.frontier_plot import save_frontier_plot
from autoq.tracking.new_store import build_store
from autoq.tracking.run_notes import NOTE_TAG, point_note, search_note

if TYPE_CHECKING:  # MLflow is imported where it is used: `import autoq` does not import it
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # where MLFLOW_TRACKING_URI is not set
DEFAULT_EXPERIMENT = "autoq"  # where MLFLOW_EXPERIMENT_NAME is not set
STUDY_TAG = "autoq.study"  # on the parent run: the Optuna study name, which identifies a search for --resume
STORAGE_TAG = "autoq.optuna_storage"  # a search run's storage where a resume found it moved (see run_storage)
TRIAL_TAG = "autoq.trial"  # on each child run: the Optuna trial number


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, which MLflow's own clients honour (a pipeline's tracking server), else ``sqlite:///mlflow.db``.

    Read when a search or command starts, not at import."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def default_experiment(tracking_uri: str | None = None) -> str:
    """``$MLFLOW_EXPERIMENT_NAME``, else the experiment ``$MLFLOW_EXPERIMENT_ID`` names in ``tracking_uri`` (the
    default store when ``None``; what ``mlflow.set_experiment`` sets for the rest of a pipeline), as MLflow's fluent
    API reads them against the tracking URI in use; else ``autoq``. It was looked up in the default store whatever
    --tracking-uri said, and named ./mlflow.db in its note.

    An id the store does not hold (or no store yet: none is made to look) falls back to ``autoq``, with a note on
    stderr: the variable outlives the store it was set for."""
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME")
    experiment_id = os.environ.get("MLFLOW_EXPERIMENT_ID")
    if name or not experiment_id:
        return name or DEFAULT_EXPERIMENT
    uri = tracking_uri or default_tracking_uri()
    fallback = (f"$MLFLOW_EXPERIMENT_ID={experiment_id} names no experiment in {shown_uri(uri)}; using experiment "
                f"{DEFAULT_EXPERIMENT!r} (set --experiment, or unset the variable)")
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        note(fallback)
        return DEFAULT_EXPERIMENT
    try:
        return tracking_client(uri).get_experiment(experiment_id).name
    except Exception:  # noqa: BLE001 - an id of another store, or a server that does not answer
        note(fallback)
        return DEFAULT_EXPERIMENT


def run_storage(run: Run) -> str | None:
    """The Optuna storage of a search run: where a resume found it moved (its ``autoq.optuna_storage`` tag), else
    where it was when the search started (its ``optuna_storage`` param, which MLflow keeps unchanged); ``None`` for a
    search kept in memory."""
    storage = run.data.tags.get(STORAGE_TAG) or run.data.params.get("optuna_storage")
    return None if storage in (None, "memory") else storage


def sqlite_path(uri: str) -> Path | None:
    """The database file of a SQLite URL (``sqlite:///``, or with its driver named: ``sqlite+pysqlite:///``) as
    SQLAlchemy, which opens it for MLflow and Optuna, reads it (``%20`` a space), else ``None``."""
    if not uri.lower().startswith("sqlite"):
        return None
    from sqlalchemy.engine.url import make_url

    try:
        url = make_url(uri)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy reads: no file of ours to check
        return None
    path = url.database if url.get_backend_name() == "sqlite" else None
    return None if path in (None, "", ":memory:") else Path(path)  # an in-memory database has no file (made in the working folder)


def tracking_client(uri: str) -> MlflowClient:
    """An ``MlflowClient`` on ``uri``; a store MLflow refuses (MLflow 3 refuses a plain folder, its old file store) is an
    `AutoqError` that says which URIs work, not MLflow's traceback."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    from autoq.tracking.disk_client import DiskClient

    if uri.strip().lower() == "none":  # 'autoq runs --tracking-uri none': a command that reads the store
        raise AutoqError("this command reads searches from an MLflow store, and --tracking-uri none names none; pass the store "
                         f"the search logged to (default {DEFAULT_TRACKING_URI})")
    db = sqlite_path(uri)
    if db is None and uri.startswith("sqlite:"):  # SQLite in memory: the runs are gone when the command ends
        raise AutoqError(f"MLflow tracking URI {uri!r} names no database file (SQLite in memory, which keeps nothing); use one "
                         f"such as {DEFAULT_TRACKING_URI}")
    check_database_kind(db, uri, "mlflow")  # an optuna.db: MLflow migrated its tables into it, then failed
    # absolute: MLflow caches a store per URI string for the process, so a relative one kept naming the database of the
    # folder first opened from, after a chdir (a notebook's, a test's) too (2026-12-03). First: it refuses a path with '%'
    # or '?', which a new store's build beside it would have read as a query, leaving a stray database behind
    full = absolute_uri(uri)
    try:
        # a new SQLite store is built by migrations (seconds): a Ctrl-C among them would leave it half built for good, and
        # two searches starting together would both migrate it (one died on the other's tables). Every opening takes the
        # folder's lock, and only then asks whether the store is new: the file appears as soon as migrations begin, so a
        # second process that asked first opened a store still being built (2026-12-02)
        with folder_lock(db.parent) if db is not None else contextlib.nullcontext():
            new = db is not None and not db.exists()
            with deferred_interrupts() if new else contextlib.nullcontext():
                if new:  # built beside, then linked into place: a kill -9 among the migrations leaves no broken store
                    build_store(db)
                return DiskClient(tracking_uri=full)
    except MlflowException as exc:
        reason = str(exc.message).split(". ")[0]
        raise AutoqError(f"MLflow cannot use the tracking URI {uri!r}: {reason}; use a database such as "
                         f"{DEFAULT_TRACKING_URI} or a tracking server (http://HOST:5000)") from None
    except SQLAlchemyError as exc:
        what = f"the MLflow database {db}" if db is not None else f"the MLflow store {uri!r}"
        reason = database_reason(exc)
        advice = ("free space on its disk, or pass a --tracking-uri on another" if "full" in reason else
                  "a store whose creation was cut short stays broken: move it aside to start a new one")
        raise AutoqError(f"{what} cannot be opened ({reason}); {advice}") from None


def _check_not_moved(db: Path, artifact_location: str, does: str = "reads them and would write new ones", copies: bool = False) -> None:
    """Refuse a SQLite store autoq made that was moved to another folder, saying how to go on: MLflow records artifact
    locations as absolute paths, so it looks for the store's artifacts (frontier files, trials' assignments) where they
    were, and would write new ones there, bringing the old folder back with only those (2026-12-02). With ``copies``
    (before writing), also a copy whose original is still in place: it would write into the original's artifacts."""
    from mlflow.utils.file_utils import local_file_uri_to_path

    if not artifact_location.startswith("file:"):
        return
    recorded, here = Path(local_file_uri_to_path(artifact_location)), db.resolve().parent / "mlartifacts"
    if recorded.name != "mlartifacts" or recorded == here or not here.is_dir():
        return
    if not recorded.exists():
        raise AutoqError(f"this MLflow store was moved: its artifacts are in {here}, but MLflow records them at {recorded}, where it "
                         f"{does}; move the store back, or link the old place to the new first: "
                         f"mkdir -p {shlex.quote(str(recorded.parent))} && ln -sfn {shlex.quote(str(here))} {shlex.quote(str(recorded))}")
    if copies and recorded.resolve() != here.resolve():
        raise AutoqError(f"this MLflow store is a copy of the one beside {recorded}: MLflow records this experiment's artifacts there, "
                         "and would write this search's into the original's; log to the original store, or to a new experiment "
                         "here (--experiment NAME)")


def check_sqlite_writable(uri: str, what: str, advice: str = "pass a URL in a folder you can write to") -> None:
    """Refuse a ``sqlite:///`` database that cannot be made or written, naming why and ``advice`` (the option to change),
    before any work: SQLAlchemy would say only 'unable to open database file', mid-search. A missing folder is fine
    (the search makes it) when the nearest folder that exists above it is writable."""
    db = sqlite_path(uri)
    if db is None:
        return
    if db.exists():
        if not os.access(db, os.W_OK) or not os.access(db.parent, os.W_OK):  # SQLite writes a journal beside it
            raise AutoqError(f"{what} {uri}: {str(db)!r} or its folder is not writable; {advice}")
        return
    above = nearest_folder(db.parent)
    if not above.is_dir():
        raise AutoqError(f"{what} {uri}: {str(above)!r} is a file, not a folder; pass another URL")
    if not os.access(above, os.W_OK):
        raise AutoqError(f"{what} {uri}: the folder {str(above)!r} is not writable; {advice}")


# what a command that only reads a store advises: '--tracking-uri none' it refuses ("names no store")
READ_ADVICE = "start it (mlflow server), or pass the --tracking-uri your searches logged to"


def _check_server(uri: str, advice: str = "start it (mlflow server), or pass another --tracking-uri (none: no MLflow)") -> None:
    """A tracking server that does not answer fails in seconds, not after MLflow's minutes of retries."""
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=10)
    except requests.RequestException as exc:
        raise AutoqError(f"MLflow tracking server {shown_uri(uri)} does not answer ({type(exc).__name__}); {advice}") from None


def check_experiment(uri: str, name: str) -> None:
    """Refuse, before a search starts, an experiment name MLflow would refuse when its run is created: an empty one,
    or one that is deleted (MLflow keeps a deleted experiment's name, and logs nothing to it); and a store that
    cannot be written or a server that does not answer."""
    if not name.strip():
        raise AutoqError("the MLflow experiment name is empty; pass --experiment NAME (default: $MLFLOW_EXPERIMENT_NAME, else autoq)")
    check_sqlite_writable(uri, "MLflow tracking store", "pass a --tracking-uri (tracking_uri=) in a folder you can write to")
    _check_server(uri)
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        return  # a new store: the experiment will be new
    from mlflow.exceptions import MlflowException

    try:
        found = tracking_client(uri).get_experiment_by_name(name)
    except MlflowException as exc:  # a tracking server that answers with an error, after MLflow's own retries
        raise store_failed(uri, exc) from None
    if found is not None and found.lifecycle_stage == "deleted":
        raise AutoqError(f"MLflow experiment {name!r} is deleted in {uri}; restore it ({restore_command(uri, experiment_id=found.experiment_id)}) "
                         "or pass another --experiment")
    if found is not None and db is not None:
        _check_not_moved(db, found.artifact_location, copies=True)


def store_errors() -> tuple[type[Exception], ...]:
    """What a tracking store's failed request raises: MLflow's error (after its retries), or requests' for an artifact
    upload that a server (or a proxy in front of it) answered with an error status."""
    import requests
    from mlflow.exceptions import MlflowException

    return (MlflowException, requests.RequestException)


def store_failed(uri: str, exc: Exception, advice: str = "start it, or pass another --tracking-uri (none: no MLflow)") -> AutoqError:
    """The error for a tracking store that failed a request (after MLflow's own retries): what it says went wrong (its
    database's own error where there is one: `database_reason`), and ``advice``."""
    first = database_reason(exc)
    if any(word in first for word in ("UNAUTHENTICATED", "PERMISSION_DENIED", " 401", " 403")):  # not down: it wants a login
        advice = ("the server asks for a login: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (autoq prints and "
                  "stores tracking URLs without their user and password, so a resume or a printed command carries none)")
    return AutoqError(f"MLflow tracking store {shown_uri(uri)} failed a request ({first if len(first) <= 300 else first[:297] + '...'}); "
                      + advice)


def require_store(uri: str) -> None:
    """Refuse to read from a ``sqlite:///`` store whose file does not exist.

    MLflow would create an empty database there, so a command run in the wrong folder
    would leave a stray ``mlflow.db`` behind and then report a missing run or experiment. A tracking server that does not
    answer is refused too: reading one took MLflow's retries (about 4 minutes) and ended in a traceback, or in "no MLflow run"."""
    _check_server(uri, READ_ADVICE)
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        raise AutoqError(f"no MLflow store at {db} ({uri}); pass --tracking-uri of the store your searches logged to, "
                         "or run this in the folder where 'autoq search' ran")


def looks_like_run_id(text: str) -> bool:
    """Whether ``text`` has the form of an MLflow run id (32 hex digits): errors then tell a run id from a study name."""
    return re.fullmatch(r"[0-9a-f]{32}", text) is not None


def stored_run(tracking_uri: str, run_id: str, missing: str) -> tuple[MlflowClient, Run]:
    """``(client, run)`` for ``run_id`` in an existing store; ``missing`` ends the error when there is no such run."""
    from mlflow.exceptions import MlflowException

    require_store(tracking_uri)
    client = tracking_client(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):  # no such run; not a run id at all
            named = "" if looks_like_run_id(run_id) else (
                " (a run id is 32 hex digits, not a search's study name: `autoq runs` lists each search's parent run id)")
            raise AutoqError(f"no MLflow run {run_id!r} in {shown_uri(tracking_uri)}{named}; {missing}") from None
        raise store_failed(tracking_uri, exc, READ_ADVICE) from None
    db = sqlite_path(tracking_uri)
    if db is not None:  # a moved store: its artifacts are looked for where they were (a traceback, or "has no frontier.json")
        _check_not_moved(db, client.get_experiment(run.info.experiment_id).artifact_location, "reads them")
    return client, run


def outer_run(tracking_uri: str, run_id: str, experiment: str | None = None) -> Run:
    """The existing run ``run_id`` that a search or table is to be nested in (``mlflow_parent_run_id``). ``experiment``,
    one the user named (not the default), must be that run's: a nested run is logged in its parent's experiment, and
    the name given would have been ignored without a word."""
    client, run = stored_run(tracking_uri, run_id, "mlflow_parent_run_id (--mlflow-parent-run-id) must be a run in the same tracking_uri (--tracking-uri)")
    if run.info.lifecycle_stage == "deleted":
        raise AutoqError(f"MLflow run {run_id!r} is deleted, and the UI hides the runs nested in it; restore it "
                         f"({restore_command(tracking_uri, run_id)}) or nest in another run")
    if experiment is not None and experiment != (parents := client.get_experiment(run.info.experiment_id).name):
        raise AutoqError(f"experiment {experiment!r} (--experiment) is not the experiment of the parent MLflow run {run_id!r}, "
                         f"{parents!r}, and a nested run is logged in its parent's experiment; leave the experiment out, or give {parents!r}")
    return run


def absolute_uri(uri: str) -> str:
    """A SQLite URL with an absolute path (the same database from any working directory), its path as SQLAlchemy
    reads it (a ``%20`` written as the space it stands for) and written as is, as MLflow reads it; one that would have
    to be escaped is refused."""
    db = sqlite_path(uri)
    if db is None:
        return uri
    path = str(db.resolve())
    if "%" in path or "?" in path:  # no URL says this file to both: SQLAlchemy reads %XX and '?', MLflow's folder code does not
        raise AutoqError(f"the SQLite store {path} has '%' or '?' in its path: SQLAlchemy (which opens it) reads them as an escape "
                         "or a query, and MLflow makes the folder of the text as written; put the store in a folder without them")
    query = uri.partition("?")[2]  # '?timeout=30' and the like stay
    return f"{uri.split(':', 1)[0]}:///{path}" + (f"?{query}" if query else "")  # the driver stays too (sqlite+pysqlite)


def without_password(url: str) -> str:
    """A database URL as it may be shown in MLflow (``postgresql://user:***@host/db``): an experiment's readers must not
    read the Optuna storage's password. A URL without one, or that is not a database URL, is returned as it is."""
    from sqlalchemy.engine.url import make_url

    try:
        parsed = make_url(url)
    except Exception:  # 'memory', or not a URL at all
        return url
    return parsed.render_as_string(hide_password=True) if parsed.password else url


def restore_command(tracking_uri: str, run_id: str | None = None, experiment_id: str | None = None) -> str:
    """The command that restores a deleted run (or experiment) of the store ``tracking_uri``, which it names: run in
    another folder, a bare 'mlflow runs restore' found no such run, in a ./mlflow.db it made."""
    target = f"experiments restore --experiment-id {experiment_id}" if experiment_id is not None else f"runs restore --run-id {run_id}"
    return f"MLFLOW_TRACKING_URI={shlex.quote(shown_uri(absolute_uri(tracking_uri)))} mlflow {target}"


def shown_uri(uri: str) -> str:
    """A tracking URI as autoq prints or logs it: a server's without its user and password (MLflow takes them from
    ``MLFLOW_TRACKING_USERNAME`` and ``_PASSWORD``; left in a URL they override those, and a URL with ``***`` fails), a
    database URL's password hidden. A run's description is every reader's of the experiment."""
    from urllib.parse import urlsplit, urlunsplit

    if not uri.startswith(("http://", "https://")):
        return without_password(uri)
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname or ""
    return urlunsplit(parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")))


def credentials_note(uri: str | None) -> str:
    """What to do about credentials `shown_uri` left out ("" when there were none)."""
    if not uri or shown_uri(uri) == uri:
        return ""
    if not uri.startswith(("http://", "https://")):  # a database URL: MLflow has no variable for its password
        return " (the tracking URI's password is hidden: put yours in place of ***)"
    return " (the tracking URI's user and password are left out: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)"


class MlflowTracker:
    """Logs one search: ``start`` the parent, ``log_trial`` per trial, ``finish`` with the frontier.

    ``open`` finds (or creates) the experiment by name, or takes the experiment of ``nest_under``, an
    existing run the search's run is then nested in (a pipeline step's run: MLflow shows nesting
    within one experiment only). A Ray worker builds one on the search's experiment id and ``attach``es."""

    def __init__(self, tracking_uri: str, experiment_id: str, nest_under: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.client = tracking_client(tracking_uri)
        self.experiment_id = experiment_id
        self.nest_under = nest_under
        self.parent_id: str | None = None
        self._context: dict[str, str] | None = None
        self._step = 0  # of the parent's summary metrics: one a session, so a resume adds a point to each chart
        self.failure: BaseException | None = None  # what cut a trial's logging short: no more writes (finish) this session
        self.remote = tracking_uri.startswith(("http://", "https://"))  # a second Ctrl-C may cut its writes (not a local file's)
        self.reopened_status: str | None = None  # a resumed search's run: its status before this session set it RUNNING

    @classmethod
    def open(cls, tracking_uri: str, experiment: str, nest_under: str | None = None, resumed_run: str | None = None) -> MlflowTracker:
        """A tracker on the experiment named ``experiment``, created if new; with ``nest_under``, on that run's experiment;
        with ``resumed_run`` (the parent run a resumed search recorded), on that run's experiment whatever it is named now."""
        if nest_under is not None:
            return cls(tracking_uri, outer_run(tracking_uri, nest_under).info.experiment_id, nest_under)
        db = sqlite_path(tracking_uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        client = tracking_client(tracking_uri)
        renamed = _renamed_experiment(client, resumed_run, experiment) if resumed_run else None
        if renamed is not None:
            return cls(tracking_uri, renamed)
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            return cls(tracking_uri, found.experiment_id)
        location = (db.resolve().parent / "mlartifacts").as_uri() if db is not None else None
        from mlflow.exceptions import MlflowException

        try:
            return cls(tracking_uri, client.create_experiment(experiment, artifact_location=location))
        except MlflowException as exc:  # another search (an outer study's n_jobs=2, a second process) made it just now
            found = client.get_experiment_by_name(experiment) if exc.error_code == "RESOURCE_ALREADY_EXISTS" else None
            if found is None:
                raise
            return cls(tracking_uri, found.experiment_id)

    def start(self, run_name: str, params: Mapping[str, object], tags: Mapping[str, str]) -> str:
        with deferred_interrupts():  # a write cut in half would leave the SQLite store locked
            from mlflow.entities import Param

            nested = {"mlflow.parentRunId": self.nest_under} if self.nest_under else {}
            run = self.client.create_run(self.experiment_id, run_name=run_name, tags={**self.context_tags(), **tags, **nested})
            self.parent_id = run.info.run_id
            self.client.log_batch(self.parent_id, params=[Param(k, str(v)) for k, v in params.items()], synchronous=True)
            return self.parent_id

    def continue_search(self, study_name: str, storage: str | None, run_id: str | None = None) -> bool:
        """Reopen the parent run of the search ``study_name``: ``run_id``, the one its study recorded, where this store
        holds it; else the run found by its tag and its optuna_storage param (another search of that name in another
        storage is not it); ``False`` if there is none. By the run id, a store moved to another folder with its
        storage (whose recorded path then differs) is still found: a second parent run logged every trial again."""
        from autoq.tracking.runs import find_search

        parent = self._linked(run_id, study_name, storage) if run_id else None
        if parent is None:
            parent = find_search(self.client, self.experiment_id, study_name, storage or "memory")  # logged with or without its password
        if parent is None:
            return False
        self.parent_id = parent.info.run_id
        self.reopened_status = parent.info.status
        self.client.update_run(self.parent_id, status="RUNNING")
        self._step = int(parent.data.tags.get("autoq.resumed", "0")) + 1
        self.client.set_tag(self.parent_id, "autoq.resumed", str(self._step))
        return True

    def abandon(self) -> None:
        """The session failed before its first trial: a new run ends FAILED, a reopened one gets back the status it had
        (a finished search stays FINISHED; one left RUNNING by a crash, FAILED). It was left RUNNING, and 'autoq runs'
        showed a search running that no process ran. Quiet: the error that brought it here is the one to show."""
        if self.parent_id is None:
            return
        status = self.reopened_status if self.reopened_status not in (None, "RUNNING", "SCHEDULED") else "FAILED"
        with contextlib.suppress(Exception), deferred_interrupts():
            self.client.set_terminated(self.parent_id, status=status)

    def _linked(self, run_id: str, study_name: str, storage: str | None) -> Run | None:
        """The live search run ``run_id`` of ``study_name`` in this experiment, if it was logged with ``storage`` or with a
        SQLite storage that is gone (moved: here is where it went); else ``None``. A copy of the storage, its original
        still in place, is another search: it reopened the original's run and deleted trial runs the copy lacked."""
        from mlflow.exceptions import MlflowException

        from autoq.tracking.runs import logged_with

        try:
            run = self.client.get_run(run_id)
        except MlflowException:  # another store's run
            return None
        tags = run.data.tags
        ours = tags.get("autoq.kind") == "search" and tags.get(STUDY_TAG) == study_name
        if not ours or run.info.experiment_id != self.experiment_id or storage is None:
            return None
        if run.info.lifecycle_stage == "deleted":  # a new run would log every trial again, beside the old ones, still active
            raise AutoqError(f"the MLflow run of search {study_name!r}, {run_id!r}, is deleted; restore it "
                             f"({restore_command(self.tracking_uri, run_id)}, or in the UI) and resume again, to log the search where its trials are")
        if logged_with(run, storage):  # the rule find_search matches by
            return run
        moved = sqlite_path(run_storage(run) or "")
        if moved is None or moved.exists():
            return None
        self.client.set_tag(run.info.run_id, STORAGE_TAG, without_password(storage))  # where it is now: readers look here
        return run

    def attach(self, parent_id: str) -> MlflowTracker:
        """Log children of an existing parent run (what a Ray worker does), with the parent's user and source."""
        self.parent_id = parent_id
        tags = self.client.get_run(parent_id).data.tags
        self._context = {k: v for k, v in tags.items() if k in ("mlflow.user", "mlflow.source.name", "mlflow.source.type", "mlflow.source.git.commit")}
        return self

    def context_tags(self) -> dict[str, str]:
        """The tags ``mlflow.start_run`` would set from where it runs (``mlflow.user``, ``mlflow.source.name`` and
        ``.type``, a git commit): the UI's User and Source columns. ``create_run`` sets none of them itself."""
        if self._context is None:
            try:
                from mlflow.tracking.context.registry import resolve_tags

                self._context = {k: str(v) for k, v in resolve_tags().items() if k.startswith("mlflow.") and k != "mlflow.runName"}
            except Exception:  # an MLflow without the context registry: the columns stay empty, as before
                self._context = {}
        return self._context

    def log_trial(self, number: int, metrics: Mapping[str, float], tags: Mapping[str, str], assignment: Assignment, status: str = "FINISHED",
                  start_ms: int | None = None) -> str:
        """One trial's child run, logged once it is evaluated; ``start_ms`` (epoch ms: when its evaluation began) makes the
        run's Start Time and Duration in the MLflow UI the evaluation's, not the logging's. A store that fails (a
        tracking server gone, after MLflow's retries) or a forced Ctrl-C is recorded in ``failure``: the search stops."""
        try:
            return self._log_trial(number, metrics, tags, assignment, status, start_ms)
        except (*store_errors(), ForcedInterrupt) as exc:
            self.failure = exc
            raise

    def _log_trial(self, number: int, metrics: Mapping[str, float], tags: Mapping[str, str], assignment: Assignment, status: str,
                   start_ms: int | None) -> str:
        with deferred_interrupts(forceable=self.remote):  # a write cut in half would leave the SQLite store locked
            from mlflow.entities import Metric, Param

            assert self.parent_id is not None, "start() first"
            run = self.client.create_run(
                self.experiment_id,
                start_time=start_ms,
                run_name=f"trial-{number}",
                # off the frontier until finish() says otherwise (a failed trial for good): finish then writes the frontier's
                # few tags, not one per trial (a call each on a tracking server)
                tags={**self.context_tags(), "mlflow.parentRunId": self.parent_id, TRIAL_TAG: str(number), "pareto": "false", **tags},
            )
            run_id = run.info.run_id
            try:
                now = int(time.time() * 1000)
                self.client.log_batch(
                    run_id,
                    metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                    params=[Param("trial", str(number)), Param("choices", assignment.summary()[:6000])],
                    synchronous=True,
                )
                self.client.log_text(run_id, assignment.to_json(), "assignment.json")
                self.client.set_terminated(run_id, status=status)
            except store_errors():  # the store failed: a delete would wait through its retries again (a resume deletes the run)
                raise
            except Exception:
                # a half-logged run would stay RUNNING beside the one the caller logs instead (a Ray worker's driver)
                with contextlib.suppress(Exception):
                    self.client.delete_run(run_id)
                raise
            return run_id

    def finish(
        self, points: Sequence[Point], frontier: Sequence[Point], metrics: Mapping[str, float], plot_budget: float | None, status: str = "FINISHED",
        latency_budget_ms: float | None = None, stopping: bool = False,
    ) -> None:
        """Tag the frontier, write its files and end the parent run. ``stopping``: the search is ending on Ctrl-C, so on a
        tracking server the next one stops these writes (`ForcedInterrupt`), which a resume then makes again."""
        with deferred_interrupts(forceable=self.remote, pressed=int(stopping)):  # a write cut in half would leave the SQLite store locked
            from mlflow.entities import Metric

            from autoq.tracking.runs import trial_runs

            assert self.parent_id is not None, "start() first"
            on_front = {p.run_id for p in frontier}
            params = self.client.get_run(self.parent_id).data.params
            plugins = params.get("plugins", "")  # as the search logged them
            module = params.get("model_source") == "none"  # a module passed from Python: export is a Python call
            tagged = {run.info.run_id: run.data.tags.get("pareto") for run in trial_runs(self.client, self.parent_id, self.experiment_id)}
            for p in points:
                if p.run_id:
                    pareto = "true" if p.run_id in on_front else "false"
                    if tagged.get(p.run_id) != pareto:  # changed since the trial was logged, or since a session before
                        self.client.set_tag(p.run_id, "pareto", pareto)
                    if p.run_id in on_front:  # the UI's description of the run: how to export this point
                        self.client.set_tag(p.run_id, NOTE_TAG, point_note(p, self.tracking_uri, plugins, module))
            self.client.set_tag(self.parent_id, NOTE_TAG, search_note(frontier, self.tracking_uri, plugins, module, self.parent_id))
            now = int(time.time() * 1000)
            self.client.log_batch(self.parent_id, metrics=[Metric(k, float(v), now, self._step) for k, v in metrics.items()], synchronous=True)
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp)
                write_frontier_csv(frontier, out / "frontier.csv")
                (out / "frontier.json").write_text(json.dumps([{**p.row(), "assignment": p.assignment.to_dict()} for p in frontier], indent=1), encoding="utf-8")
                save_frontier_plot(points, frontier, out / "frontier.png", plot_budget, latency_budget_ms)
                for name in ("frontier.csv", "frontier.json", "frontier.png"):
                    self.client.log_artifact(self.parent_id, str(out / name))
            self.client.set_terminated(self.parent_id, status=status)


def _renamed_experiment(client: MlflowClient, run_id: str, experiment: str) -> str | None:
    """The id of the experiment that holds run ``run_id`` (a resumed search's parent), where it is no longer named
    ``experiment`` (renamed in the UI since: a resume made a new experiment of the old name, and a second parent run
    there that logged every kept trial again); ``None`` where it is so named, or the run is gone. That experiment
    deleted is refused, as the one of the search's name is (`check_experiment`); the run deleted, by `_linked`."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
        held = client.get_experiment(run.info.experiment_id)
    except MlflowException:
        return None
    if held.name == experiment:
        return None
    uri = client.tracking_uri
    if held.lifecycle_stage == "deleted":
        raise AutoqError(f"MLflow experiment {held.name!r} (this search's {experiment!r}, renamed) is deleted in {shown_uri(uri)}; "
                         f"restore it ({restore_command(uri, experiment_id=held.experiment_id)}) and resume again, to log the "
                         "search where its trials are")
    note(f"the MLflow experiment {experiment!r} of this search is named {held.name!r} now (renamed); it logs there")
    return held.experiment_id


def write_frontier_csv(points: Sequence[Point], path: Path) -> None:
    import csv

    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(Point.row(points[0]).keys()) if points else ["trial"])
        writer.writeheader()
        for p in points:
            writer.writerow(p.row())
