"""Search strategies speak ask/tell, like Optuna: ``seed`` known-good assignments,
``ask`` for the next one, ``tell`` its objectives. One registry holds them.
"""

from __future__ import annotations

import itertools
import random
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import optuna

from autoq.budget import Budget
from autoq.choice import Assignment
from autoq.cost import CostModel
from autoq.engine.greedy import greedy_seeds
from autoq.engine.ilp import ilp_seeds, raise_seeds
from autoq.engine.knapsack import Knapsack, random_feasible
from autoq.engine.seeds import fill_seeds, uniform_seeds
from autoq.errors import AutoqError
from autoq.space import SearchSpace

OBJECTIVES = {"quality": "maximize", "effective_bits": "minimize"}
LATENCY_OBJECTIVE = {"latency_ms": "minimize"}  # the third objective of a search with a latency source (--device)
CONSTRAINT = "budget"


def study_objectives(with_latency: bool) -> dict[str, str]:
    """Optuna's objectives (metric name: direction), in the order a trial's values are told.

    They are the MLflow metric names of a trial, so the study's Pareto front
    (``study.best_trials``, the dashboard's plot) is autoq's frontier.
    """
    return {**OBJECTIVES, **(LATENCY_OBJECTIVE if with_latency else {})}


@dataclass(frozen=True)
class Proposal:
    handle: Any  # strategy-specific (an Optuna trial)
    number: int
    assignment: Assignment


class Strategy(Protocol):
    def seed(self, assignments: Sequence[Assignment]) -> None: ...
    def retry(self, proposal: Proposal) -> None: ...
    def note(self, proposal: Proposal, key: str, value: object) -> None: ...
    def ask(self) -> Proposal: ...
    def tell(self, proposal: Proposal, values: tuple[float, ...] | None, violation: float, error: str | None = None) -> None: ...


class OptunaStrategy:
    """A multi-objective Optuna study: maximise quality, minimise effective bits and, with a device, latency.

    Each layer is a categorical parameter named after the layer, valued by the
    choice name. The budget is Optuna's constraint (``<= 0`` feasible), set with
    ``trial.set_constraint`` so constraint-aware samplers learn where it lies.
    Over-budget proposals are not evaluated: they are told as pruned with their
    constraint value, which TPE ranks by violation alone; NSGA-II (Optuna 5) breeds from completed trials only,
    so it learns the budget from the evaluated ones, which all fit it.
    """

    def __init__(
        self, space: SearchSpace, sampler: optuna.samplers.BaseSampler, study_name: str, storage: str | None, resume: bool = False,
        with_latency: bool = False,
    ) -> None:
        self.space = space
        self._by_name = [{c.name: c for c in opts} for opts in space.options]
        objectives = study_objectives(with_latency)
        try:
            self.study = optuna.create_study(
                study_name=study_name,
                storage=storage,
                sampler=sampler,
                directions=list(objectives.values()),
                load_if_exists=resume,  # resume: continue the stored study (see autoq.engine.resume)
            )
        except optuna.exceptions.DuplicatedStudyError:
            raise AutoqError(f"a study named {study_name!r} already exists in {storage}; choose another name (--study-name, or "
                             "study_name= in Python), or resume it (--resume NAME, resume=True)") from None
        self.n_objectives = _stored_objectives(self.study, objectives)
        with warnings.catch_warnings():  # experimental in Optuna, but what the dashboard shows
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.study.set_metric_names(list(objectives)[: self.n_objectives])

    def seed(self, assignments: Sequence[Assignment]) -> None:
        for a in assignments:
            self.study.enqueue_trial(_params(a), user_attrs={"seeded": True})

    def note(self, proposal: Proposal, key: str, value: object) -> None:
        """Record ``key`` on the proposal's trial (a user attribute: Optuna's dashboard and ``trials_dataframe`` show it)."""
        proposal.handle.set_user_attr(key, value)

    def retry(self, proposal: Proposal) -> None:
        """Enqueue a failed proposal again: the retry names the trial it retries (``autoq.retry_of``, as a resume's
        retries do) and is ``seeded`` only if that trial was (a sampler's proposal retried looked like a seed)."""
        seeded = bool(proposal.handle.user_attrs.get("seeded"))  # the Optuna trial asked for
        self.study.enqueue_trial(_params(proposal.assignment), user_attrs={"autoq.retry_of": proposal.number, **({"seeded": True} if seeded else {})})

    def ask(self) -> Proposal:
        trial = self.study.ask()
        picks = {}
        for layer, options in zip(self.space.layers, self._by_name):
            picks[layer.name] = options[trial.suggest_categorical(layer.name, list(options))]
        return Proposal(trial, trial.number, Assignment(tuple(picks.items())))

    def tell(self, proposal: Proposal, values: tuple[float, float] | None, violation: float, error: str | None = None) -> None:
        trial = proposal.handle
        trial.set_constraint(CONSTRAINT, violation)
        if error is not None:
            trial.set_user_attr("error", error)
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        elif values is None:
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            self.study.tell(trial, list(values[: self.n_objectives]))


