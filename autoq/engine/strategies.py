"""Strategy factories and their registry (``--strategy``): each builds a `Strategy` for one search from a
`StrategyContext`, with the seeds to enqueue first. Built in: ``optuna`` (a sampler after uniform baselines and
budget-filling seeds, from a sensitivity table when there is one), ``ilp``, ``greedy`` and ``random`` alone.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import optuna

from autoq.budget import Budget
from autoq.choice import Assignment
from autoq.cost import CostModel
from autoq.engine.greedy import greedy_seeds, greedy_solutions
from autoq.engine.ilp import STALE_SOLVES, ilp_seeds, ilp_solutions, raise_seeds
from autoq.engine.knapsack import Knapsack, random_feasible
from autoq.engine.seeds import best_uniform, fill_seeds, uniform_seeds
from autoq.engine.strategy import QueueStrategy, Strategy, make_strategy
from autoq.registry import Registry, check_callable
from autoq.space import SearchSpace


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
    return strategy, _likely_best(ctx, uniform) + extra, uniform


def _likely_best(ctx: StrategyContext, uniform: list[Assignment]) -> list[Assignment]:
    """The uniform baselines to enqueue: all of them, or with fewer trials than baselines those of the most effective
    bits, where the best baseline likely is (cheapest first, the dearest were never evaluated and "the search is
    +0.0000 better" compared it with a poorer one). Bits, not the budget's own measure: under a latency budget the
    slowest format is not the best (int3's kernels are slower than int4's), so int3 was kept and int4 dropped."""
    if len(uniform) <= ctx.n_trials:
        return uniform
    ranked = sorted(uniform, key=lambda a: ctx.cost_model.cost(a).effective_bits)  # stable: equal bits keep the budget's order
    keep = set(ranked[-ctx.n_trials:])
    return [a for a in uniform if a in keep]


def _table_seeds(ctx: StrategyContext, uniform: list[Assignment], count: int) -> list[Assignment]:
    """``count`` distinct seeds from the sensitivity table, none of them a uniform baseline: a third raise
    the best uniform baseline's most sensitive layers (ILP above that floor, exact then noisy; `best_uniform`), the
    ILP budget sweep spans the frontier, and greedy allocations take the last eighth."""
    problem = ctx.knapsack()
    seeds: list[Assignment] = []

    def take(candidates: Sequence[Assignment], limit: int) -> None:
        fresh = [a for a in candidates if a not in uniform and a not in seeds]
        seeds.extend(fresh[: max(0, limit - len(seeds))])

    if uniform:
        base = best_uniform(uniform, ctx.cost_model)
        floor = [opts.index(base[layer.name]) for layer, opts in zip(ctx.space.layers, ctx.space.options)]
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
    return _queue(ctx, ilp_solutions(ctx.knapsack(), ctx.seed, tries=6 * ctx.n_trials, stale=STALE_SOLVES))  # solved as trials ask


def _greedy_strategy(ctx: StrategyContext) -> tuple[Strategy, list[Assignment], list[Assignment]]:
    """Greedy sensitivity-per-bit allocations alone, over a sweep of budgets."""
    return _queue(ctx, greedy_solutions(ctx.knapsack(), ctx.n_trials))  # allocated as trials ask


def _random_strategy(ctx: StrategyContext) -> tuple[Strategy, list[Assignment], list[Assignment]]:
    """Random search: uniformly random choices, repaired into the budget (the honest baseline)."""
    problem, rng = ctx.knapsack(), random.Random(ctx.seed)
    return _queue(ctx, (problem.assignment(random_feasible(problem, rng)) for _ in itertools.count()))


@dataclass(frozen=True)
class StrategyInfo:
    """A registered strategy: ``factory(ctx)``, and whether it solves on a sensitivity table (``ctx.scores`` is then
    never ``None``: ``--seed-from none`` is refused for it, and ``auto`` always computes the table)."""

    name: str
    factory: StrategyFactory
    needs_scores: bool = False
    reads_scores: bool = True  # False: a sensitivity table would go unread (random): ``auto`` computes none, a metric is refused
    uses_sampler: bool = True  # False: it proposes by itself (ilp, greedy, random): another --sampler than tpe is refused
    reads_seed_counts: bool = True  # False: it enqueues no uniform or fill seeds (ilp, greedy, random): counts given are refused
    uses_seed: bool = True  # False: it proposes the same whatever ctx.seed (greedy): another --seed is refused, and not compared on resume


_STRATEGIES: Registry[StrategyInfo] = Registry(
    "strategy", asked_as="--strategy",
    hint=" (a plug-in's strategy is known once its module is imported: --plugin MODULE on the command line)",
)


def register_strategy(name: str, needs_scores: bool = False, reads_scores: bool = True, uses_sampler: bool = True,
                      reads_seed_counts: bool = True, uses_seed: bool = True) -> Callable[[StrategyFactory], StrategyFactory]:
    """Decorator: make ``factory(ctx) -> (strategy, seeds, uniform)`` available as ``--strategy NAME``. ``strategy``
    keeps the `Strategy` protocol (`QueueStrategy` turns any iterator of assignments into one), ``seeds`` are
    enqueued before it runs, and the ``uniform`` assignments are flagged as baselines when evaluated.
    ``reads_scores=False`` / ``uses_sampler=False`` / ``reads_seed_counts=False`` / ``uses_seed=False``: it never reads
    ``ctx.scores`` / ``ctx.sampler`` / ``ctx.max_uniform_seeds`` and ``ctx.n_fill_seeds`` / ``ctx.seed``, so that a table
    is not computed for it and a ``--seed-from``, ``--sampler``, seed count or ``--seed`` given to it is refused rather
    than ignored."""
    if needs_scores and not reads_scores:
        raise ValueError(f"strategy {name!r}: needs_scores=True with reads_scores=False")
    def info(factory: StrategyFactory) -> StrategyInfo:
        check_callable("strategy", name, factory, ("ctx",))
        return StrategyInfo(name, factory, needs_scores, reads_scores, uses_sampler, reads_seed_counts, uses_seed)

    return _STRATEGIES.decorator(name, info)


def strategy_info(name: str) -> StrategyInfo:
    """Registry lookup for ``--strategy``: ``optuna`` (default), ``ilp``, ``greedy``, ``random`` or a registered name."""
    return _STRATEGIES.get(name)


def strategy_factory(name: str) -> StrategyFactory:
    """The factory of strategy ``name``."""
    return strategy_info(name).factory


def strategy_needs_scores(name: str) -> bool:
    """Whether strategy ``name`` solves on a sensitivity table (an unknown name: no; it is refused where it is used)."""
    info = _STRATEGIES.find(name)
    return info is not None and info.needs_scores


def strategy_reads_scores(name: str) -> bool:
    """Whether strategy ``name`` reads a sensitivity table's scores (an unknown name: yes; it is refused where it is used)."""
    info = _STRATEGIES.find(name)
    return info is None or info.reads_scores


def strategy_uses_sampler(name: str) -> bool:
    """Whether strategy ``name`` proposes with the Optuna sampler (an unknown name: yes)."""
    info = _STRATEGIES.find(name)
    return info is None or info.uses_sampler


def strategy_reads_seed_counts(name: str) -> bool:
    """Whether strategy ``name`` reads ``max_uniform_seeds`` and ``n_fill_seeds`` (an unknown name: yes)."""
    info = _STRATEGIES.find(name)
    return info is None or info.reads_seed_counts


def strategy_uses_seed(name: str) -> bool:
    """Whether strategy ``name`` proposes by ``ctx.seed`` (an unknown name: yes)."""
    info = _STRATEGIES.find(name)
    return info is None or info.uses_seed


def strategy_names() -> list[str]:
    """Every registered strategy's name, the built-ins first."""
    return _STRATEGIES.names()


register_strategy("optuna")(_optuna_strategy)
register_strategy("ilp", needs_scores=True, uses_sampler=False, reads_seed_counts=False)(_ilp_strategy)
register_strategy("greedy", needs_scores=True, uses_sampler=False, reads_seed_counts=False, uses_seed=False)(_greedy_strategy)
register_strategy("random", reads_scores=False, uses_sampler=False, reads_seed_counts=False)(_random_strategy)
