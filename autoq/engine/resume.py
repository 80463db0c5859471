"""Resume an interrupted search from its Optuna storage and MLflow parent run.

A search is identified by its study name in its storage. Resuming keeps every
finished trial (COMPLETE, or FAIL with an evaluation error), marks trials left
RUNNING by a dead process as failed and enqueues their parameters again, and
deletes MLflow child runs of trials that were logged but never told to Optuna
(a kill between the two), so no trial appears twice. The seeds of the original
search are still enqueued (WAITING) in the storage and are not added again.
A study that a live process on this machine still runs is not resumed (the study's ``autoq.session``
attribute names the host and process); on another host that cannot be told, and is assumed not.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import optuna

from autoq.budget import parse_budget
from autoq.builtin.workload import Workload
from autoq.choice import Assignment
from autoq.cost import CostModel
from autoq.engine.options import label
from autoq.engine.ray_session import cluster_address, ray_options_set
from autoq.engine.result import Point
from autoq.engine.seeding import portable_seed_from
from autoq.engine.sessions import SESSION_ATTR, claim, dead_here, is_ours, live_owner, release, storage_lock, where
from autoq.engine.settings_shape import checked_settings
from autoq.engine.strategies import strategy_uses_seed
from autoq.engine.strategy import CONSTRAINT_ATTR, RETRY_ATTR, SOURCE_ATTR, sampler_name
from autoq.engine.study_names import SETTINGS_ATTR
from autoq.engine.trials import make_point
from autoq.errors import AutoqError
from autoq.latency.resolve import is_table_path, portable_device
from autoq.messages import warn
from autoq.plugins import portable
from autoq.ptq import changed_code
from autoq.search_spaces import portable_space
from autoq.space import SearchSpace
from autoq.tracking import MlflowTracker, absolute_uri, sqlite_path
from autoq.tracking.database_kind import check_database_kind
from autoq.tracking.mlflow_logger import check_sqlite_writable, looks_like_run_id, shown_uri

if TYPE_CHECKING:
    from autoq.engine.runner import SearchConfig

BACKENDS = ("optuna", "ray")
RAY_UNIT = 1e-4  # Ray's smallest share of a CPU or GPU: a trial asking for less failed late, after the study was written
INTERRUPTED_ATTR = "autoq.interrupted"
RUN_ATTR = "autoq.mlflow_run_id"  # study user attribute: the search's MLflow parent run (a resume reopens it)
WALL_ATTR = "autoq.wall_seconds"  # study user attribute: wall time of the sessions so far (a resume adds its own)
_MUST_MATCH = ("model", "budget", "space", "sampler", "strategy", "seed_from", "seed", "skip", "pins", "device", "batch", "sequential",
               "max_uniform_seeds", "n_fill_seeds", "data_fingerprint", "experiment", "plugin_code", "space_options",
               "latency_prices")  # another experiment would get a second parent run
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)


def check_execution(config: SearchConfig) -> None:
    """Validate the backend, worker, retry and resume options (before anything is loaded; their kinds and least values are
    checked first, by `autoq.engine.options`)."""
    if config.backend not in BACKENDS:
        raise AutoqError(f"unknown backend {config.backend!r}; choose one of {', '.join(BACKENDS)}")
    if config.workers > 1 and config.backend != "ray":
        raise AutoqError(f"{config.workers} workers need the ray backend (--backend ray); the optuna backend evaluates one trial at a time")
    ray_only = [f"--{name.replace('_', '-')} ({name}=)" for name in ray_options_set(config)]
    if ray_only and config.backend != "ray":
        raise AutoqError(f"{', '.join(ray_only)} set how Ray runs trials and the optuna backend would ignore them: add --backend ray "
                         "(backend='ray'), or leave them out")
    cpus, gpus = config.cpus_per_trial, config.gpus_per_trial
    if not (math.isfinite(cpus) and cpus >= RAY_UNIT) or not (math.isfinite(gpus) and (gpus == 0 or gpus >= RAY_UNIT)):
        raise AutoqError(f"{label('cpus_per_trial')} must be at least {RAY_UNIT:g} and {label('gpus_per_trial')} "
                         f"0 or at least {RAY_UNIT:g} (Ray's smallest share of a resource), got {cpus} and {gpus}")
    local = config.backend == "ray" and not cluster_address(config)
    if local and config.cpus_per_trial > (os.cpu_count() or 1):
        raise AutoqError(f"{label('cpus_per_trial')} {config.cpus_per_trial:g} is more than this machine's {os.cpu_count()} "
                         "CPUs, and the local Ray autoq starts runs here; lower it, or pass the --address of a Ray cluster with such nodes")
    if config.gpus_per_trial and local:
        import torch

        if not torch.cuda.is_available():
            raise AutoqError(f"{label('gpus_per_trial')} {config.gpus_per_trial} needs a GPU and this machine has none; use 0, "
                             "or the --address of a Ray cluster with GPUs")
    if config.storage not in (None, "auto"):
        _check_storage_url(config.storage)
    if config.storage is not None:
        check_sqlite_writable(config.resolved_storage(), *_storage_words(config))
        check_database_kind(sqlite_path(config.resolved_storage()), config.resolved_storage(), "optuna")
    if config.resume and (not config.study_name or config.storage is None):
        raise AutoqError("resume needs the study name of the search and its persistent storage (--resume NAME, and --storage if it was not "
                         "the default; study_name= and storage= in Python, with resume=True)")


def _storage_words(config: SearchConfig) -> tuple[str, str]:
    """How an Optuna storage that cannot be written is named, and the option that moves it: the automatic one follows
    the MLflow store (a --storage alone then met the same refusal for the store), or sits in the working folder."""
    if config.storage != "auto":
        return "Optuna storage", "pass a --storage (storage=) URL in a folder you can write to"
    if config.tracking_uri and sqlite_path(config.tracking_uri) is not None:
        return ("Optuna storage (auto: beside the MLflow store)",
                "pass a --tracking-uri (tracking_uri=) in a folder you can write to: the Optuna storage follows it")
    return ("Optuna storage (auto: in the working folder)",
            "run from a folder you can write to, or pass a --storage (storage=) URL in one")


def _check_storage_url(storage: str) -> None:
    """An Optuna storage must be a database URL (Optuna's RDB storage); say so before SQLAlchemy would, mid-search."""
    from sqlalchemy.engine.url import make_url
    from sqlalchemy.exc import ArgumentError

    if not isinstance(storage, str):
        raise AutoqError(f"storage must be a database URL (a str: Optuna's RDB storage, which a resume and result.study() reopen), "
                         f"'auto' or None; got an object of type {type(storage).__name__}")
    try:
        url = make_url(storage)
    except ArgumentError:
        # a path: a SQLite file named without its scheme, or an Optuna journal file (which optuna's own CLI takes by path)
        as_path = (f"; a SQLite file is named sqlite:///{storage} (Optuna's journal files are not taken: a search and its "
                   "resumes reopen the study through Optuna's RDB storage)") if "://" not in storage else ""
        raise AutoqError(f"Optuna storage {storage!r} is not a database URL; use one such as sqlite:///optuna.db or "
                         f"postgresql://user@host/db, 'auto' (optuna.db beside the MLflow store), or none (in memory){as_path}") from None
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):  # each connection its own empty database
        raise AutoqError(f"Optuna storage {storage!r} names no database file (SQLite in memory, which keeps nothing between "
                         "connections); use a file such as sqlite:///optuna.db, or none for a search held in memory")
    try:
        dialect = url.get_dialect()
    except Exception as exc:  # an unknown database kind
        raise AutoqError(f"Optuna storage {storage!r}: SQLAlchemy cannot open {url.drivername!r} databases ({exc}); "
                         "use sqlite:///optuna.db, or install the database's driver") from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:  # a known kind whose driver is not installed (psycopg2 for postgresql://, ...)
        raise AutoqError(f"Optuna storage {storage!r}: the {url.drivername!r} driver is not installed ({exc}); install it "
                         f"(pip install {exc.name or 'its driver'}), or use sqlite:///optuna.db") from None


