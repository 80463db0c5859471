"""The bookkeeping every backend shares: budget checks before evaluation, points, failures, retries.

A :class:`TrialBook` sits between a strategy (ask/tell) and whatever evaluates
(the in-process loop in :mod:`autoq.engine.runner`, or Ray workers in
:mod:`autoq.engine.ray_backend`). Over-budget proposals are told as infeasible
and never handed out; assignments already evaluated are recorded at once; a
failed trial is recorded with its error (Optuna FAIL, MLflow FAILED child run)
and enqueued again until it has failed ``max_retries + 1`` times. A search has
evaluated ``n_trials`` when points plus final failures reach that count.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from tqdm.auto import tqdm

from autoq.budget import Budget
from autoq.choice import Assignment
from autoq.cost import Cost, CostModel
from autoq.engine.result import Point
from autoq.engine.strategy import Proposal, Strategy, study_objectives
from autoq.errors import AutoqError
from autoq.interrupts import deferred_interrupts
from autoq.messages import warn
from autoq.tracking import MlflowTracker

MAX_OVER_BUDGET_IN_A_ROW = 2000  # random proposals in the default space fit a 4.5-bit budget about 3% of the time
TRIAL_RUN_ATTR = "mlflow_run_id"  # Optuna user attribute of a logged trial: its MLflow run id


def trial_metrics(cost: Cost, quality: float | None = None) -> dict[str, float]:
    """What a trial's MLflow child run records as metrics."""
    metrics = {"effective_bits": cost.effective_bits, "size_bytes": cost.size_bytes, "size_mb": cost.size_bytes / 1e6}
    if cost.latency_us is not None:
        metrics["latency_ms"] = cost.latency_us / 1e3
    if quality is not None:
        metrics["quality"] = quality
    return metrics


def objective_values(quality: float, cost: Cost) -> tuple[float, ...]:
    """What a trial tells its study: the MLflow metrics :func:`~autoq.engine.strategy.study_objectives` names, in its order."""
    metrics = trial_metrics(cost, quality)
    return tuple(metrics[name] for name in study_objectives(cost.latency_us is not None))


def trial_tags(uniform: bool, cost_model: CostModel, error: str | None = None, **extra: str) -> dict[str, str]:
    """What a trial's MLflow child run records as tags (the error, when it failed)."""
    tags = {"uniform": str(uniform).lower(), "feasible": "true", **extra}
    if cost_model.latency_source:
        tags["latency_source"] = cost_model.latency_source
    if error:
        tags["error"] = error[:5000]
    return tags


def make_point(number: int, assignment: Assignment, quality: float, cost: Cost, uniform: bool, run_id: str | None, cost_model: CostModel) -> Point:
    """One evaluated trial as a frontier candidate."""
    return Point(number, assignment, quality, cost.effective_bits, cost.size_bytes, uniform, run_id, cost.latency_us, cost_model.latency_source)


@dataclass
class Pending:
    """A proposal handed out for evaluation and not yet recorded."""

    proposal: Proposal
    cost: Cost
    violation: float
    attempt: int  # 1 for the first evaluation of this assignment, 2 for its first retry, ...
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))  # handed out: its MLflow run's start time


