"""The Ray backend: the same search, with trials evaluated by Ray Tune workers.

The driver keeps the search itself: an :class:`OptunaStrategy` (same sampler,
seeds and budget constraint as the in-process backend) wrapped in a Tune
``Searcher``, and the :class:`~autoq.engine.trials.TrialBook`. Ray Tune's own
``OptunaSearch`` would hand every proposal to a worker, but at a 4.5-bit budget
about 97% of random proposals are over budget and are known to be so before any
evaluation: here they are told as infeasible in the driver and never reach Ray.

Workers hold the model and a quantization cache for their lifetime (actors are
reused between trials), evaluate an assignment and log it as a child run of the
search's MLflow parent (``MlflowClient`` with explicit run ids). A trial that
raises is a failed result; a worker that dies is a Tune trial error: either way
the driver records the failure with its error and retries it (``max_retries``).
The search state lives in the Optuna storage, so ``--resume`` works the same
for both backends and ``Tuner.restore`` is not needed.

This module imports Ray; ``autoq`` imports it only when ``backend="ray"``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import logging
import math
import os
import pickle
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import ray
from ray import tune
from ray.tune import Callback
from ray.tune.search import Searcher

from autoq.builtin.workload import Workload
from autoq.choice import Assignment
from autoq.engine.ray_session import term_stops_tune
from autoq.engine.trials import TrialBook, trial_metrics, trial_tags
from autoq.errors import AutoqError, Terminated
from autoq.messages import warn
from autoq.model import LayerInfo
from autoq.ptq.registry import MethodInfo, adopt_methods, registered_methods
from autoq.tracking import MlflowTracker, absolute_uri


def _culprit(message: str) -> str:
    """What could not be pickled, from Ray's serialization report: its first 'FAIL serialization: ...' reason and the
    path to the object (``cannot pickle '_thread.lock' object (at evaluate -> lock)``); its first line alone ended in
    'Could not serialize the put value Workload(...):', naming nothing. That first line where the report has neither."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", message)  # the report's colours
    reason = re.search(r"FAIL serialization: (.+)", text)
    where = re.search(r"FailTuple\(\S+ \[path=([^,\]]+)", text)
    if reason:
        return reason.group(1).strip()[:200] + (f" (at {where.group(1).strip()})" if where else "")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "Ray gave no reason")
    return first[:300].rstrip(":")


def run_trials_on_ray(workload: Workload, config: Any, book: TrialBook, deadline: float | None,
                      layers: tuple[LayerInfo, ...] | None = None) -> None:
    """Evaluate the book's proposals on Ray Tune workers until it is full (or the deadline passes), on the Ray that
    :func:`autoq.engine.ray_session.ray_session` joined or started. ``layers``: the searched ones, over which each
    worker's cache samples its statistics as the in-process search's does."""
    searcher = BookSearcher(book, deadline)
    if config.gpus_per_trial and all(p.device.type == "cpu" for p in workload.model.parameters()):
        warn(f"each trial holds {config.gpus_per_trial:g} GPU(s) but evaluates where the model is, on the CPU: "
             "autoq moves no model; pass a model (and data and evaluate function) on CUDA from Python to use them, or leave "
             "--gpus-per-trial out")
    tracking = (absolute_uri(config.tracking_uri), book.tracker.experiment_id, book.tracker.parent_id) if book.tracker else None
    methods = registered_methods()  # a worker imports autoq alone: the driver's plug-in methods go with the model
    values = dict(workload=workload, search_config=config, tracking=tracking, threads=max(1, int(config.cpus_per_trial)), methods=methods,
                  layers=layers)
    with _by_value([info.fn for info in methods] + _workload_code(workload)):
        try:  # put here, not by with_parameters: a value it fails to put stays in its registry, and every later ray.init of
            # the process (a notebook's next search) fails to put it again
            refs = {name: ray.put(value) for name, value in values.items()}
        except (TypeError, pickle.PicklingError) as exc:  # Ray's own message repeats the workload's repr: 133 kB seen, the
            # culprit at its end; cloudpickle's own refusals (a file open for writing) are PicklingErrors
            raise AutoqError(f"the model, data and evaluate function cannot be sent to Ray workers: {_culprit(str(exc))}; "
                             "everything they hold must pickle (no locks, open files or generators: ray.util.inspect_serializability "
                             "names the part), or use the optuna backend") from None
    trainable = tune.with_resources(tune.with_parameters(AutoqTrainable, **refs), {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial})
    with tempfile.TemporaryDirectory(prefix="autoq-tune-") as tmp, _quiet_tune():
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1, max_concurrent_trials=config.workers, reuse_actors=True),
            run_config=tune.RunConfig(
                name="autoq", storage_path=tmp, verbose=0, callbacks=[ErrorTags(searcher)],
                failure_config=tune.FailureConfig(max_failures=0),  # the book retries, with the error recorded
                checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),
            ),
        )
        with term_stops_tune() as terms:
            tuner.fit()
        searcher.record_unexplained()
    if searcher.driver_error is not None:  # as the in-process backend raises it: a store that failed ends the search
        raise searcher.driver_error
    if searcher.fatal:
        raise AutoqError(f"the Ray workers cannot load the search's model, data or evaluate function ({searcher.fatal}), so every "
                         "trial would fail the same way: the search stopped at once. Install that module where the workers run "
                         "(or put its folder on their PYTHONPATH), or use the optuna backend")
    if stopped_early(book, searcher.timed_out()):
        record_logged(book)
        raise Terminated(terms[0]) if terms else KeyboardInterrupt  # Tune stopped early: it caught SIGTERM / Ctrl-C itself