def stored_settings(workload: Workload, config: SearchConfig, derived: dict[str, Any] | None = None) -> dict[str, Any]:
    """What defines a search: stored with the study, compared on resume. ``derived``, once the search space is built:
    ``plugin_code`` (the plug-in PTQ methods' digests, `autoq.ptq.plugin_code`), ``space_options`` (the space's
    `digest`) and ``latency_prices`` (its `latency_digest`); a resume refuses an edited method, space or latency table
    by them. A space or latency table given as a file is
    stored by its absolute path (`portable_space`, `portable_device`), and so is a sensitivity table file
    (`portable_seed_from`): the resume command a search prints works from any folder."""
    return {**(derived or {}),
        "model": workload.name, "model_source": workload.source or None, "budget": parse_budget(config.budget).text,
        "space": portable_space(config.space), "sampler": sampler_name(config.sampler), "seed": config.seed, "skip": list(config.skip),
        "pins": [list(p) for p in config.pins], "device": portable_device(config.device), "batch": config.batch, "n_trials": config.n_trials,
        "strategy": config.strategy, "seed_from": portable_seed_from(config.seed_from), "sequential": config.sequential, "max_uniform_seeds": config.max_uniform_seeds,
        "n_fill_seeds": config.n_fill_seeds,  # a resume to more trials enqueues the seeds a fresh search of as many would
        "max_retries": config.max_retries,  # not compared: a resume may change it, but one from the command line keeps it unless told
        "tracking_uri": _without_login(absolute_uri(config.tracking_uri)) if config.tracking_uri else None, "experiment": config.experiment,
        "mlflow_parent_run_id": config.mlflow_parent_run_id,
        "data_fingerprint": workload.data_fingerprint,  # other data would score the new trials otherwise than the stored
        "plugins": [portable(p) for p in config.plugins],  # a resume from the command line must load them again
    }


