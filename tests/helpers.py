"""Reading back what a search left in MLflow, and what an export wrote, for assertions; search and trial runs logged by
hand, as a search stopped at some point left them; a search's result made from points; a plug-in test's search space;
the ``autoq`` command run in the test's own process; a SQLite database whose disk is full; a script run under several
string hash seeds."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow.tracking import MlflowClient


def child_runs(client: MlflowClient, parent_id: str) -> list:
    parent = client.get_run(parent_id)
    return client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'", max_results=5000
    )


def logged_search(client: MlflowClient, experiment_id: str, name: str = "s", status: str = "FINISHED", params: dict | None = None,
                  metrics: dict | None = None, texts: dict[str, str] | None = None) -> str:
    """A search's parent run as autoq logs one (its kind and study tags), with ``params``, ``metrics`` and text
    artifacts (``texts``: file name -> content), ended ``status``: a search stopped or edited at a chosen point, no
    search run."""
    from autoq.tracking import STUDY_TAG

    run = client.create_run(experiment_id, tags={"autoq.kind": "search", STUDY_TAG: name}).info.run_id
    for key, value in (params or {}).items():
        client.log_param(run, key, value)
    for key, value in (metrics or {}).items():
        client.log_metric(run, key, value)
    for path, text in (texts or {}).items():
        client.log_text(run, text, path)
    client.set_terminated(run, status=status)
    return run


def logged_trial(client: MlflowClient, parent_id: str, assignment, trial: int = 3, status: str = "FINISHED", tags: dict | None = None,
                 experiment_id: str | None = None) -> str:
    """A trial's child run of ``parent_id`` as a search logs one (its trial tag and assignment.json), ended ``status``;
    in the parent's experiment, or ``experiment_id`` (a parent that is not there)."""
    from autoq.tracking import TRIAL_TAG

    experiment = experiment_id or client.get_run(parent_id).info.experiment_id
    run = client.create_run(experiment, tags={TRIAL_TAG: str(trial), "mlflow.parentRunId": parent_id, **(tags or {})}).info.run_id
    client.log_text(run, assignment.to_json(), "assignment.json")
    client.set_terminated(run, status=status)
    return run


def same_tensors(a, b) -> bool:
    """Equal safetensors files, tensor by tensor (the header's metadata order is not fixed between writes)."""
    import torch
    from safetensors.torch import load_file

    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def mlflow_refuses_folder_stores(folder) -> bool:
    """MLflow 3 refuses its old file store from some release on; the lowest MLflow pyproject.toml admits still takes it."""
    from mlflow.exceptions import MlflowException

    try:
        MlflowClient(tracking_uri=str(folder))
    except MlflowException:
        return True
    return False


def artifacts_beside(uri: str) -> str:
    """An artifact location beside a ``sqlite:///`` test store: an experiment a test creates itself would otherwise keep
    its artifacts in ./mlruns of the folder the tests run from."""
    return str(Path(uri[len("sqlite:///"):]).parent / "artifacts")


def plugin_space(name: str, methods: list[str]) -> str:
    """A search space YAML: 4- and 8-bit per-channel asymmetric weights on every layer, by each of ``methods`` (a
    plug-in's beside a built-in one), no layer kept fp16."""
    return (f"name: {name}\ndescription: a plug-in's method beside a built-in one\nrules:\n  - layers: \".*\"\n    bits: [4, 8]\n"
            f"    granularity: [channel]\n    symmetric: false\n    methods: [{', '.join(methods)}]\n    half: false\n")


def run_main(*args: str, cwd: Path, capsys) -> tuple[int, str, str]:
    """``autoq ARGS`` in this process, from ``cwd``: ``(exit status, stdout, stderr)``. The same ``main`` that ``python -m
    autoq`` exits with, without a new interpreter's imports (seconds a call): for the many one-line refusals. What only
    a process shows (signals, the exit itself) stays with the subprocess tests."""
    from autoq.cli import main

    here = Path.cwd()
    capsys.readouterr()
    os.chdir(cwd)
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code if isinstance(exc.code, int) else 2
    finally:
        os.chdir(here)
    out, err = capsys.readouterr()
    return code, out, err


def with_uncalled_layer(width: int, out: int):
    """A two-layer MLP (``a`` then ``b``) holding a third linear layer, ``unused``, between them that forward never
    calls: a searched layer the calibration batches do not reach."""
    import torch

    class WithUnused(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.a, self.unused, self.b = torch.nn.Linear(width, width), torch.nn.Linear(width, width), torch.nn.Linear(width, out)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    return WithUnused().eval()


@contextmanager
def sqlite_capped(db: Path, pages: int, then_read_only: bool = False) -> Iterator[None]:
    """Every SQLite connection opened meanwhile to ``db`` may grow it to ``pages`` pages, no more: SQLite then fails a
    write with its own "database or disk is full", as on a full disk (``PRAGMA max_page_count``). ``then_read_only``:
    once one write failed so, connections opened after it write nothing at all (``PRAGMA query_only``), as on a disk
    so full that no journal file can be made (a capped database still takes an update in place)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    full: list[bool] = []

    def ours(connection: sqlite3.Connection) -> bool:
        return any(Path(row[2]) == db for row in connection.execute("PRAGMA database_list") if row[2])

    def cap(connection: sqlite3.Connection, _record: object) -> None:
        if ours(connection):
            connection.execute(f"PRAGMA max_page_count = {pages}")
            if full and then_read_only:
                connection.execute("PRAGMA query_only = 1")

    def failed(context: object) -> None:
        if "full" in str(getattr(context, "original_exception", "")):
            full.append(True)

    event.listen(Engine, "connect", cap)
    event.listen(Engine, "handle_error", failed)
    try:
        yield
    finally:
        event.remove(Engine, "connect", cap)
        event.remove(Engine, "handle_error", failed)


def page_count(db: Path) -> int:
    """How many pages the SQLite database ``db`` holds."""
    with sqlite3.connect(db) as connection:
        return connection.execute("PRAGMA page_count").fetchone()[0]


def search_result(*points, **fields):
    """A finished search's result of ``points`` (all on the frontier), made without a search; ``fields`` set the rest."""
    from autoq.budget import parse_budget
    from autoq.engine.result import SearchResult

    made = dict(budget=parse_budget("4.5bits"), metric="accuracy", reference_quality=0.9, points=points, frontier=points, study_name="s",
                storage=None, tracking_uri=None, parent_run_id=None, eval_seconds=1.0, wall_seconds=2.0)
    return SearchResult(**{**made, **fields})


def tracked_point(tracker, trial: int, quality: float, bits: float):
    """A one-layer int4 point of ``trial`` whose run ``tracker`` logged (as a search's worker does), to hand to ``finish``."""
    from autoq.choice import Assignment, LayerChoice
    from autoq.engine.result import Point

    assignment = Assignment((("0", LayerChoice.from_name("int4-ch-asym:rtn-mse")),))
    run_id = tracker.log_trial(trial, {"quality": quality, "effective_bits": bits}, {}, assignment)
    return Point(trial, assignment, quality, bits, int(bits * 100), run_id=run_id)


def printed_under_hash_seeds(script: str, cwd=None) -> set[str]:
    """What ``script`` prints in four processes of four string hash seeds (one answer: nothing hangs on a set's order)."""
    return {subprocess.run([sys.executable, "-c", script], cwd=cwd, env={**os.environ, "PYTHONHASHSEED": str(seed)}, capture_output=True,
                           text=True, check=True).stdout.strip() for seed in (1, 2, 3, 4)}