def _stored_objectives(study: optuna.Study, objectives: dict[str, str]) -> int:
    """How many of ``objectives`` a (possibly resumed) study has: all of them, or the first two
    for a search with a device stored before latency became an Optuna objective."""
    stored = [d.name.lower() for d in study.directions]
    if stored != list(objectives.values())[: len(stored)] or len(stored) < len(OBJECTIVES):
        wanted = ", ".join(f"{name} ({direction})" for name, direction in objectives.items())
        raise AutoqError(f"study {study.study_name!r} optimises {len(stored)} objective(s) {stored}, not {wanted}; "
                         "it was not started by this autoq search: resume it with its own settings, or choose another --study-name")
    return len(stored)


def _tpe(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=10)


def _nsga2(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=20)


def _random(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


SAMPLERS: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {"tpe": _tpe, "nsga2": _nsga2, "random": _random}


def sampler_factory(sampler: str | optuna.samplers.BaseSampler) -> Callable[[int], optuna.samplers.BaseSampler]:
    """Registry lookup: ``tpe`` (default), ``nsga2`` or ``random``; an unknown name is a clear error.

    A sampler instance (the Python API's ``sampler=optuna.samplers.GPSampler(seed=1)``) is used as given, with
    its own seed: it must handle multi-objective studies (2 objectives, 3 with a latency source)."""
    if isinstance(sampler, optuna.samplers.BaseSampler):
        return lambda seed: sampler
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise AutoqError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}, "
                         "or pass an optuna.samplers.BaseSampler instance (Python API)")
    return SAMPLERS[sampler]


def sampler_name(sampler: str | optuna.samplers.BaseSampler) -> str:
    """How a search records its sampler (MLflow param, stored settings): the registry name, or an instance's class."""
    return sampler if isinstance(sampler, str) else type(sampler).__name__


def make_strategy(
    sampler: str | optuna.samplers.BaseSampler, space: SearchSpace, seed: int, study_name: str, storage: str | None, resume: bool = False,
    with_latency: bool = False,
) -> Strategy:
    """The sampler's strategy as an Optuna study over ``space`` (``resume``: load the stored study of that name;
    ``with_latency``: latency is the third objective)."""
    return OptunaStrategy(space, sampler_factory(sampler)(seed), study_name, storage, resume, with_latency)


class QueueStrategy(OptunaStrategy):
    """Proposals from a fixed source (ILP, greedy, random) instead of a sampler.

    Each proposal is enqueued into an Optuna study first, so the trials are stored,
    shown by the dashboard and told like any other. When ``source`` runs dry it
    repeats its first proposal, which the search loop recognises and does not evaluate again.
    A resumed study skips the proposals it already holds: the source starts from its beginning again.
    """

    def __init__(
        self, space: SearchSpace, source: Iterator[Assignment], study_name: str, storage: str | None, resume: bool = False, with_latency: bool = False
    ) -> None:
        super().__init__(space, optuna.samplers.RandomSampler(seed=0), study_name, storage, resume, with_latency)
        self._source = source
        self._first: Assignment | None = None
        finished = [t for t in self.study.get_trials(deepcopy=False) if t.state.is_finished()]
        self._stored = {frozenset(t.params.items()) for t in finished}

    def ask(self) -> Proposal:
        if not self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
            nxt = self._next_new()
            if nxt is None:
                nxt = self._first
            if nxt is not None:
                self.seed([nxt])
        return super().ask()

    def _next_new(self) -> Assignment | None:
        for assignment in self._source:
            self._first = self._first or assignment
            if frozenset((name, choice.name) for name, choice in assignment.items()) not in self._stored:
                return assignment
        return None


def _params(assignment: Assignment) -> dict[str, str]:
    return {name: choice.name for name, choice in assignment.items()}


@dataclass(frozen=True)
class StrategyContext:
    """What a strategy factory may use; ``scores`` (per layer, per option of ``space``) come from a sensitivity table."""

    space: SearchSpace
    cost_model: CostModel
    budget: Budget
    sampler: str | optuna.samplers.BaseSampler
    seed: int
    study_name: str
    storage: str | None
    n_trials: int
    n_fill_seeds: int
    scores: tuple[tuple[float, ...], ...] | None = None
    resume: bool = False
    max_uniform_seeds: int | None = None

    def knapsack(self) -> Knapsack:
        return Knapsack.build(self.space, self.cost_model, self.budget, self.scores)

    @property
    def with_latency(self) -> bool:
        """A latency source (--device) makes latency the study's third objective."""
        return self.cost_model.latency_source is not None