def check_seed_table(storage: str | None, study_name: str, digest: str, path: str, tracked: bool) -> None:
    """Refuse to resume a search whose strategy solves on a table file (ilp, greedy) with another table than the one its
    first session read: the file was read again, and a table overwritten since seeded the new trials from other scores."""
    if seed_table_changed(storage, study_name, digest):
        kept = " (the search's MLflow run holds it as seed_table.json)" if tracked else ""
        raise AutoqError(f"cannot resume {study_name!r}: the sensitivity table {path} is not the one its search was seeded from "
                         f"(other scores: overwritten since); put that table back there{kept}, or start a new search (another --study-name)")


def seed_table_changed(storage: str | None, study_name: str, digest: str) -> bool:
    """Whether the stored search's first session recorded reading a sensitivity table of other scores than ``digest``
    (its `SensitivityTable.scores_digest`): the file was overwritten since."""
    stored = (_settings(load_study(storage, study_name), study_name) or {}).get("seed_table")
    return isinstance(stored, str) and stored != digest


def load_study(storage: str | None, study_name: str) -> optuna.Study:
    """The stored study, or an AutoqError saying what is missing (Optuna would make an empty SQLite file)."""
    if storage is None:
        raise AutoqError("an in-memory study cannot be resumed; give a storage URL")
    db = sqlite_path(storage)
    check_database_kind(db, storage, "optuna")
    if db is not None and not db.exists():  # Optuna would create an empty database there
        raise AutoqError(f"no Optuna storage at {db} ({storage}) to load {study_name!r} from; pass the --storage the search used, "
                         "or run this in the folder where it ran")
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        hint = ("; that looks like an MLflow run id: a resume takes the search's study name, which `autoq runs` lists beside it"
                if looks_like_run_id(study_name) else "; `autoq runs` lists the searches in a tracking store")
        raise AutoqError(f"no search named {study_name!r} in {storage}{hint}") from None


def study_exists(storage: str, study_name: str) -> bool:
    """Whether ``storage`` holds a study ``study_name``, without making a database where there is none; ``True`` where
    the storage cannot be read, so that :func:`load_study` says what is wrong with it."""
    db = sqlite_path(storage)
    if db is not None and not db.exists():
        return False
    try:
        return study_name in optuna.get_all_study_names(storage)
    except Exception:  # noqa: BLE001 - a storage of another kind, locked, unreachable: load_study's error says which
        return True


def remember_settings(storage: str | None, study_name: str, settings: dict[str, Any]) -> None:
    if storage is not None:
        study = load_study(storage, study_name)
        study.set_user_attr(SETTINGS_ATTR, settings)
        claim(study)


def remember_run_id(storage: str | None, study_name: str, run_id: str) -> None:
    """Record the search's MLflow parent run in its study: a resume reopens that run wherever the store has moved."""
    if storage is not None:
        load_study(storage, study_name).set_user_attr(RUN_ATTR, run_id)


def read_run_id(storage: str | None, study_name: str) -> str | None:
    """The MLflow parent run the search recorded (``None`` for one stored before it did, or in memory)."""
    if storage is None:
        return None
    run_id = load_study(storage, study_name).user_attrs.get(RUN_ATTR)
    return run_id if isinstance(run_id, str) else None


def _without_login(uri: str) -> str:
    """A tracking URI as a study stores it: a server's without its user and password, since a study's attributes are
    every reader's of the storage (optuna-dashboard shows them), and a resume logs with ``MLFLOW_TRACKING_USERNAME`` and
    ``_PASSWORD`` as README says. A database URL is kept whole: MLflow has no other way to its password."""
    return shown_uri(uri) if uri.startswith(("http://", "https://")) else uri


def remember_counts(storage: str, study_name: str, n_trials: int, max_retries: int, n_done: int, tracking_uri: str | None = None) -> None:
    """A resume that asks for another ``n_trials`` or ``max_retries`` stores them: the next resume (the command an
    interruption prints, which reads the stored settings) then goes on with them, not the first session's. One that
    asks for no more trials than the ``n_done`` it found (complete, or failed for good) evaluates nothing and keeps
    the target: a later resume that left --n-trials out went on to that lower count, the search's own lost. A
    ``tracking_uri`` (the store this session logs to, holding the search's run: a copy, or the store moved) is stored
    too, so that the next resume logs there rather than to the old place."""
    study = load_study(storage, study_name)
    settings = _settings(study, study_name) or {}
    asked: dict[str, Any] = {"max_retries": max_retries}
    if n_trials > n_done:
        asked["n_trials"] = n_trials
    if tracking_uri is not None:
        asked["tracking_uri"] = _without_login(tracking_uri)
    if settings and any(settings.get(key) != value for key, value in asked.items()):
        study.set_user_attr(SETTINGS_ATTR, {**settings, **asked})