def stopped_early(book: TrialBook, timed_out: bool) -> bool:
    """Whether Tune returned because it was stopped (Ctrl-C, SIGTERM: it catches them itself) rather than because the
    searcher finished: trials still in flight, or too few done before the deadline. After the deadline the searcher
    lets the running trials end, so a Ctrl-C then left them RUNNING in Optuna while the search ended as FINISHED."""
    return bool(book.in_flight) or (not book.done() and not timed_out)


def record_logged(book: TrialBook) -> int:
    """Record the in-flight trials a worker evaluated and logged while Tune stopped (Ctrl-C, SIGTERM): their results
    never reached the searcher, so they stayed RUNNING in Optuna and a resume evaluated them again (deleting the
    child run that held the quality). Their finished child runs hold it; returns how many were recorded."""
    from autoq.tracking import TRIAL_TAG

    tracker = book.tracker
    if tracker is None:
        return 0
    found = 0
    for number in list(book.in_flight):
        runs = tracker.client.search_runs(
            [tracker.experiment_id], max_results=1,
            filter_string=f"tags.mlflow.parentRunId = '{tracker.parent_id}' and tags.`{TRIAL_TAG}` = '{number}' and attributes.status = 'FINISHED'")
        if runs and "quality" in runs[0].data.metrics:
            book.record(number, float(runs[0].data.metrics["quality"]), None, runs[0].info.run_id)
            found += 1
    return found


def _workload_code(workload: Workload) -> list[Any]:
    """What a worker unpickles besides the methods that may come from the user's own modules: ``evaluate`` and the
    model's classes (an ``evaluate`` imported from a folder the workers do not search failed every trial, in minutes)."""
    return [workload.evaluate, *{type(m) for m in workload.model.modules()}]


def _module_of(code: Any) -> Any:
    """The module a function, class, bound method, callable object or ``functools.partial`` of one is defined in."""
    while isinstance(code, functools.partial):
        code = code.func
    name = getattr(code, "__module__", None)  # an object's is its class's
    return sys.modules.get(name) if isinstance(name, str) else None


@contextlib.contextmanager
def _by_value(code: Iterable[Any]) -> Iterator[None]:
    """Pickle the modules of the user's own ``code`` (methods, ``evaluate``, model classes) by their code, not their
    names: a module loaded from a file, or from a folder the workers do not search, cannot be imported there. Installed
    and standard-library modules (and autoq's) go by name, as before, and so does ``__main__``'s code, which
    cloudpickle sends by value anyway."""
    from ray import cloudpickle

    already = set(cloudpickle.list_registry_pickle_by_value())
    found = [m for m in map(_module_of, code) if m is not None and m.__name__ not in already]
    distributions = importlib.metadata.packages_distributions() if found else {}
    modules = {m for m in found if _users_own(m, distributions)}
    for module in modules:
        cloudpickle.register_pickle_by_value(module)
    try:
        yield
    finally:
        for module in modules:
            cloudpickle.unregister_pickle_by_value(module)