class TrialBook:
    """Counts and records the trials of one search; not thread-safe (one driver owns it)."""

    def __init__(
        self,
        strategy: Strategy,
        cost_model: CostModel,
        budget: Budget,
        uniform: Iterable[Assignment],
        n_trials: int,
        max_retries: int,
        tracker: MlflowTracker | None,
        backend: str = "optuna",
    ) -> None:
        self.strategy, self.cost_model, self.budget = strategy, cost_model, budget
        self.backend = backend  # tagged on every child run, whoever logs it (a worker or this driver)
        self.uniform = set(uniform)
        self.n_trials, self.max_retries, self.tracker = n_trials, max_retries, tracker
        self.bar: tqdm | None = None  # shown on one once the kept trials are restored (`show_on`)
        self.points: list[Point] = []
        self.failures: Counter[Assignment] = Counter()  # failed evaluations per assignment, retries included
        self.n_failed = 0  # assignments that failed max_retries + 1 times: they count as evaluated
        self.n_infeasible = 0
        self.first_error: str | None = None  # of this run's evaluations, for the message when every trial failed
        self.in_flight: dict[int, Pending] = {}
        self.asked: int | None = None  # a trial asked for and not yet told nor in flight
        self._seen: dict[Assignment, Point] = {}  # the first point of each assignment: later proposals of it repeat it
        self._in_a_row = 0
        self.exhausted = False  # the strategy had nothing new to propose: the search ends short of n_trials

    # -- state restored from a stored study (resume) --------------------------------------------
    def restore(self, points: Iterable[Point], failures: Counter[Assignment], n_infeasible: int, n_failed: int) -> None:
        """Take over finished trials of an interrupted search; log to MLflow those it lacks. ``n_failed``: the stored
        trials that failed for good (no retry followed), as the study tells them: counted from ``failures`` under this
        session's ``max_retries``, changed on a resume, 3 evaluations of one assignment (2 retries) were 3 failed
        trials, or a failure for good none."""
        for p in points:
            if p.run_id is None and self.tracker:
                cost = self.cost_model.cost(p.assignment)
                tags = trial_tags(p.uniform, self.cost_model, restored="true")
                p = replace(p, run_id=self.tracker.log_trial(p.trial, trial_metrics(cost, p.quality), tags, p.assignment))
            self.points.append(p)
            self._seen.setdefault(p.assignment, p)
        self.failures.update(failures)
        self.n_failed = n_failed
        self.n_infeasible += n_infeasible

    def show_on(self, bar: tqdm) -> None:
        """Count this session's trials on ``bar`` (made with the kept ones as its ``initial``), their best so far shown."""
        self.bar = bar
        self._postfix(refresh=True)

    # -- counting ---------------------------------------------------------------------------------
    @property
    def n_done(self) -> int:
        return len(self.points) + self.n_failed

    def done(self) -> bool:
        if self.n_done >= self.n_trials:
            return True
        if self.in_flight or not self.exhausted:
            return False
        # the strategy had run out: asked again, since a trial that failed may have been queued for a retry
        self.exhausted = bool(getattr(self.strategy, "exhausted", False))
        return self.exhausted

    def unfinished(self) -> set[int]:
        """The trials a stopped search leaves RUNNING in its study: those in flight, and one just asked for."""
        return set(self.in_flight) | ({self.asked} if self.asked is not None else set())

    def wanted(self) -> int:
        """How many more proposals should be handed out now (in-flight ones count as done)."""
        return self.n_trials - self.n_done - len(self.in_flight)

    # -- ask / record -----------------------------------------------------------------------------
    def next(self, deadline: float | None = None) -> Pending | None:
        """The next within-budget proposal that needs an evaluation, or ``None`` once enough are out (or ``deadline``,
        a ``time.perf_counter()``, has passed: a sampler proposing only repeats or over-budget assignments, which
        take no evaluation, kept this loop past ``--timeout`` for good).

        Over-budget proposals are told as infeasible here; assignments with a known
        quality are recorded at once without evaluating them again. The bar's ``over_budget`` is set once a call: set
        only when a trial finished, the closed bar was short of those after the last one.
        """
        infeasible = self.n_infeasible
        try:
            return self._next(deadline)
        finally:
            if self.n_infeasible != infeasible:
                self._postfix()

    def _next(self, deadline: float | None) -> Pending | None:
        while self.wanted() > 0:
            if deadline is not None and time.perf_counter() > deadline:
                return None
            with deferred_interrupts():  # Optuna's ask reads the study and writes a new trial: never cut short
                self.exhausted = bool(getattr(self.strategy, "exhausted", False))
                if self.exhausted:
                    return None
                proposal = self.strategy.ask()
                self.asked = proposal.number  # a Ctrl-C held over the ask comes now: the stopped search fails it
            cost = self.cost_model.cost(proposal.assignment)
            violation = self.budget.violation(cost)
            if violation > 0:
                with deferred_interrupts():  # an Optuna storage write cut in half would lock SQLite
                    self.strategy.tell(proposal, None, violation)
                    self.asked = None
                self.n_infeasible += 1
                self._in_a_row += 1
                if self._in_a_row > MAX_OVER_BUDGET_IN_A_ROW:
                    raise AutoqError(f"the sampler proposed {self._in_a_row} over-budget assignments in a row; try a larger budget or another --sampler")
                continue
            self._in_a_row = 0
            failed = self.failures[proposal.assignment]
            pending = Pending(proposal, cost, violation, failed + 1)
            self.in_flight[proposal.number] = pending
            self.asked = None
            known = self._seen.get(proposal.assignment)
            if known is not None:
                self.record(proposal.number, known.quality, None)
            elif failed > self.max_retries:  # it failed for good: proposed again, it counts as failed again, unevaluated
                self.record(proposal.number, math.nan, f"not evaluated again: this assignment failed {failed} times")
            else:
                return pending
        return None

    def record(self, number: int, quality: float, error: str | None, run_id: str | None = None) -> str | None:
        """Record the evaluation of in-flight trial ``number``: log it (unless a worker did), tell, retry or count.

        Returns the MLflow run id of the trial (``None`` without tracking)."""
        with deferred_interrupts():  # the MLflow and Optuna writes of one trial are never cut in half
            return self._record(number, quality, error, run_id)

    def _record(self, number: int, quality: float, error: str | None, run_id: str | None) -> str | None:
        pending = self.in_flight[number]  # in flight until logged: a store that fails now leaves it for the stop to release
        proposal, cost = pending.proposal, pending.cost
        is_uniform = proposal.assignment in self.uniform
        first = self._seen.get(proposal.assignment)
        repeat_of = first.trial if first is not None and error is None else None  # a sampler proposed it again
        if run_id is None and self.tracker:
            extra = {"repeat_of": str(repeat_of)} if repeat_of is not None else {}
            tags = trial_tags(is_uniform, self.cost_model, error, attempt=str(pending.attempt), backend=self.backend, **extra)
            run_id = self.tracker.log_trial(number, trial_metrics(cost, None if error else quality), tags, proposal.assignment,
                                            "FAILED" if error else "FINISHED", start_ms=pending.started_ms)
        del self.in_flight[number]
        if run_id is not None:  # the link an Optuna user follows from a trial (the run's autoq.trial tag is the other way)
            self.strategy.note(proposal, TRIAL_RUN_ATTR, run_id)
        if error is not None:
            # said once, as it happens (Optuna logs each failed trial), later ones counted; not a repeat of one that failed
            # for good (a resume's sampler proposing it again), which is not run, nor retried
            if self.first_error is None and pending.attempt <= self.max_retries + 1:
                retried = f"retries its assignment up to {self.max_retries} time(s), then counts it" if self.max_retries else "counts its assignment"
                kept = "; each failed trial's error is its MLflow run's 'error' tag" if self.tracker else ""
                warn(f"trial {number} failed ({error}); the search goes on: it {retried} failed (the result's n_failed), and counts "
                     f"later failures without a word{kept}")
            self.first_error = self.first_error or error
            self.strategy.tell(proposal, None, pending.violation, error=error)
            self.failures[proposal.assignment] += 1
            if self.failures[proposal.assignment] <= self.max_retries:
                self.strategy.retry(proposal)  # retried as a new trial
            else:
                self.n_failed += 1
                self._progress(1)
            return run_id
        if repeat_of is not None:
            self.strategy.note(proposal, "autoq.repeat_of", repeat_of)  # before the tell: Optuna's attributes of a told trial are fixed
        self.strategy.tell(proposal, objective_values(quality, cost), pending.violation)
        point = make_point(number, proposal.assignment, quality, cost, is_uniform, run_id, self.cost_model)
        self._seen.setdefault(proposal.assignment, point)
        self.points.append(point)
        self._progress(1)
        return run_id

    def _progress(self, n: int) -> None:
        if self.bar is None or n == 0:
            return
        self._postfix()  # then drawn by the step, when tqdm's interval has passed: a forced redraw a trial flooded a log
        self.bar.update(n)

    def _postfix(self, refresh: bool = False) -> None:
        if self.bar is not None and self.points:
            # the counts only once there are some: 'failed=0, over_budget=0' cut the bar's end off at 80 columns
            counts = {key: n for key, n in (("over_budget", self.n_infeasible), ("failed", self.n_failed)) if n}
            self.bar.set_postfix(best=f"{max(p.quality for p in self.points):.4f}", **counts, refresh=refresh)