def _check_not_running(study: optuna.Study, study_name: str) -> None:
    """Refuse to resume a search that a live process on this machine still runs: the resume would fail its running
    trial under it (and that process would then die, telling a trial already finished). On another host it cannot be
    told; the process that last ran it is named in the study's ``autoq.session`` attribute."""
    pid = live_owner(study)
    if pid is not None and SETTINGS_ATTR not in study.user_attrs:  # stopped now, its study is removed: nothing to resume then
        raise AutoqError(f"search {study_name!r} is still setting up ({where(pid)}), before its first trial; "
                         "let it start, or stop it and start it again")
    if pid is not None:
        stop = "" if pid == os.getpid() else f", or stop it (Ctrl-C there, or kill {pid})"
        raise AutoqError(f"search {study_name!r} is still running ({where(pid)}); let it finish{stop}, then resume")


def add_wall_seconds(storage: str | None, study_name: str, seconds: float) -> float:
    """The search's wall time over all its sessions: ``seconds`` of this one plus those stored, stored again."""
    if storage is None:
        return seconds
    from autoq.interrupts import deferred_interrupts

    with deferred_interrupts():  # a write cut in half would leave the SQLite file locked
        try:
            study = load_study(storage, study_name)
        except AutoqError:  # deleted under the search (by hand): this session's time, and the search's own error goes on
            return seconds
        stored = study.user_attrs.get(WALL_ATTR, 0.0)
        # set to another type by a tool or by hand: the resume crashed after its trials, its run left RUNNING, every time
        known = isinstance(stored, (int, float)) and not isinstance(stored, bool) and math.isfinite(stored)
        total = (float(stored) if known else 0.0) + seconds
        study.set_user_attr(WALL_ATTR, total)
    return total


def end_session(storage: str | None, study_name: str) -> None:
    """Mark this process's session of the search as ended, once its results are stored (`autoq.engine.sessions.release`)."""
    if storage is None:
        return
    from autoq.interrupts import deferred_interrupts

    with deferred_interrupts():
        try:
            study = load_study(storage, study_name)
        except AutoqError:
            return
        if is_ours(study):  # not a session another process has taken over since
            release(study)


def _settings(study: optuna.Study, study_name: str) -> dict[str, Any] | None:
    """The study's stored settings (``None`` before it stored any), checked for the shape autoq stores them in."""
    stored = study.user_attrs.get(SETTINGS_ATTR)
    return None if stored is None else checked_settings(stored, study_name)


def read_settings(storage: str, study_name: str) -> dict[str, Any]:
    """The settings a stored search was started with (``{}`` for a study autoq did not start)."""
    return _settings(load_study(storage, study_name), study_name) or {}


def started_settings(storage: str, study_name: str) -> dict[str, Any]:
    """The settings of a search that can be resumed, or the error saying why it cannot (one killed while it set up, one
    autoq did not start): the command line reads them before it loads any model, and loaded the default one first."""
    study = load_study(storage, study_name)
    stored = _settings(study, study_name)
    if stored is None:
        _check_not_running(study, study_name)
        raise AutoqError(_never_started(study, study_name, storage))
    return stored


def kept_tracking_uri(stored: Mapping[str, Any]) -> tuple[bool, str | None]:
    """(whether a resume that names no tracking URI takes the stored one, that URI): it logs where the search logged, or
    to no MLflow as it ran (it opened the working folder's store: a second parent run). Not a SQLite store gone from its
    place (the search's folder moved): the one given by default, the working folder's, then says it moved."""
    if "tracking_uri" not in stored:
        return False, None
    uri = stored["tracking_uri"]
    db = sqlite_path(uri) if uri else None
    return db is None or db.exists(), uri