# factory(ctx) -> (strategy, seeds to enqueue before it runs, the uniform assignments to flag as baselines when evaluated)
StrategyFactory = Callable[[StrategyContext], tuple[Strategy, list[Assignment], list[Assignment]]]


def _optuna_strategy(ctx: StrategyContext) -> tuple[Strategy, list[Assignment], list[Assignment]]:
    """The sampler (TPE / NSGA-II / random) after the uniform baselines and budget-filling seeds; with a
    sensitivity table the fill seeds come from it instead of random mixes (see `_table_seeds`)."""
    strategy = make_strategy(ctx.sampler, ctx.space, ctx.seed, ctx.study_name, ctx.storage, ctx.resume, ctx.with_latency)
    uniform = uniform_seeds(ctx.space, ctx.cost_model, ctx.budget, ctx.max_uniform_seeds)
    count = min(ctx.n_fill_seeds, max(0, ctx.n_trials - len(uniform)))
    if ctx.scores is None:
        extra = fill_seeds(ctx.space, ctx.cost_model, ctx.budget, count, ctx.seed)
    else:
        extra = _table_seeds(ctx, uniform, count)
    return strategy, uniform + extra, uniform


def _table_seeds(ctx: StrategyContext, uniform: list[Assignment], count: int) -> list[Assignment]:
    """``count`` distinct seeds from the sensitivity table, none of them a uniform baseline: a third raise
    the dearest uniform baseline's most sensitive layers (ILP above that floor, exact then noisy), the
    ILP budget sweep spans the frontier, and greedy allocations take the last eighth."""
    problem = ctx.knapsack()
    seeds: list[Assignment] = []

    def take(candidates: Sequence[Assignment], limit: int) -> None:
        fresh = [a for a in candidates if a not in uniform and a not in seeds]
        seeds.extend(fresh[: max(0, limit - len(seeds))])

    if uniform:
        floor = [opts.index(uniform[-1][layer.name]) for layer, opts in zip(ctx.space.layers, ctx.space.options)]
        take(raise_seeds(problem, floor, count // 3 + 1, ctx.seed), count // 3)
    n_greedy = count // 8
    take(ilp_seeds(problem, count, ctx.seed), count - n_greedy)
    take(greedy_seeds(problem, count), count)
    return seeds


def _queue(ctx: StrategyContext, source: Iterator[Assignment]) -> tuple[Strategy, list[Assignment], list[Assignment]]:
    """No seeds: the source alone; every uniform assignment within the budget is flagged as one if it proposes it."""
    uniform = uniform_seeds(ctx.space, ctx.cost_model, ctx.budget)
    return QueueStrategy(ctx.space, source, ctx.study_name, ctx.storage, ctx.resume, ctx.with_latency), [], uniform


def _ilp_strategy(ctx: StrategyContext) -> tuple[Strategy, list[Assignment], list[Assignment]]:
    """ILP solutions alone: a budget sweep plus noisy-score solves at the budget, one per trial."""
    return _queue(ctx, iter(ilp_seeds(ctx.knapsack(), ctx.n_trials, ctx.seed)))


def _greedy_strategy(ctx: StrategyContext) -> tuple[Strategy, list[Assignment], list[Assignment]]:
    """Greedy sensitivity-per-bit allocations alone, over a sweep of budgets."""
    return _queue(ctx, iter(greedy_seeds(ctx.knapsack(), ctx.n_trials)))


def _random_strategy(ctx: StrategyContext) -> tuple[Strategy, list[Assignment], list[Assignment]]:
    """Random search: uniformly random choices, repaired into the budget (the honest baseline)."""
    problem, rng = ctx.knapsack(), random.Random(ctx.seed)
    return _queue(ctx, (problem.assignment(random_feasible(problem, rng)) for _ in itertools.count()))


STRATEGIES: dict[str, StrategyFactory] = {"optuna": _optuna_strategy, "ilp": _ilp_strategy, "greedy": _greedy_strategy, "random": _random_strategy}
NEEDS_SCORES = frozenset({"ilp", "greedy"})


def strategy_factory(name: str) -> StrategyFactory:
    """Registry lookup for ``--strategy``: ``optuna`` (default), ``ilp``, ``greedy`` or ``random``."""
    if name not in STRATEGIES:
        raise AutoqError(f"unknown --strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]
