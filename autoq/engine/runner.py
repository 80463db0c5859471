"""The search loop: validate, seed with uniform baselines, ask/evaluate/tell, log, summarise.

Every proposal's cost is computed before evaluation; over-budget proposals are
told to the strategy as infeasible and never cost an evaluation pass. Finished
trials live in the Optuna storage and MLflow as they finish, so an interrupted
search loses nothing that was done.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tqdm.auto import tqdm

from autoq.budget import Budget, check_latency_config, parse_budget
from autoq.builtin.workload import Workload
from autoq.choice import Assignment
from autoq.cost import CostModel
from autoq.engine.result import Point, SearchResult, pareto_front
from autoq.engine.seeds import fill_seeds, uniform_seeds
from autoq.engine.strategy import make_strategy, sampler_factory
from autoq.errors import AutoqError
from autoq.evaluate import QuantCache, check_finite_batches
from autoq.latency import latency_model
from autoq.model import check_finite_weights, find_layers
from autoq.quiet import quiet_logs
from autoq.search_spaces import load_preset
from autoq.space import SearchSpace
from autoq.tracking import DEFAULT_TRACKING_URI, MlflowTracker, sqlite_path


@dataclass(frozen=True)
class SearchConfig:
    """Everything about a search except the model and its data."""

    budget: str | float | Budget = "4.5bits"
    space: str = "default"
    n_trials: int = 100
    seed: int = 0
    sampler: str = "tpe"
    n_fill_seeds: int = 16  # budget-filling mixes enqueued after the uniform baselines
    skip: tuple[str, ...] = ()
    pins: tuple[tuple[str, str], ...] = ()
    tracking_uri: str | None = DEFAULT_TRACKING_URI  # None: do not log to MLflow
    experiment: str = "autoq"
    study_name: str | None = None
    storage: str | None = "auto"  # "auto": optuna.db beside the MLflow store; None: in memory
    timeout: float | None = None  # seconds; stop asking for new trials after this
    progress: bool = True
    device: str | None = None  # latency source: a preset ("h100": roofline estimate) or a measured table JSON
    batch: int = 1  # activation rows per forward for latency (tokens), a batch the table measured

    def __post_init__(self) -> None:
        if self.n_trials < 1:
            raise AutoqError(f"n_trials must be at least 1, got {self.n_trials}")
        check_latency_config(parse_budget(self.budget), self.device)
        latency_model(self.device, self.batch)  # an unknown device or unmeasured batch fails here, before any loading
        sampler_factory(self.sampler)  # an unknown name fails here, before any loading
        if isinstance(self.pins, Mapping):
            object.__setattr__(self, "pins", tuple(self.pins.items()))
        object.__setattr__(self, "skip", tuple(self.skip))

    def resolved_storage(self) -> str | None:
        if self.storage != "auto":
            return self.storage
        db = sqlite_path(self.tracking_uri) if self.tracking_uri else None
        folder = db.parent if db is not None else Path(".")
        return f"sqlite:///{folder / 'optuna.db'}"


def default_study_name(model_name: str, budget: Budget) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"autoq-{model_name}-{budget.text}-{stamp}")


@dataclass(frozen=True)
class Prepared:
    """A validated search problem: the space, its costs and the budget inside its range."""

    space: SearchSpace
    cost_model: CostModel
    budget: Budget


def prepare(workload: Workload, config: SearchConfig) -> Prepared:
    """All the checks that need no evaluation, in the order a user would fix them."""
    budget = parse_budget(config.budget)
    layers = find_layers(workload.model, tuple(workload.skip) + tuple(config.skip))
    check_finite_weights(workload.model, layers)
    check_finite_batches(workload.calibration)
    space = SearchSpace.build(load_preset(config.space), layers, dict(config.pins))
    cost_model = CostModel.for_model(workload.model, layers, latency_model(config.device, config.batch))
    budget.check_feasible(*space.extremes(cost_model, budget.kind), cost_model.latency_source)
    return Prepared(space, cost_model, budget)


def run_search(workload: Workload, config: SearchConfig) -> SearchResult:
    """Search ``workload`` under ``config`` and return the evaluated points and frontier."""
    with quiet_logs():
        return _run_search(workload, config)


def _run_search(workload: Workload, config: SearchConfig) -> SearchResult:
    start = time.perf_counter()
    problem = prepare(workload, config)
    space, cost_model, budget = problem.space, problem.cost_model, problem.budget

    t0 = time.perf_counter()
    reference = float(workload.evaluate(workload.model))
    eval_seconds = time.perf_counter() - t0
    if not math.isfinite(reference):
        raise AutoqError(f"the quality metric of the unquantized model is {reference}; check the evaluation data")

    study_name = config.study_name or default_study_name(workload.name, budget)
    storage = config.resolved_storage()
    strategy = make_strategy(config.sampler, space, config.seed, study_name, storage)
    uniform = uniform_seeds(space, cost_model, budget)
    fills = fill_seeds(space, cost_model, budget, min(config.n_fill_seeds, max(0, config.n_trials - len(uniform))), config.seed)
    strategy.seed(uniform + fills)
    uniform_set = set(uniform)

    tracker = _start_tracking(workload, config, space, budget, study_name, storage)
    parent_id = tracker.parent_id if tracker else None
    if tracker and cost_model.latency_source:
        tracker.client.set_tag(parent_id, "latency_source", cost_model.latency_source)

    cache = QuantCache(workload.model)
    points: list[Point] = []
    seen: dict[Assignment, float] = {}
    n_infeasible = n_failed = in_a_row = 0
    max_in_a_row = 2000  # random proposals in the default space fit a 4.5-bit budget about 3% of the time
    bar = tqdm(total=config.n_trials, desc="autoq search", unit="trial", disable=not config.progress, dynamic_ncols=True)
    status = "FAILED"
    try:
        while len(points) + n_failed < config.n_trials:
            if config.timeout is not None and time.perf_counter() - start > config.timeout:
                break
            proposal = strategy.ask()
            cost = cost_model.cost(proposal.assignment)
            violation = budget.violation(cost)
            if violation > 0:
                strategy.tell(proposal, None, violation)
                n_infeasible += 1
                in_a_row += 1
                if in_a_row > max_in_a_row:
                    raise AutoqError(f"the sampler proposed {in_a_row} over-budget assignments in a row; try a larger budget or another --sampler")
                continue
            in_a_row = 0
            quality, error = seen.get(proposal.assignment), None
            if quality is None:
                quality, error = _evaluate(workload, cache, proposal.assignment)
            is_uniform = proposal.assignment in uniform_set
            metrics = {"effective_bits": cost.effective_bits, "size_bytes": cost.size_bytes, "size_mb": cost.size_bytes / 1e6}
            if cost.latency_us is not None:
                metrics["latency_ms"] = cost.latency_us / 1e3
            if error is None:
                seen[proposal.assignment] = metrics["quality"] = quality
            run_id = None
            if tracker:
                tags = {"uniform": str(is_uniform).lower(), "feasible": "true"}
                if cost_model.latency_source:
                    tags["latency_source"] = cost_model.latency_source
                if error:
                    tags["error"] = error[:5000]
                run_id = tracker.log_trial(proposal.number, metrics, tags, proposal.assignment, "FAILED" if error else "FINISHED")
            if error is not None:
                n_failed += 1
                strategy.tell(proposal, None, violation, error=error)
            else:
                strategy.tell(proposal, (quality, cost.effective_bits), violation)
                points.append(Point(proposal.number, proposal.assignment, quality, cost.effective_bits, cost.size_bytes, is_uniform, run_id, cost.latency_us, cost_model.latency_source))
            bar.update(1)
            if points:
                bar.set_postfix(best=f"{max(p.quality for p in points):.4f}", over_budget=n_infeasible)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        bar.close()
        if not points and status == "FINISHED":
            status = "FAILED"
        frontier = pareto_front(points)
        if tracker:
            tracker.finish(points, frontier, _summary_metrics(points, reference, eval_seconds, n_infeasible, n_failed), budget.value if budget.kind == "bits" else None, status,
                           latency_budget_ms=budget.value if budget.is_latency else None)
    if not points:
        raise AutoqError(f"every trial failed ({n_failed}); the first error is in MLflow run tags and the Optuna study {study_name!r}")
    return SearchResult(
        budget=budget, metric=workload.metric, reference_quality=reference, points=tuple(points), frontier=tuple(frontier),
        study_name=study_name, storage=storage, tracking_uri=config.tracking_uri, parent_run_id=parent_id,
        eval_seconds=eval_seconds, wall_seconds=time.perf_counter() - start, n_infeasible=n_infeasible, n_failed=n_failed,
    )


def _evaluate(workload: Workload, cache: QuantCache, assignment: Assignment) -> tuple[float, str | None]:
    """Quality of ``assignment``, or the error that stopped it: a failing trial must not stop the search."""
    try:
        with cache.apply(assignment) as model:
            quality = float(workload.evaluate(model))
    except Exception as exc:
        return math.nan, f"{type(exc).__name__}: {exc}"
    return quality, None if math.isfinite(quality) else f"quality is {quality}"


def _start_tracking(workload: Workload, config: SearchConfig, space: SearchSpace, budget: Budget, study_name: str, storage: str | None) -> MlflowTracker | None:
    """The MLflow parent run of this search, or ``None`` when tracking is off."""
    if not config.tracking_uri:
        return None
    tracker = MlflowTracker(config.tracking_uri, config.experiment)
    parent_id = tracker.start(
        study_name,
        params={
            "budget": budget.text, "budget_kind": budget.kind, "budget_value": budget.value,
            "model": workload.name, "space": config.space, "seed": config.seed, "sampler": config.sampler,
            "n_trials": config.n_trials, "n_layers": len(space.layers), "metric": workload.metric[:500],
            "data_fingerprint": workload.data_fingerprint, "optuna_storage": storage or "memory",
            "study_name": study_name, "device": config.device or "none", "batch": config.batch,
        },
        tags={"autoq.kind": "search", "autoq.model": workload.name},
    )
    tracker.client.log_text(parent_id, _space_json(space), "search_space.json")
    return tracker


def _summary_metrics(points: list[Point], reference: float, eval_seconds: float, n_infeasible: int, n_failed: int) -> dict[str, float]:
    metrics = {"reference_quality": reference, "eval_seconds": eval_seconds, "n_evaluated": len(points), "n_over_budget": n_infeasible, "n_failed": n_failed}
    if points:
        best = max(points, key=lambda p: p.quality)
        metrics.update(best_quality=best.quality, best_effective_bits=best.effective_bits)
        if best.latency_ms is not None:
            metrics["best_latency_ms"] = best.latency_ms
        uniform = [p for p in points if p.uniform]
        if uniform:
            metrics["best_uniform_quality"] = max(p.quality for p in uniform)
            metrics["gain_over_uniform"] = best.quality - metrics["best_uniform_quality"]
    return metrics


def _space_json(space: SearchSpace) -> str:
    import json

    return json.dumps({layer.name: {"shape": [layer.out_features, layer.in_features], "options": [c.name for c in opts]} for layer, opts in zip(space.layers, space.options)}, indent=1)