def _same(key: str, stored: Any, given: Any) -> bool:
    """Whether a stored setting and the given one mean the same: a budget by its kind and value ('4.5', '4.5 bits'
    and '4.5bits' are one budget), skips and pins in any order (pins that match one layer must agree, so none comes
    first), everything else as stored."""
    if key in ("skip", "pins") and isinstance(stored, list) and isinstance(given, list):
        def as_set(items: list[Any]) -> set[Any]:
            return {tuple(i) if isinstance(i, list) else i for i in items}

        return as_set(stored) == as_set(given)  # a script that built its pins from a dict in another order was refused
    if key == "budget" and isinstance(stored, str) and isinstance(given, str):
        try:
            a, b = parse_budget(stored), parse_budget(given)
        except AutoqError:
            return stored == given
        return (a.kind, a.value) == (b.kind, b.value)
    if key == "space" and isinstance(stored, str) and isinstance(given, str):
        return portable_space(stored) == portable_space(given)  # a relative path of the folder it ran in
    if key == "plugin_code" and isinstance(stored, dict) and isinstance(given, dict):  # as an export compares them
        return set(stored) == set(given) and not changed_code(stored, given)  # an older autoq's digests too
    if key == "seed_from":  # None and "none" (the command line's word for it) are one: no seeding table
        def seeding(value: Any) -> Any:
            none = value is None or (isinstance(value, str) and value.lower() == "none")
            return None if none else portable_seed_from(value) if isinstance(value, str) else value

        return seeding(stored) == seeding(given)  # a table file stored by a relative path, before
    if key == "device" and isinstance(stored, str) and isinstance(given, str):
        a, b = portable_device(stored), portable_device(given)  # a table file by its absolute path; a preset in any case
        return a == b or (not is_table_path(stored) and not is_table_path(given) and a.lower() == b.lower())
    if key == "data_fingerprint" and stored == "" and str(given).startswith("weights "):
        return True  # a search of a Python model stored before its weights and data were fingerprinted: nothing to compare
    return stored == given


def check_resumable(storage: str | None, study_name: str, settings: dict[str, Any], space: SearchSpace) -> int:
    """Check that ``settings`` match the stored search and that its trials fit ``space``, then reopen it;
    returns how many trials were interrupted. Everything is checked before the study or its MLflow run changes."""
    with storage_lock(storage):  # from reading who runs it to writing this process there: one resume at a time
        study = load_study(storage, study_name)
        _check_not_running(study, study_name)
        stored = _settings(study, study_name)
        if stored is None:
            raise AutoqError(_never_started(study, study_name, storage))
        _check_stored(study, study_name, settings, stored, space)
        claim(study)
    return _reopen(study, _options_by_name(space))


def _never_started(study: optuna.Study, study_name: str, storage: str | None) -> str:
    """Why a study without stored settings cannot be resumed: autoq did not start it, or its search was killed while it
    set up (the sensitivity table, the seeds), before it stored them and before its first trial."""
    session = study.user_attrs.get(SESSION_ATTR)
    if not isinstance(session, dict):
        return f"study {study_name!r} in {storage} was not started by autoq search; it cannot be resumed"
    if dead_here(study):
        return (f"search {study_name!r} has nothing to resume: its process was killed while it set up, before its first trial; "
                "start it again with the same command (its empty study is taken over)")
    return (f"search {study_name!r} has stored no settings yet: it is being set up on {session.get('host')} (process "
            f"{session.get('pid')}), or was stopped there before its first trial; then start it again with another --study-name, "
            f"or delete the empty study (optuna delete-study --study-name {study_name} --storage {storage})")


def check_same_settings(storage: str | None, study_name: str, settings: dict[str, Any], tracking_uri: str | None = None) -> None:
    """Refuse other settings than the stored search's before the search problem is built from them: a changed pin or space
    was reported as an infeasible budget, which the stored search was not; and a search still running, before the model
    is measured (minutes for an LLM, to be told). (`check_resumable` checks both again, under the lock.) ``tracking_uri``:
    the store as given, a server's login included, which is asked whether it holds the search's run (``settings`` hold it
    without: a server that needs the login answered 401, and the store given was taken for another)."""
    study = load_study(storage, study_name)
    _check_not_running(study, study_name)
    stored = _settings(study, study_name)
    if stored is not None:
        _check_settings(study_name, settings, stored)
        run_id = study.user_attrs.get(RUN_ATTR)
        stored_uri = stored.get("tracking_uri")  # an older autoq's study kept a server's login in it: the same store
        _check_same_store(study_name, _without_login(stored_uri) if isinstance(stored_uri, str) else stored_uri, settings.get("tracking_uri"),
                          run_id if isinstance(run_id, str) else None, tracking_uri)


