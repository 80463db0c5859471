"""Greedy sensitivity-per-bit allocation (the AIMET-AMP-style walk), a second seed source beside the ILP.

Start every layer at its cheapest option; repeatedly make the upgrade with the
largest drop in sensitivity per unit of extra cost that still fits the budget;
stop when none fits. Cheap, monotone, and often within a hair of the ILP.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from autoq.choice import Assignment
from autoq.engine.knapsack import Knapsack

_NEAR = 1e-9  # relative distance to the capacity within which a step's total is summed exactly


def greedy_allocate(problem: Knapsack, capacity: float | None = None) -> list[int] | None:
    """Option index per layer, or ``None`` when even the cheapest assignment is over ``capacity``; computed once per
    problem and capacity (every ILP solve asks for it as its yardstick: 53 walks at 8 capacities seeded a search)."""
    capacity = problem.capacity if capacity is None else capacity
    if capacity not in problem.memo:
        picks = _walk(problem, capacity)
        problem.memo[capacity] = None if picks is None else tuple(picks)
    found = problem.memo[capacity]
    return None if found is None else list(found)


def _walk(problem: Knapsack, capacity: float) -> list[int] | None:
    """`greedy_allocate`'s walk. Its running total is checked against the exact sum (as every check of a seed sums it)
    only within ``_NEAR`` of the capacity: an exact sum a step made the walk quadratic in layers in Python (93 s of a
    3,200-layer model's seeding); further off, a float sum's error (under 1e-12 of it) cannot cross the capacity."""
    scores = problem.score_matrix()
    costs = np.full(scores.shape, np.inf)
    for i, row in enumerate(problem.costs):
        costs[i, : len(row)] = row
    # cheapest option per layer, the least sensitive among equally cheap ones
    picks = np.lexsort((scores, costs), axis=1)[:, 0] if scores.size else np.zeros(0, dtype=int)
    rows = np.arange(len(picks))
    total = problem.total(picks)  # summed as every check of a seed sums it: a running total drifted an ulp past a budget
    if total > capacity:
        return None
    over = np.zeros(scores.shape, dtype=bool)  # upgrades whose exact total is over: totals only grow, so they stay over
    while True:
        gain = scores[rows, picks][:, None] - scores
        extra = costs - costs[rows, picks][:, None]
        # within a hair past the capacity too: the running total may sit an ulp above the exact sum, and an upgrade whose
        # exact total is the capacity itself was left out; the exact sum below decides each one that near
        reach = capacity + _NEAR * max(abs(capacity), abs(total))
        ok = (gain > 0) & (extra > 0) & (total + extra <= reach) & np.isfinite(scores) & ~over
        if not ok.any():
            break
        with np.errstate(invalid="ignore", divide="ignore"):  # inf - inf where a layer lacks an option: masked by ``ok``
            ratio = np.where(ok, gain / np.where(extra > 0, extra, 1.0), -np.inf)
        layer, option = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        upgraded = picks.copy()
        upgraded[layer] = option
        estimate = total + float(extra[layer, option])
        if estimate > capacity - _NEAR * max(abs(capacity), abs(estimate)):
            exact = problem.total(upgraded)
            if exact > capacity:  # within it by the estimate above, over by an ulp when summed
                over[layer, option] = True
                continue
            estimate = exact
        picks, total = upgraded, estimate
    return [int(p) for p in picks]


def greedy_seeds(problem: Knapsack, count: int) -> list[Assignment]:
    """Up to ``count`` distinct greedy allocations over a sweep of budgets from the target down."""
    return list(greedy_solutions(problem, count))


def greedy_solutions(problem: Knapsack, steps: int) -> Iterator[Assignment]:
    """`greedy_seeds`' allocations one at a time, as the greedy strategy's trials take them (all made up front,
    ``--n-trials 5000`` spent a ``--timeout`` of 5 s before its first trial)."""
    seen: set[Assignment] = set()
    for capacity in problem.sweep(steps):
        picks = greedy_allocate(problem, capacity)
        if picks is not None and (candidate := problem.assignment(picks)) not in seen:
            seen.add(candidate)
            yield candidate
