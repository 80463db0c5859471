"""``autoq runs`` and ``autoq pareto NAME``: list searches and print a frontier from the MLflow store."""

from __future__ import annotations

import argparse
import shlex
from datetime import datetime, timezone
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    from autoq.cli.mlflow_args import add_mlflow_args

    for name, help_, fn in (
        ("runs", "list the searches in an MLflow store", run_list),
        ("pareto", "print the Pareto frontier of one search from the MLflow store", run_pareto),
    ):
        p = sub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".")
        if name == "pareto":
            p.add_argument("name", help="the search's study name (see 'autoq runs') or its MLflow parent run id")
        add_mlflow_args(p)
        p.set_defaults(run=fn)


def _client(args: argparse.Namespace, required: bool = True):
    """The store's client and the experiment's id (``None`` where it is missing and not ``required``)."""
    from mlflow.exceptions import MlflowException

    from autoq.errors import AutoqError
    from autoq.tracking import require_store, tracking_client
    from autoq.tracking.mlflow_logger import READ_ADVICE, restore_command, shown_uri, store_failed

    require_store(args.tracking_uri)
    client = tracking_client(args.tracking_uri)
    try:
        experiment = client.get_experiment_by_name(args.experiment)
    except MlflowException as exc:  # a server that answers /health but not MLflow's API (a wrong path): a traceback
        raise store_failed(args.tracking_uri, exc, READ_ADVICE) from None
    if experiment is None and required:
        names = [e.name for e in client.search_experiments()]
        raise AutoqError(f"no experiment {args.experiment!r} in {shown_uri(args.tracking_uri)}; pass --experiment NAME, one of: "
                         f"{', '.join(repr(n) for n in names) or 'none (the store is empty)'}")
    if experiment is not None and experiment.lifecycle_stage == "deleted":  # 'no searches in experiment' said nothing of it
        raise AutoqError(f"experiment {args.experiment!r} is deleted in {shown_uri(args.tracking_uri)}, with its runs; restore it "
                         f"({restore_command(args.tracking_uri, experiment_id=experiment.experiment_id)}, or in the UI) to read them")
    return client, experiment.experiment_id if experiment is not None else None


def run_list(args: argparse.Namespace) -> int:
    from autoq.engine.runner import auto_storage
    from autoq.engine.sessions import stopped_here
    from autoq.tracking import STUDY_TAG, absolute_uri, sqlite_path
    from autoq.tracking.mlflow_logger import run_storage, shown_uri
    from autoq.tracking.runs import searches

    client, experiment_id = _client(args)
    runs = searches(client, [experiment_id])
    elsewhere = _elsewhere(client, experiment_id)
    if not runs:
        print(f"no searches in experiment {args.experiment!r} of {args.tracking_uri}" + (f"; {elsewhere}" if elsewhere else ""))
        return 0
    rows = [("study name", "status", "model", "budget", "trials", "best", "started (UTC)", "parent run id")]
    gone = False  # a RUNNING search whose process is known to be gone (kill -9): MLflow cannot tell, the Optuna study can
    for run in runs:
        p, t = run.data.params, run.data.tags
        started = datetime.fromtimestamp(run.info.start_time / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M")
        name = t.get(STUDY_TAG) or p.get("study_name") or run.info.run_name
        status = run.info.status
        if status == "RUNNING" and stopped_here(run_storage(run), name):
            # read again: a search finishes its MLflow run before it ends its session, so one that ended between the two
            # reads was listed as killed, and its resume offered
            status = client.get_run(run.info.run_id).info.status
            if status == "RUNNING":
                status, gone = "RUNNING*", True
        trials, best = _progress(client, run)
        rows.append((name, status, p.get("model", "?"), p.get("budget", "?"), trials, best, started, run.info.run_id))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]  # the default study names are 46 characters
    right = {"trials", "best"}
    for row in rows:
        cells = (cell.rjust(w) if head in right else cell.ljust(w) for cell, w, head in zip(row, widths, rows[0]))
        print("  ".join(cells).rstrip())
    if gone:
        print("* RUNNING in MLflow, but its process on this machine is gone (killed, or its store failed at the end): resume it")
    if elsewhere:
        print(f"({elsewhere})")
    where = f"--tracking-uri {shlex.quote(shown_uri(absolute_uri(args.tracking_uri)))}" + (f" --experiment {shlex.quote(args.experiment)}" if args.experiment != args.experiment_default else "")
    print(f"\nautoq pareto NAME {where}   prints a frontier;")
    resumable = [run for run in runs if run_storage(run) is not None]
    if resumable:
        # a storage is implied beside a SQLite store only, where the searches kept theirs (not one run with --storage
        # elsewhere: the printed command looked in optuna.db beside the store); a tracking server's kept theirs where each ran
        beside = auto_storage(args.tracking_uri) if sqlite_path(args.tracking_uri) else None
        storage = "" if beside is not None and all(run_storage(run) == beside for run in resumable) else " --storage URL"
        print(f"autoq search --resume NAME {where}{storage}   continues a search", end="")
        print(" (URL: its optuna_storage param)" if storage else "", end="")
        print("." if len(resumable) == len(runs) else " (not those run with --storage none: they kept no Optuna storage).")
    else:
        print("(none can be resumed: they ran with --storage none, and kept no Optuna storage)")
    return 0