def _check_same_store(study_name: str, stored: str | None, given: str | None, run_id: str | None, ask: str | None = None) -> None:
    """Refuse a resume that names another MLflow store than the search's while that one is still in place: it opened a
    second parent run there and logged every kept trial again, and the next plain resume went back to the first. A
    store that holds the search's run (a copy: `remember_counts` then records it), one in place of a SQLite store gone
    from its folder (moved), no MLflow before or no parent run yet, or none now (``--tracking-uri none``: nothing is
    logged twice) is taken."""
    if not stored or not given or stored == given or run_id is None:  # no parent run yet: nothing was logged to be split
        return
    db = sqlite_path(stored)
    if db is not None and not db.exists():
        return
    if _holds_run(ask or given, run_id):  # ``ask``: the given store with its login, if any
        return
    raise AutoqError(f"cannot resume {study_name!r} in another MLflow store: it logs to {shown_uri(stored)} (its parent run {run_id}), and {shown_uri(given)} would get a second parent run "
                     f"that logs its kept trials again; leave --tracking-uri out (a resume takes the stored one) or pass "
                     f"{shown_uri(stored)} (in Python, tracking_uri={shown_uri(stored)!r})")


def _holds_run(uri: str, run_id: str) -> bool:
    """Whether the MLflow store ``uri`` holds run ``run_id`` (a SQLite file not there is not made to ask)."""
    from autoq.tracking import tracking_client

    db = sqlite_path(uri)
    if db is not None and not db.exists():
        return False
    try:
        tracking_client(uri).get_run(run_id)
    except Exception:  # noqa: BLE001 - not there, or a store that cannot say: the resume is refused with the stored one named
        return False
    return True


def _shown(key: str, settings: dict[str, Any]) -> str:
    """A setting as a refused resume names it: a module's name is its ``name=`` (its class's where none was given),
    which "model 'Sequential'" did not say to a caller who passed the same module."""
    return "model name (name=)" if key == "model" and not settings.get("model_source") else key


def _check_settings(study_name: str, settings: dict[str, Any], stored: dict[str, Any]) -> None:
    # a search nested in a run logs to that run's experiment, whatever experiment was named (autoq runs names the real one)
    keys = [key for key in _MUST_MATCH if not (key == "experiment" and stored.get("mlflow_parent_run_id"))
            and not (key == "seed" and not strategy_uses_seed(str(stored.get("strategy"))))]  # greedy's: the same trials
    if settings.get("mlflow_parent_run_id") is not None:  # given (left out, a resume nests where the search was): it was
        keys.append("mlflow_parent_run_id")  # ignored, the run staying under its first parent, or none
    differ = [key for key in keys if key in stored and key in settings and not _same(key, stored[key], settings[key])]
    if "plugin_code" in differ:
        old, new = stored["plugin_code"], settings["plugin_code"]
        edited = sorted((set(old) ^ set(new)) | set(changed_code(old, new)))
        raise AutoqError(f"cannot resume {study_name!r}: the code of plug-in PTQ method(s) {', '.join(edited)} is not what its "
                         "trials were scored with (edited since); new trials would mix two versions under one name. Resume with "
                         "the plug-in as it was, or start a new search (another --study-name)")
    # the same options priced otherwise (other options: the space's own refusal, in _check_stored, says why)
    priced_otherwise = "latency_prices" in differ and "space_options" not in differ
    differ = [f"{_shown(key, settings)} {settings[key]!r} (stored: {stored.get(key)!r})" for key in differ
              if key not in ("space_options", "latency_prices")]
    if differ:
        raise AutoqError(f"cannot resume {study_name!r} with other settings: {'; '.join(differ)}; resume with the stored ones")
    if priced_otherwise and stored["latency_prices"] is not None and settings["latency_prices"] is not None:
        raise AutoqError(f"cannot resume {study_name!r}: the latency source {settings.get('device')!r} prices the layers' options "
                         "otherwise than when its trials were scored (its table re-measured or rewritten since, or another autoq's "
                         "table); new trials would be priced on another scale under one Pareto front. Resume with the table as it "
                         "was, or start a new search (another --study-name)")


def _check_stored(study: optuna.Study, study_name: str, settings: dict[str, Any], stored: dict[str, Any], space: SearchSpace) -> None:
    """The stored settings are ``settings`` and every stored trial fits ``space``."""
    _check_settings(study_name, settings, stored)
    names = _options_by_name(space)
    for t in study.get_trials(deepcopy=False, states=(*FINISHED, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)):
        _check_fits(t.params, names, study_name, complete=not _interrupted(t))  # a kill may cut a trial's picks short
    if "space_options" in stored and "space_options" in settings and stored["space_options"] != settings["space_options"]:
        # the trials fit, but the options differ (one added, or one taken away that no trial picked): Optuna refuses a
        # parameter's choices that change, mid-search, and a seed of the new options would be left waiting for good
        raise AutoqError(f"cannot resume {study_name!r}: the search space {settings.get('space')!r} gives the layers other options than "
                         "its trials were searched in, or the same ones in another order, which Optuna's choices keep (its file "
                         "edited since, or another file of that name); resume with the space as it was, or start a new search "
                         "(another --study-name)")