def _users_own(module: Any, distributions: Mapping[str, list[str]]) -> bool:
    """A module of the user's (a plug-in file, a script's folder), not ``__main__``, autoq's, the standard library's or
    an installed package's, whose names every worker can import. Installed is where the interpreter installs, or
    beside the metadata of a distribution that holds it (``distributions``: `importlib.metadata.packages_distributions`):
    torch in the user site (``pip install --user``), a ``--target`` folder or Debian's dist-packages went by value, and
    a worker's ``nn.Conv2d`` was another class, which every ``isinstance`` check took for a linear layer. An editable
    install's module, away from its metadata, is the user's own code: by value, as before."""
    import sysconfig

    name, file = module.__name__, getattr(module, "__file__", None)
    if name == "__main__" or name == "autoq" or name.startswith("autoq.") or not file:
        return False
    roots = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    for dist in distributions.get(name.partition(".")[0], ()):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            roots.add(str(importlib.metadata.distribution(dist).locate_file("")))
    path = os.path.realpath(file)
    return not any(path.startswith(os.path.realpath(root) + os.sep) for root in roots)


class _quiet_tune:
    """Turn off Tune's per-trial result files and its console warnings while the search runs
    (our progress bar and MLflow report the trials; the results need no files)."""

    _ENV = {
        "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_AIR_NEW_OUTPUT": "0", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "1000",
        "RAY_CHDIR_TO_TRIAL_DIR": "0",  # workers keep the driver's working directory: relative paths mean the same there
    }

    def __enter__(self) -> None:
        self._old = {k: os.environ.get(k) for k in self._ENV}
        os.environ.update(self._ENV)
        self._logger = logging.getLogger("ray.tune")
        self._level = self._logger.level
        # CRITICAL: a dead worker's traceback and the closing "Trials did not complete" are ERROR records, though the
        # book records and retries such a trial and the summary counts it (they read as if the search had failed)
        self._logger.setLevel(logging.CRITICAL)

    def __exit__(self, *exc: object) -> None:
        self._logger.setLevel(self._level)
        for k, v in self._old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class BookSearcher(Searcher):
    """A Tune searcher that hands out the book's within-budget proposals and records their results."""

    def __init__(self, book: TrialBook, deadline: float | None) -> None:
        super().__init__(metric="quality", mode="max")
        self.book, self.deadline = book, deadline
        self.numbers: dict[str, int] = {}  # Tune trial id -> Optuna trial number
        self.errored: dict[str, int] = {}  # Tune trial id -> Optuna trial number of a failed trial, until its error is read
        self.fatal = ""  # a worker that cannot import the workload's code: every trial would fail alike, so none more starts
        self.driver_error: Exception | None = None  # what recording a result raised (a store gone): the search stops with it

    def timed_out(self) -> bool:
        return self.deadline is not None and time.perf_counter() > self.deadline

    def suggest(self, trial_id: str) -> dict | str | None:
        if self.fatal or self.driver_error or self.book.done() or (self.timed_out() and not self.book.in_flight):
            return Searcher.FINISHED
        pending = self.book.next(self.deadline)
        if pending is None:  # enough trials are running (more may be needed if one fails), or past the deadline the running
            return Searcher.FINISHED if self.book.done() else None  # ones may finish
        proposal = pending.proposal
        self.numbers[trial_id] = proposal.number
        return {
            "trial": proposal.number,
            "assignment": proposal.assignment.to_json(),
            "metrics": trial_metrics(pending.cost),
            "tags": trial_tags(proposal.assignment in self.book.uniform, self.book.cost_model, attempt=str(pending.attempt), backend="ray"),
        }

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        number = self.numbers.pop(trial_id, None)
        if number is None or number not in self.book.in_flight:
            return
        if error or not result or "quality" not in result:
            self.errored[trial_id] = number  # recorded by ErrorTags.on_trial_error, which Tune calls next with the error
            return
        self._record(number, float(result["quality"]), result.get("error") or None, result.get("run_id") or None)

    def _record(self, number: int, quality: float, error: str | None, run_id: str | None = None) -> str | None:
        """``book.record``, its exception kept for the driver to raise after Tune returns. Tune catches what a searcher's
        callback raises and fails that trial instead, so a store that failed once (a server's dropped request, a locked
        SQLite) let the search go on without that trial and end with its MLflow run unfinished, as if it had succeeded.
        After an error nothing more is recorded: the trials still running stay for the resume to evaluate."""
        if self.driver_error is not None:
            return None
        try:
            return self.book.record(number, quality, error, run_id)
        except Exception as exc:
            self.driver_error = exc
            return None

    def record_error(self, trial_id: str, text: str) -> None:
        """Record the failure of a trial whose worker died or raised outside the evaluation: the last line of Tune's
        error text (the exception) as its error, the whole text on its MLflow run."""
        number = self.errored.pop(trial_id, None)
        if number is None or number not in self.book.in_flight:
            return
        summary = _error_summary(text)
        if re.match(r"(ModuleNotFoundError|ImportError)\b", summary):
            self.fatal = summary
        run_id = self._record(number, math.nan, f"the Ray worker failed: {summary or 'no error text'}"[:1000])
        tracker = self.book.tracker
        if run_id and tracker and text:
            tracker.client.set_tag(run_id, "error", text[-5000:])

    def record_unexplained(self) -> None:
        """Trials Tune reported failed without an error callback: recorded as failed, so that the book's counts hold."""
        for trial_id in list(self.errored):
            self.record_error(trial_id, "")

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        """Nothing to save: the search state is in the Optuna storage (see the module docstring)."""

    def __getstate__(self) -> dict:
        """Tune pickles its search algorithm into the experiment folder for ``Tuner.restore``, which autoq does not use
        (the state is in the Optuna storage): the book stays out. It holds the sampler and the strategy, which need not
        pickle (NSGA-II's lock, a strategy's generator): ``--sampler nsga2`` and ``--strategy random`` failed on Ray."""
        return {**self.__dict__, "book": None}


