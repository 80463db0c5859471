"""Reading searches back from MLflow: find a search, its trial runs, and rebuild its result.

Used by resume (continue the parent run, drop half-logged children), by
``autoq runs`` / ``autoq pareto`` and by ``SearchResult.from_mlflow``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from autoq.errors import AutoqError
from autoq.tracking.mlflow_logger import STORAGE_TAG, STUDY_TAG, TRIAL_TAG, absolute_uri, run_storage, without_password

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from autoq.engine.result import SearchResult

SEARCH_FILTER = "tags.`autoq.kind` = 'search'"
_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def all_runs(client: MlflowClient, experiment_ids: list[str], filter_string: str = "", order_by: list[str] | None = None) -> list[Run]:
    """Every matching run, page by page."""
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string=filter_string, max_results=1000, order_by=order_by, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _quoted(value: str) -> str:
    """``value`` as a string of an MLflow filter: in single quotes, or double ones where it holds a single quote (a
    search named ``bob's`` ran and was listed, and ``autoq pareto`` refused its name). MLflow's filters escape neither."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise AutoqError(f"names with both a single and a double quote cannot be looked up in MLflow: {value!r}")


def find_search(client: MlflowClient, experiment_id: str, study_name: str, storage: str | None = None) -> Run | None:
    """The parent run of the search ``study_name`` (its study tag, or the study_name param of older runs).

    A study name is unique in its Optuna storage only: one experiment can hold two searches of one name (another
    ``--storage``, or a database deleted and made again). With ``storage``, the run whose ``optuna_storage`` param is
    that storage (a run without the param matches too); without, a name two runs hold is refused, listing them."""
    for key in (f"tags.`{STUDY_TAG}`", "params.study_name"):
        found = all_runs(client, [experiment_id], f"{SEARCH_FILTER} and {key} = {_quoted(study_name)}", order_by=["attributes.start_time ASC"])
        if storage is not None:
            found = [r for r in found if logged_with(r, storage)]
        if len(found) > 1:
            runs = "; ".join(f"{r.info.run_id} (storage {r.data.params.get('optuna_storage', '?')})" for r in found[:5])
            raise AutoqError(f"{len(found)} searches in this experiment are named {study_name!r}: {runs}; name one by its run id")
        if found:
            return found[0]
    return None


def logged_with(run: Run, storage: str) -> bool:
    """Whether the search ``run`` kept its trials in ``storage`` ("memory": none); a run that logged no storage (an early
    autoq's) matches any. An in-memory run matched every storage once, and a resume reopened it and deleted its trials."""
    if "optuna_storage" not in run.data.params and STORAGE_TAG not in run.data.tags:
        return True
    return (run_storage(run) or "memory") in (storage, without_password(storage))


def searches(client: MlflowClient, experiment_ids: list[str]) -> list[Run]:
    """Every search parent run in these experiments, newest first."""
    return all_runs(client, experiment_ids, SEARCH_FILTER, order_by=["attributes.start_time DESC"])


def trial_runs(client: MlflowClient, parent_id: str, experiment_id: str | None = None) -> list[Run]:
    """The child runs of a search (one per logged trial attempt), oldest first; ``experiment_id``, the parent's where the
    caller knows it, saves reading the parent run (a request on a tracking server)."""
    if experiment_id is None:
        experiment_id = client.get_run(parent_id).info.experiment_id
    return all_runs(client, [experiment_id], f"tags.mlflow.parentRunId = {_quoted(parent_id)}", order_by=["attributes.start_time ASC"])


def trial_number(run: Run) -> int | None:
    """The trial number a trial run's ``autoq.trial`` tag holds; None where it holds none (the tag edited or deleted)."""
    number = run.data.tags.get(TRIAL_TAG, "")
    return int(number) if number.isdigit() else None


def reconcile_children(client: MlflowClient, parent_id: str | None, finished: Iterable[int]) -> dict[int, str]:
    """Delete child runs of trials that did not finish and repeated logs of one trial;
    return trial number -> run id for the finished trials that are logged."""
    if parent_id is None:
        return {}
    finished = set(finished)
    by_trial: dict[int, list[Run]] = defaultdict(list)
    for run in trial_runs(client, parent_id):
        number = trial_number(run)
        if number is not None:
            by_trial[number].append(run)
    kept = {}
    for number, runs in by_trial.items():
        keep = runs[:1] if number in finished else []
        for run in runs[len(keep):]:
            client.delete_run(run.info.run_id)
        if keep:
            kept[number] = keep[0].info.run_id
    return kept


@contextmanager
def no_download_bars() -> Iterator[None]:
    """MLflow draws a progress bar per downloaded artifact; one per trial is noise."""
    old = os.environ.get(_BAR_ENV)
    os.environ[_BAR_ENV] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(_BAR_ENV, None)
        else:
            os.environ[_BAR_ENV] = old


def load_result(run_id: str, tracking_uri: str) -> SearchResult:
    """Rebuild a :class:`SearchResult` from a search's parent run and its finished child runs."""
    from autoq.budget import parse_budget
    from autoq.choice import Assignment
    from autoq.engine.result import Point, SearchResult, pareto_front
    from autoq.tracking.mlflow_logger import stored_run

    client, parent = stored_run(tracking_uri, run_id, f"`autoq runs --tracking-uri {tracking_uri}` lists the searches")
    params, metrics, tags = parent.data.params, parent.data.metrics, parent.data.tags
    if tags.get("autoq.kind") != "search":
        raise AutoqError(f"run {run_id!r} is not the parent run of an autoq search{_what_it_is(client, parent)}")
    points, last_end, untagged = [], 0, []
    with tempfile.TemporaryDirectory() as tmp, no_download_bars():
        for run in trial_runs(client, run_id):
            last_end = max(last_end, run.info.end_time or 0)
            m = run.data.metrics
            if run.info.status != "FINISHED" or "quality" not in m:
                continue
            number = trial_number(run)
            if number is None:  # edited or deleted in the MLflow UI (its one editable field): a traceback, for every reader
                untagged.append(run.info.run_id)
                continue
            latency_ms = m.get("latency_ms")
            try:
                text = artifact_text(client, run, "assignment.json", tmp)
            except MissingArtifact as exc:  # a finished trial logged it: MLflow raised with a traceback
                raise AutoqError(moved_artifacts(exc)) from None
            try:
                assignment = Assignment.from_json(text)
            except AutoqError as exc:  # the message named a layer that every trial has: which run's file was it?
                raise AutoqError(f"trial {number} (MLflow run {run.info.run_id}) has an assignment.json autoq cannot read "
                                 f"({exc}): the file was edited; put back what the search logged") from None
            points.append(Point(
                number, assignment, m["quality"],
                m["effective_bits"], int(m["size_bytes"]),
                run.data.tags.get("uniform") == "true", run.info.run_id,
                None if latency_ms is None else latency_ms * 1e3, run.data.tags.get("latency_source"),
            ))
    if untagged:
        from autoq.messages import warn

        warn(f"{len(untagged)} finished trial run(s) of search run {run_id} have no trial number in their {TRIAL_TAG!r} tag "
             f"(edited or deleted), and are left out: {', '.join(untagged[:5])}{' ...' if len(untagged) > 5 else ''}; set the "
             "tag back to the trial's number to count them")
    points.sort(key=lambda p: p.trial)
    end = parent.info.end_time or last_end or parent.info.start_time  # killed outright: its last trial's end
    return SearchResult(
        budget=parse_budget(params["budget"]), metric=params.get("metric", ""), reference_quality=metrics.get("reference_quality", float("nan")),
        points=tuple(points), frontier=tuple(pareto_front(points)), study_name=params.get("study_name", parent.info.run_name),
        storage=run_storage(parent), tracking_uri=absolute_uri(tracking_uri), parent_run_id=run_id,  # its commands work from any folder
        eval_seconds=metrics.get("eval_seconds", float("nan")), wall_seconds=metrics.get("wall_seconds", (end - parent.info.start_time) / 1000),
        n_infeasible=int(metrics.get("n_over_budget", 0)), n_failed=int(metrics.get("n_failed", 0)),
        sequential=params.get("sequential") == "True", calibration_digest=recorded(params, "calibration_digest"),
        n_calibration=int(params.get("n_calibration_batches", 0)),
        n_uniform=int(metrics["n_uniform_baselines"]) if "n_uniform_baselines" in metrics else None,
        model_hash=params.get("model_hash", ""), plugin_code=recorded_code(params), module=params.get("model_source") == "none",
    )


def recorded_code(params: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """A search's ``plugin_code`` param as (method, digest) pairs; none for a run logged before autoq recorded it."""
    try:
        code = json.loads(params.get("plugin_code") or "{}")
    except ValueError:
        return ()
    return tuple(sorted((str(k), str(v)) for k, v in code.items())) if isinstance(code, dict) else ()


def _what_it_is(client: MlflowClient, run: Run) -> str:
    """What a run that is no search's parent is, and what to pass instead: its search (a trial's), the searches nested
    in it (a pipeline's run), or nothing known."""
    tags = run.data.tags
    parent_id = tags.get("mlflow.parentRunId")
    if TRIAL_TAG in tags and parent_id:
        return f": it is trial {tags[TRIAL_TAG]} of a search; pass that search's parent run id, {parent_id}"
    nested = all_runs(client, [run.info.experiment_id], f"{SEARCH_FILTER} and tags.mlflow.parentRunId = {_quoted(run.info.run_id)}")
    if nested:
        return f": it holds nested search(es); pass one of their parent run ids: {', '.join(r.info.run_id for r in nested[:5])}"
    return ""


class MissingArtifact(AutoqError):
    """A run's artifact is not in the artifact store (never logged, the store's artifact folder moved or deleted, or a
    served store that did not answer); ``local``: looked for in a folder."""

    def __init__(self, message: str, local: bool) -> None:
        super().__init__(message)
        self.local = local


def artifact_text(client: MlflowClient, run: Run, name: str, tmp: str) -> str:
    """The text of ``run``'s artifact ``name``: read where it is in a local artifact store (MLflow's download is a copy,
    about 13 ms a file: 25 of the 34 s 'autoq pareto' took over 1,956 trials), else downloaded into ``tmp``.
    :class:`MissingArtifact` names where it was looked for."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.file_utils import local_file_uri_to_path
    from mlflow.utils.uri import is_local_uri

    uri = run.info.artifact_uri or ""
    where, local = f"{uri.rstrip('/')}/{name}", is_local_uri(uri)  # file:, a plain path, and Windows' C:\ and file:///C:/ alike
    if local:
        path = Path(local_file_uri_to_path(uri)) / name
        if path.is_file():
            return path.read_text(encoding="utf-8")
        where = str(path)
    try:
        return Path(client.download_artifacts(run.info.run_id, name, tmp)).read_text(encoding="utf-8")
    except (MlflowException, OSError) as exc:
        why = "" if local else f": {type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"
        raise MissingArtifact(f"MLflow run {run.info.run_id!r} has no artifact {name} (looked for {where}{why})", local) from None


def moved_artifacts(exc: MissingArtifact) -> str:
    """The error for an artifact that every run of its kind logs: the store's artifacts are not where MLflow records
    them (a local folder), or the artifact store did not serve them."""
    if not exc.local:
        return f"{exc}; every such run logs it: check that the tracking server serves its artifacts"
    return (f"{exc}; every such run logs it, so this store's artifact folder was moved or deleted: put it back where the "
            "store records it (a SQLite store's is the 'mlartifacts' folder beside the database, as it was when the search ran)")


def recorded(params: dict, name: str) -> str:
    """A search run's param that it logs as ``none`` when unset (``model_source``, ``calibration_digest``): ``""`` then,
    and for a run logged before the param existed."""
    value = params.get(name)
    return "" if value in (None, "none") else value


def resume_hint(run: Run, tracking_uri: str) -> str:
    """What to do about a search run that has not finished: wait for the live process that runs it, or resume it (a
    resume is refused while the search runs, so advising one then was wrong), with what the resume needs that the
    stored study does not hold: the Ray backend and its workers, the plug-ins, credentials. A model passed from
    Python gets the Python call: a command line cannot name it. Shared by ``autoq export`` and ``autoq pareto``."""
    import shlex

    from autoq.engine.sessions import running_pid, where
    from autoq.tracking.mlflow_logger import credentials_note, shown_uri

    study = run.data.tags.get(STUDY_TAG)
    params = run.data.params
    if params.get("optuna_storage") == "memory":  # --storage none: no study to resume, nor to tell it runs by
        return "it kept no Optuna storage (--storage none), so it cannot be resumed: wait for it if it still runs"
    storage = run_storage(run)
    pid = running_pid(storage, study) if run.info.status == "RUNNING" else None
    if pid is not None:
        return f"it is still running ({where(pid)}): wait for it to finish"
    elsewhere = " (unless it still runs on another machine)" if run.info.status == "RUNNING" else ""
    masked = ", with the storage's password in place of ***" if storage and "***" in storage else ""
    if params.get("model_source") == "none":  # a module passed from Python: the command would load the default model
        stored = f", storage={storage!r}" if storage else ""
        return (f"resume the search{elsewhere} from Python: the same autoq.search call with resume=True, study_name={study!r}{stored} "
                f"(and the same model and data{masked})")
    # whole, as a search's own interruption prints it: with a bare --resume NAME, another folder looked for ./optuna.db
    options = [f"--tracking-uri {shlex.quote(shown_uri(absolute_uri(tracking_uri)))}"]
    if storage:
        options.append(f"--storage {shlex.quote(storage)}")
    ray = ""
    if params.get("backend") == "ray":  # the stored settings do not hold how the trials ran: without these it goes on in-process
        options += ["--backend ray", f"--workers {params.get('workers', 1)}"]
        ray = "; add --address, --cpus-per-trial and --gpus-per-trial as the search had them"
    plugins = params.get("plugins", "none")
    if plugins != "none":
        options += [f"--plugin {shlex.quote(p)}" for p in shlex.split(plugins)]
    command = f"autoq search --resume {shlex.quote(study or 'STUDY_NAME')} {' '.join(options)}"
    return f"resume the search{elsewhere} ({command}{masked}{ray}){credentials_note(tracking_uri)}"