def _interrupted(trial: optuna.trial.FrozenTrial) -> bool:
    """Left RUNNING by a dead process, or marked failed for it by an earlier resume: its picks may be incomplete."""
    return trial.state == optuna.trial.TrialState.RUNNING or bool(trial.user_attrs.get(INTERRUPTED_ATTR))


def _reopen(study: optuna.Study, names: dict[str, dict[str, Any]]) -> int:
    """Mark trials left RUNNING by a dead process as failed and enqueue them again; returns how many trials are to be
    retried: those, and those a stopped search released (`release_interrupted`) whose retries still wait."""
    trials = study.get_trials(deepcopy=False)
    released = {t.number for t in trials if t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get(INTERRUPTED_ATTR)}
    waiting = sum(t.state == optuna.trial.TrialState.WAITING and t.user_attrs.get(RETRY_ATTR) in released for t in trials)
    running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    _fail_and_requeue(study, running, names)
    return len(running) + waiting


def release_interrupted(storage: str | None, study_name: str, numbers: Iterable[int], space: SearchSpace) -> None:
    """Mark the trials a stopped search (Ctrl-C, SIGTERM) was evaluating failed, and enqueue them again, as a resume does
    for a killed process's: they stayed RUNNING, which optuna-dashboard and ``load_study`` showed for a search that had
    stopped (Optuna's own ``optimize`` fails an interrupted trial too)."""
    numbers = set(numbers)
    if storage is None or not numbers:
        return
    study = load_study(storage, study_name)
    running = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)) if t.number in numbers]
    _fail_and_requeue(study, running, _options_by_name(space))


def _fail_and_requeue(study: optuna.Study, running: list[optuna.trial.FrozenTrial], names: dict[str, dict[str, Any]]) -> None:
    """Fail each of ``running`` as interrupted and enqueue it again: an enqueued (seeded) trial with its fixed
    parameters, another with its picks when it had made them all (a kill during Optuna's ask stores only some, which
    would pin a few layers of a random proposal; the sampler proposes afresh instead)."""
    for t in running:
        trial = optuna.trial.Trial(study, t._trial_id)
        trial.set_user_attr(INTERRUPTED_ATTR, True)
        trial.set_user_attr("error", "interrupted: the search stopped while this trial ran; retried on resume")
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    retries = 0
    for t in running:
        params = t.system_attrs.get("fixed_params") or (t.params if _misfit(t.params, names, complete=True) is None else None)
        if params:
            extra = {"seeded": True} if t.user_attrs.get("seeded") else {}
            study.enqueue_trial(params, user_attrs={RETRY_ATTR: t.number, **extra})
            retries += 1
    _retries_first(study, retries)


def _retries_first(study: optuna.Study, n: int) -> None:
    """Move the ``n`` retries just enqueued, the last waiting trials, to the front of the queue. Optuna runs waiting
    trials by number, so they ran after every seed still waiting, or not at all: a kill during a baseline, resumed
    with fewer trials, never evaluated that baseline. The waiting trials' contents (fixed parameters, autoq's
    attributes) move, not the trials; a queue with attributes of a plug-in's own is left in its order."""
    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    if not 0 < n < len(waiting) or any(set(t.user_attrs) - {"seeded", RETRY_ATTR, SOURCE_ATTR} or "fixed_params" not in t.system_attrs
                                        for t in waiting):
        return
    for slot, content in zip(waiting, waiting[-n:] + waiting[:-n]):
        trial = optuna.trial.Trial(study, slot._trial_id)
        trial.storage.set_trial_system_attr(slot._trial_id, "fixed_params", content.system_attrs["fixed_params"])
        for key, empty in (("seeded", False), (RETRY_ATTR, None), (SOURCE_ATTR, None)):  # an attribute cannot be removed: set to its 'none'
            if key in slot.user_attrs or key in content.user_attrs:
                trial.set_user_attr(key, content.user_attrs.get(key, empty))