def _progress(client: Any, run: Any) -> tuple[str, str]:
    """(trials, best quality) of a search: its summary metrics once it ended, else read from its finished trial runs (a
    search killed with kill -9, or running: '-' hid the trials that 'autoq pareto' of it reports). A resumed search
    that runs, or was killed, holds the metrics of the session it resumed: they showed its first session's count."""
    from autoq.engine.summary import format_quality
    from autoq.tracking import TRIAL_TAG
    from autoq.tracking.runs import trial_runs

    m = run.data.metrics
    if "n_evaluated" in m and run.info.status != "RUNNING":
        return str(int(m["n_evaluated"])), format_quality(m["best_quality"]) if "best_quality" in m else "-"
    done = [r for r in trial_runs(client, run.info.run_id, run.info.experiment_id) if r.info.status == "FINISHED" and TRIAL_TAG in r.data.tags]
    qualities = [r.data.metrics["quality"] for r in done if "quality" in r.data.metrics]
    return str(len({r.data.tags[TRIAL_TAG] for r in done})), format_quality(max(qualities)) if qualities else "-"


def _elsewhere(client: Any, experiment_id: str) -> str:
    """The searches of the store's other experiments (a pipeline's nested ones), said so that the list is not taken for
    all of them: "3 more searches in other experiments: 'pipeline' (3); --experiment NAME lists them", or ""."""
    from collections import Counter

    from autoq.tracking.runs import searches

    names = {e.experiment_id: e.name for e in client.search_experiments() if e.experiment_id != experiment_id}
    counts = Counter(names[run.info.experiment_id] for run in searches(client, list(names))) if names else Counter()
    if not counts:
        return ""
    listed = ", ".join(f"{name!r} ({n})" for name, n in sorted(counts.items()))
    total = sum(counts.values())
    return f"{total} more search{'es' if total > 1 else ''} in other experiments: {listed}; --experiment NAME lists them"


def _experiments_holding(client: Any, name: str, experiment_id: str | None) -> list[str]:
    """The other experiments of the store with a search called ``name`` (a pipeline's nested searches live in its own)."""
    from autoq.errors import AutoqError
    from autoq.tracking.runs import find_search

    def holds(other: str) -> bool:
        try:
            return find_search(client, other, name) is not None
        except AutoqError:  # two searches of that name there: it holds them
            return True

    return sorted(e.name for e in client.search_experiments() if e.experiment_id != experiment_id and holds(e.experiment_id))