def _error_summary(text: str) -> str:
    """The line of Tune's error text that says what happened: the last exception line of a traceback ("RuntimeError:
    ..."), else its first line (a dead actor's "The actor died unexpectedly ...")."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("Failure #")]
    raised = [line for line in lines if re.match(r"[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b", line)]
    return raised[-1] if raised else (lines[0] if lines else "")


class ErrorTags(Callback):
    """Record a failed trial (a dead worker) with Tune's error text: the Optuna trial's ``error``, the MLflow run's tag.

    The text is read from the trial's local error file, which Tune writes before this callback; its
    ``get_error()`` reads the synced storage copy, which does not exist yet at this point."""

    def __init__(self, searcher: BookSearcher) -> None:
        self.searcher = searcher

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        text = ""
        path = getattr(trial, "error_file", None)
        if path and os.path.exists(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        self.searcher.record_error(trial.trial_id, text)


class AutoqTrainable(tune.Trainable):
    """One Ray worker: the model and its quantization cache, reused across trials (``reuse_actors``).

    ``tracking``: (tracking URI, experiment id, the search's run id), so trial runs join the search's
    experiment, whichever it is (a nested search's is its outer run's)."""

    def setup(
        self, config: dict, workload: Workload | None = None, search_config: Any = None, tracking: tuple[str, str, str] | None = None, threads: int = 1,
        methods: tuple[MethodInfo, ...] = (), layers: tuple[LayerInfo, ...] | None = None,
    ) -> None:
        import torch

        from autoq.engine.runner import new_cache

        adopt_methods(methods)
        torch.set_num_threads(threads)  # the CPUs this trial holds, no more: workers share the machine
        self.workload = workload
        self.cache = new_cache(workload, search_config, layers)
        self.tracker = MlflowTracker(tracking[0], tracking[1]).attach(tracking[2]) if tracking else None

    def reset_config(self, new_config: dict) -> bool:
        self.config = new_config
        return True

    def step(self) -> dict:
        from autoq.engine.runner import _evaluate

        assignment = Assignment.from_json(self.config["assignment"])
        started_ms = int(time.time() * 1000)
        quality, error = _evaluate(self.workload, self.cache, assignment)
        return {"quality": quality, "error": error or "", "run_id": self._log(assignment, quality, error, started_ms) or "", "done": True}

    def _log(self, assignment: Assignment, quality: float, error: str | None, started_ms: int) -> str | None:
        """Log the trial as a child run; on a logging error leave it to the driver (which logs what has no run id)."""
        if self.tracker is None:
            return None
        metrics, tags = dict(self.config["metrics"]), dict(self.config["tags"])
        if error:
            tags["error"] = error[:5000]
        else:
            metrics["quality"] = quality
        try:
            return self.tracker.log_trial(self.config["trial"], metrics, tags, assignment, "FAILED" if error else "FINISHED", start_ms=started_ms)
        except Exception:  # e.g. a locked SQLite store: the driver logs it instead
            return None