def finished_trials(
    storage: str, study_name: str, space: SearchSpace, cost_model: CostModel, uniform: Iterable[Assignment], tracker: MlflowTracker | None,
    constrained: bool = True,
) -> tuple[list[Point], Counter[Assignment], int, int]:
    """The points, failed evaluations per assignment, over-budget count and failed-for-good count of a reopened study:
    a failed trial no retry names (``autoq.retry_of``) failed for good, whatever ``max_retries`` this session takes.

    MLflow child runs of trials that did not finish are deleted here (see the module docstring). ``constrained``: the
    strategy tells each trial with Optuna's budget constraint (an `OptunaStrategy` does); a finished trial without one
    was then told by other code (``study.optimize`` with a user's own objective on the study) and is left out with a
    warning: its values were the frontier's quality, never measured, and it counted as one of the search's trials.
    """
    from autoq.tracking.runs import reconcile_children

    study = load_study(storage, study_name)
    uniform = set(uniform)
    names = _options_by_name(space)
    every = study.get_trials(deepcopy=False)  # read once: the finished ones, and the retries any state holds
    trials = [t for t in every if t.state in (*FINISHED, optuna.trial.TrialState.PRUNED)]
    trials = _told_here(trials, study_name) if constrained else trials  # another strategy's cannot be told from others'
    kept = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE or (t.state == optuna.trial.TrialState.FAIL and not t.user_attrs.get(INTERRUPTED_ATTR))]
    run_ids = reconcile_children(tracker.client, tracker.parent_id, {t.number for t in kept}) if tracker else {}
    points, failures = [], Counter()
    for t in kept:
        assignment = _assignment(t.params, names, study_name)
        if t.state == optuna.trial.TrialState.FAIL:
            failures[assignment] += 1
        else:
            points.append(make_point(t.number, assignment, t.values[0], cost_model.cost(assignment), assignment in uniform, run_ids.get(t.number), cost_model))
    n_infeasible = sum(t.state == optuna.trial.TrialState.PRUNED for t in trials)
    retried = {t.user_attrs.get(RETRY_ATTR) for t in every}
    n_failed = sum(t.state == optuna.trial.TrialState.FAIL and t.number not in retried for t in kept)
    return points, failures, n_infeasible, n_failed


def _told_here(trials: list[optuna.trial.FrozenTrial], study_name: str) -> list[optuna.trial.FrozenTrial]:
    """Those of the finished ``trials`` autoq told (each has its budget constraint), warning about the others."""
    ours = [t for t in trials if CONSTRAINT_ATTR in t.system_attrs or t.user_attrs.get(INTERRUPTED_ATTR)]
    others = sorted({t.number for t in trials} - {t.number for t in ours})
    if others:
        shown = ", ".join(map(str, others[:5])) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        warn(f"study {study_name!r} holds {len(others)} finished trial(s) autoq did not evaluate (trial {shown}: no budget "
             "constraint recorded, as a trial told by other code such as study.optimize has none); they are left out of the "
             "frontier, MLflow and the trial count, though the sampler still learns from their values")
    return ours


def seeded_mixes(storage: str, study_name: str, uniform: Iterable[Assignment]) -> int:
    """How many distinct assignments other than the ``uniform`` baselines the stored study holds as seeds (enqueued
    ``seeded`` trials, in any state: waiting, run, failed and retried count once)."""
    baselines = {frozenset((name, choice.name) for name, choice in a.items()) for a in uniform}
    held = set()
    for t in load_study(storage, study_name).get_trials(deepcopy=False):
        if t.user_attrs.get("seeded"):
            params = frozenset((t.params or t.system_attrs.get("fixed_params") or {}).items())
            if params not in baselines:
                held.add(params)
    return len(held)


def not_stored(storage: str, study_name: str, assignments: Iterable[Assignment]) -> list[Assignment]:
    """Those of ``assignments`` that no trial of the stored study holds, in any state (a waiting, enqueued one by its
    fixed parameters)."""
    held = set()
    for t in load_study(storage, study_name).get_trials(deepcopy=False):
        params = t.params or t.system_attrs.get("fixed_params") or {}
        held.add(frozenset(params.items()))
    return [a for a in assignments if frozenset((name, choice.name) for name, choice in a.items()) not in held]


def _options_by_name(space: SearchSpace) -> dict[str, dict[str, Any]]:
    """Each layer's options by choice name, in the space's layer order."""
    return {layer.name: {c.name: c for c in opts} for layer, opts in zip(space.layers, space.options)}


def _assignment(params: dict[str, Any], names: dict[str, dict[str, Any]], study_name: str) -> Assignment:
    _check_fits(params, names, study_name)
    return Assignment(tuple((name, options[params[name]]) for name, options in names.items()))


def _check_fits(params: dict[str, Any], names: dict[str, dict[str, Any]], study_name: str, complete: bool = True) -> None:
    """Refuse a stored trial's ``params`` that name what the search space lacks or (``complete``) lack a layer it has."""
    misfit = _misfit(params, names, complete)
    if misfit:
        raise AutoqError(f"study {study_name!r} does not fit this model's search space ({misfit}); resume with the original model and space")


def _misfit(params: dict[str, Any], names: dict[str, dict[str, Any]], complete: bool) -> str | None:
    gone = [name for name in params if name not in names]
    if gone:
        return f"stored layer {gone[0]!r} is not in it"
    wrong = [f"{name}={value!r}" for name, value in params.items() if value not in names[name]]
    if wrong:
        return f"stored choice {wrong[0]} is not among its options"
    missing = [name for name in names if name not in params] if complete else []
    return f"its layer {missing[0]!r} is not in the stored trials" if missing else None
