"""Integer linear program over per-layer choices (HAWQ-V3 style), solved with scipy's ``milp`` (HiGHS).

minimise   sum_l sum_k score[l, k] * x[l, k]
subject to sum_k x[l, k] = 1 for every layer l,   sum_{l,k} cost[l, k] * x[l, k] <= capacity,   x binary.

Additive per-layer sensitivity is an approximation, so one solution is not enough:
`ilp_seeds` solves at the target with the scores perturbed by log-normal noise
(robustness to estimation error) and at a sweep of budgets below the target,
giving distinct, diverse seeds near the frontier.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_array

from autoq.choice import Assignment
from autoq.engine.knapsack import Knapsack

SWEEP_STEPS = 8  # budgets in the sweep, evenly spaced from the target down to the cheapest assignment


def solve_ilp(problem: Knapsack, capacity: float | None = None, scores: np.ndarray | None = None, time_limit: float = 20.0) -> list[int] | None:
    """Option index per layer minimising the summed score within ``capacity``; ``None`` if nothing fits."""
    capacity = problem.capacity if capacity is None else capacity
    if capacity < problem.lowest:
        return None
    matrix = problem.score_matrix() if scores is None else scores
    index = [(layer, k) for layer, row in enumerate(problem.costs) for k in range(len(row))]
    n_layers = len(problem.costs)
    top = float(np.max(np.abs(matrix[np.isfinite(matrix)]))) or 1.0
    c = np.array([matrix[layer, k] / top for layer, k in index])
    rows = [layer for layer, _ in index]
    one_each = csr_array((np.ones(len(index)), (rows, np.arange(len(index)))), shape=(n_layers, len(index)))
    scale = max(abs(capacity), 1.0)
    cost = np.array([[problem.costs[layer][k] / scale for layer, k in index]])
    # the cost row is scaled to O(1); a hair of slack below the capacity absorbs HiGHS' feasibility tolerance
    constraints = [LinearConstraint(one_each, 1, 1), LinearConstraint(cost, -np.inf, capacity / scale - 1e-9)]
    result = milp(c, constraints=constraints, integrality=np.ones(len(index)), bounds=Bounds(0, 1), options={"time_limit": time_limit, "mip_rel_gap": 1e-6})
    if result.x is None:
        return None
    picks = [0] * n_layers
    for (layer, k), value in zip(index, result.x):
        if value > 0.5:
            picks[layer] = k
    if problem.total(picks) > capacity:  # never hand out an over-budget seed, whatever the solver's tolerance
        return None
    return picks


def ilp_seeds(problem: Knapsack, count: int, seed: int = 0, noise: float = 0.5, steps: int = SWEEP_STEPS) -> list[Assignment]:
    """Up to ``count`` distinct ILP solutions, most promising first: the budget itself, then noisy-score
    solves at the budget alternating with a fixed sweep of lower budgets. The order does not depend on
    ``count``, so a shorter list is a prefix of a longer one."""
    if count <= 0:
        return []
    base = problem.score_matrix()
    rng = np.random.default_rng(seed)
    capacities = problem.sweep(steps)
    seeds: list[Assignment] = []

    def add(picks: Sequence[int] | None) -> None:
        if picks is not None:
            candidate = problem.assignment(picks)
            if candidate not in seeds:
                seeds.append(candidate)

    add(solve_ilp(problem, capacities[0], base))
    for attempt in range(6 * count):
        if len(seeds) >= count:
            break
        noisy = base * rng.lognormal(0.0, noise, base.shape)  # drawn every attempt, so the sequence is fixed
        if attempt % 2 == 1 and attempt // 2 + 1 < len(capacities):
            add(solve_ilp(problem, capacities[attempt // 2 + 1], base))
        else:
            add(solve_ilp(problem, problem.capacity, noisy))
    return seeds[:count]