def run_pareto(args: argparse.Namespace) -> int:
    from autoq.engine import format_summary
    from autoq.engine.result import SearchResult
    from autoq.engine.sessions import running_pid, where
    from autoq.errors import AutoqError
    from autoq.tracking.runs import find_search, resume_hint

    client, experiment_id = _client(args, required=False)  # a run id needs no experiment (a search nested in a pipeline's)
    parent = find_search(client, experiment_id, args.name) if experiment_id is not None else None
    run_id = parent.info.run_id if parent is not None else args.name
    if parent is None and not _is_run(client, run_id):
        gone = _deleted_search(client, experiment_id, args.name) if experiment_id is not None else None
        if gone is not None:  # as its run id says it: not 'no search named', which sent the user looking elsewhere
            raise AutoqError(_restore_first(f"the search {args.name!r} in experiment {args.experiment!r} is deleted (MLflow run {gone})", gone,
                                            args.tracking_uri))
        where = f"experiment {args.experiment!r}" if experiment_id is not None else f"an experiment {args.experiment!r} (there is none)"
        found = _experiments_holding(client, args.name, experiment_id)
        hint = (f"it is in experiment {', '.join(map(repr, found))}: add --experiment {shlex.quote(found[0])}" if found
                else "'autoq runs --experiment NAME' lists the searches of an experiment")
        raise AutoqError(f"no search named {args.name!r} in {where} of {args.tracking_uri}, nor a run with that id; {hint}")
    run = client.get_run(run_id)  # read once: its status, metrics and stage are the search's as it was logged
    if run.info.lifecycle_stage == "deleted":  # hidden by the UI and autoq runs, refused by export and resume
        raise AutoqError(_restore_first(f"MLflow run {run_id!r} is deleted", run_id, args.tracking_uri))
    result = SearchResult.from_mlflow(run_id, args.tracking_uri)
    if not result.points:
        raise AutoqError(_no_points(client, run, args.name))
    status = run.info.status
    pid = running_pid(result.storage, result.study_name) if status == "RUNNING" else None
    if status == "RUNNING" and pid is None:  # as autoq runs reads it: ended since the run was read, or killed
        status = client.get_run(run_id).info.status
    if pid is not None:
        print(f"Search {result.study_name!r} is still running ({where(pid)}): the trials it finished so far.")
    elif status != "FINISHED":  # killed (kill -9 leaves it RUNNING), failed, or still running on another machine
        print(f"Search {result.study_name!r} did not finish (MLflow status {status}): the trials it finished so far.")
        # stopped, or killed (unless it runs on another machine): go on, as the search's own interruption says (a Ray
        # search's command lacked --backend ray --workers N, and went on in-process); a module passed from Python: the call
        if run.data.params.get("model_source") == "none" or result.storage:
            print(f"Continue it: {resume_hint(run, args.tracking_uri)}.")
    # a search stopped by Ctrl-C or SIGTERM (KILLED) logged the frontier of the trials it finished; kill -9 logged none
    logged = status == "FINISHED" or any(a.path == "frontier.csv" for a in client.list_artifacts(run_id))
    n_logged = run.data.metrics.get("n_evaluated")
    deleted = max(int(n_logged) - len(result.points), 0) if n_logged is not None else 0
    if deleted:  # its counts and uniform coverage fell, for no reason it gave
        print(f"{deleted} of the search's {int(n_logged)} evaluated trial runs are deleted in MLflow: this is "
              f"the frontier of the {len(result.points)} left (the search's frontier.csv artifact holds the frontier it logged).")
    uniform_logged = run.data.metrics.get("n_uniform_evaluated")  # a deleted run is a baseline's only where fewer are left
    uniform_gone = uniform_logged is not None and int(uniform_logged) > result.uniform_coverage[0]
    print(format_summary(result, finished=logged, module=run.data.params.get("model_source") == "none", deleted=deleted if uniform_gone else 0,
                         shell=True))
    return 0


def _restore_first(what: str, run_id: str, tracking_uri: str) -> str:
    """``what`` (a deleted run) and how to read it again."""
    from autoq.tracking.mlflow_logger import restore_command

    return f"{what}; restore it first ({restore_command(tracking_uri, run_id)}, or in the UI) to read or export its frontier"


def _deleted_search(client: Any, experiment_id: str, name: str) -> str | None:
    """The run id of a deleted search named ``name`` in the experiment, if there is one."""
    from mlflow.entities import ViewType

    from autoq.tracking import STUDY_TAG
    from autoq.tracking.runs import SEARCH_FILTER, _quoted

    found = client.search_runs([experiment_id], f"{SEARCH_FILTER} and tags.`{STUDY_TAG}` = {_quoted(name)}", run_view_type=ViewType.DELETED_ONLY,
                               max_results=1)
    return found[0].info.run_id if found else None


def _no_points(client: Any, run: Any, name: str) -> str:
    """Why a search has no frontier: every trial failed (said with the first error, which 'no finished trial yet' hid:
    it read as a search still to run), or none finished yet: then what to do, wait for it or resume it."""
    from autoq.tracking.mlflow_logger import restore_command
    from autoq.tracking.runs import resume_hint, trial_runs

    n_failed = int(run.data.metrics.get("n_failed", 0))
    n_evaluated = int(run.data.metrics.get("n_evaluated", 0))
    if n_evaluated:  # it said 'no finished trial yet' and to resume a search whose every trial was done, their runs deleted
        return (f"search {name!r} evaluated {n_evaluated} trial(s), and every one of their MLflow runs is deleted; restore them (in "
                f"the UI's deleted runs, or {restore_command(client.tracking_uri, 'ID')} each) to read or export its frontier (the "
                "search's frontier.csv artifact holds the frontier it logged)")
    if run.info.status != "FAILED" or not n_failed:
        return f"search {name!r} has no finished trial yet (MLflow status {run.info.status}); {resume_hint(run, client.tracking_uri)}"
    errors = [r.data.tags["error"] for r in trial_runs(client, run.info.run_id, run.info.experiment_id) if "error" in r.data.tags]
    first = f"; the first error: {errors[0]}" if errors else ""
    return (f"search {name!r} failed: every trial failed ({n_failed}){first}; each trial's error is its MLflow child run's "
            "'error' tag (the UI's run page shows it)")


def _is_run(client, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
    except MlflowException:
        return False
    return True
