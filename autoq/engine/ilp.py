"""Integer linear program over per-layer choices (HAWQ-V3 style), solved with HiGHS (`autoq.engine.highs_mip`).

minimise   sum_l sum_k score[l, k] * x[l, k]
subject to sum_k x[l, k] = 1 for every layer l,   sum_{l,k} cost[l, k] * x[l, k] <= capacity,   x binary.

Additive per-layer sensitivity is an approximation, so one solution is not enough:
`ilp_seeds` solves at a sweep of budgets from the target down (seeds spread along
the whole frontier), then at the target with the scores perturbed by log-normal
noise (robustness to estimation error), giving distinct, diverse seeds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence

import numpy as np
from scipy.sparse import csr_array, vstack

from autoq.choice import Assignment
from autoq.engine.greedy import greedy_allocate
from autoq.engine.highs_mip import solve_binary
from autoq.engine.knapsack import Knapsack

SWEEP_STEPS = 8  # budgets in the sweep, evenly spaced from the target down to the cheapest assignment
# HiGHS takes a MIP solution over a constraint by up to 1e-6 of the scaled row as feasible: 600 units of 6e8 (bits of a
# 135M-parameter model) passed, and a better solution within the capacity lost to it. Tighter, and cut off (below) past them
TOLERANCES = {"mip_feasibility_tolerance": 1e-9, "primal_feasibility_tolerance": 1e-9}
STALE_SOLVES = 48  # the ILP strategy's noisy solves in a row that found nothing new, before it has no more to propose
CUT_TRIES = 8  # solves, each cutting off the last one's over-budget combination, before greedy's answer stands
WORST = 1e9  # a scaled score above this (1e9 times a good solution's whole loss) is as bad as any: HiGHS needs finite, moderate costs


def solve_ilp(problem: Knapsack, capacity: float | None = None, scores: np.ndarray | None = None, time_limit: float = 20.0,
              floor: Sequence[int] | None = None) -> list[int] | None:
    """Option index per layer minimising the summed score within ``capacity``; ``None`` if nothing fits.
    ``floor`` (an option index per layer) allows only options costing at least that option, per layer."""
    capacity = problem.capacity if capacity is None else capacity
    least = [0.0] * len(problem.costs) if floor is None else [row[k] for row, k in zip(problem.costs, floor)]
    index = [(layer, k) for layer, row in enumerate(problem.costs) for k in range(len(row)) if row[k] >= least[layer]]
    if capacity < sum(min(c for c in row if c >= lo) for row, lo in zip(problem.costs, least)):
        return None
    matrix = problem.score_matrix() if scores is None else scores
    n_layers = len(problem.costs)
    allowed = np.zeros(matrix.shape, dtype=bool)
    allowed[tuple(np.array(index).T)] = True
    objective, greedy = _objective(problem, matrix, capacity, allowed)
    if greedy is not None and not objective[np.arange(n_layers), greedy].any():
        return greedy  # every layer at its least score: nothing can beat it (a solver's tolerance could only lose)
    c = np.array([objective[layer, k] for layer, k in index])
    rows = [layer for layer, _ in index]
    one_each = csr_array((np.ones(len(index)), (rows, np.arange(len(index)))), shape=(n_layers, len(index)))
    scale = max(abs(capacity), 1.0)
    cost = np.array([[problem.costs[layer][k] / scale for layer, k in index]])
    # the cost row is scaled to O(1). Costs in whole units (bits, bytes) reach half a unit past the last whole one within
    # the capacity, clear of HiGHS' feasibility tolerance up to about 1e6 units; a solution it lets over is cut off below.
    # (A hair of slack below the capacity, as before, was most of a unit at 1e9 units: a total exactly on it was lost)
    whole = all(float(c).is_integer() for row in problem.costs for c in row)
    upper = (math.floor(capacity) + 0.5) / scale if whole else capacity / scale
    blocks, lower, uppers = [one_each, csr_array(cost)], [np.ones(n_layers), [-np.inf]], [np.ones(n_layers), [upper]]
    position = {pair: i for i, pair in enumerate(index)}
    options = {"time_limit": time_limit, "mip_rel_gap": 1e-6, **TOLERANCES}
    for _ in range(CUT_TRIES):
        x = solve_binary(c, vstack(blocks, format="csr"), np.concatenate(lower), np.concatenate(uppers), options)
        if x is None:
            break
        picks = [0] * n_layers
        for (layer, k), value in zip(index, x):
            if value > 0.5:
                picks[layer] = k
        if problem.total(picks) <= capacity:
            break
        # over by less than HiGHS' feasibility tolerance (about 1e-7 of the scaled row: units, where the capacity is 1e8
        # units or more): cut off this one combination, no other, and solve again (greedy's answer was often worse)
        cut = np.zeros((1, len(index)))
        cut[0, [position[(layer, k)] for layer, k in enumerate(picks)]] = 1.0
        blocks.append(csr_array(cut))
        lower.append([-np.inf])
        uppers.append([n_layers - 1])
    else:
        x = None
    if x is None:  # never hand out an over-budget seed, whatever the solver's tolerance
        return greedy if greedy is not None and problem.total(greedy) <= capacity else None
    if greedy is not None and _score(objective, greedy) < _score(objective, picks):
        return greedy  # the solver stopped within its gap above a solution greedy had found
    return picks


def _score(objective: np.ndarray, picks: Sequence[int]) -> float:
    return float(sum(objective[layer, k] for layer, k in enumerate(picks)))


def _objective(problem: Knapsack, matrix: np.ndarray, capacity: float, allowed: np.ndarray) -> tuple[np.ndarray, list[int] | None]:
    """The scores with each layer's least allowed one subtracted (a constant: one option per layer is picked) and
    scaled so that a good solution, the greedy one, scores 1; and that greedy solution (``None`` if greedy found none,
    or one that picks an option ``allowed`` leaves out: below a floor).

    HiGHS stops within an absolute gap of about 1e-6; scaled by the largest score (a 2-bit option's, thousands of
    times an 8-bit one's), the optimum was so small that solutions up to 9% worse passed as optimal. Where greedy
    scores 0, or is no solution, the smallest positive allowed score is the unit instead. Under a floor, the allowed
    options alone set the shift and the unit: scaled by options the floor rules out, the allowed ones all passed the
    cap (``WORST``) and tied, and HiGHS picked one 2.5x worse than the best."""
    finite = np.isfinite(matrix)
    usable = finite & allowed
    least = np.where(usable, matrix, np.inf).min(axis=1, initial=np.inf)
    shifted = matrix - np.where(np.isfinite(least), least, 0.0)[:, None]
    picks = greedy_allocate(problem, capacity)
    if picks is not None and not all(allowed[layer, k] for layer, k in enumerate(picks)):
        picks = None  # below the floor: not a solution of this problem, nor the measure of a good one
    good = _score(shifted, picks) if picks is not None else 0.0
    positive = shifted[usable & (shifted > 0)]
    scale = good if good > 0 else float(positive.min()) if positive.size else 1.0
    with np.errstate(over="ignore"):  # a hand-edited table's 1e306 over a unit of 1e-5 overflowed, and HiGHS refused the inf
        scaled = shifted / scale
    return np.where(finite, np.minimum(scaled, WORST), scaled), picks


def ilp_seeds(problem: Knapsack, count: int, seed: int = 0, noise: float = 0.5, steps: int = SWEEP_STEPS,
              floor: Sequence[int] | None = None) -> list[Assignment]:
    """Up to ``count`` distinct ILP solutions: the budget itself, then the sweep of lower budgets (so even a
    short list spans the whole bits range, which is what the Pareto frontier needs), then solves at the
    budget with noisy scores; every solve above ``floor`` when given (see `solve_ilp`). The order does not
    depend on ``count``: a shorter list is a prefix of a longer one."""
    if count <= 0:
        return []
    return list(itertools.islice(ilp_solutions(problem, seed, noise, steps, floor, tries=6 * count), count))


def ilp_solutions(problem: Knapsack, seed: int = 0, noise: float = 0.5, steps: int = SWEEP_STEPS, floor: Sequence[int] | None = None,
                  tries: int | None = None, stale: int | None = None) -> Iterator[Assignment]:
    """`ilp_seeds`' distinct solutions one solve at a time, as the ILP strategy's trials take them: solved up front,
    ``--n-trials 1000`` ran 6,000 solves (a minute on digits-cnn) before its first trial, past any ``--timeout``. The
    noisy solves end after ``tries`` of them, or after ``stale`` in a row that found nothing new (a small space runs dry)."""
    base = problem.score_matrix()
    rng = np.random.default_rng(seed)
    seen: set[Assignment] = set()

    def new(picks: Sequence[int] | None) -> Assignment | None:
        candidate = problem.assignment(picks) if picks is not None else None
        if candidate is None or candidate in seen:
            return None
        seen.add(candidate)
        return candidate

    for capacity in problem.sweep(steps):
        if (found := new(solve_ilp(problem, capacity, base, floor=floor))) is not None:
            yield found
    done = in_a_row = 0
    while (tries is None or done < tries) and (stale is None or in_a_row < stale):
        done += 1
        found = new(solve_ilp(problem, problem.capacity, base * rng.lognormal(0.0, noise, base.shape), floor=floor))
        in_a_row = 0 if found is not None else in_a_row + 1
        if found is not None:
            yield found


def raise_seeds(problem: Knapsack, floor: Sequence[int], count: int, seed: int = 0, noise: float = 0.5) -> list[Assignment]:
    """Up to ``count`` distinct ILP solutions at the budget that only ever raise layers above ``floor`` (the
    best uniform assignment within the budget, `best_uniform`): the exact solve, then noisy-score solves.

    Additive sensitivity ignores how errors compound, so the unrestricted optimum may drop some layers far
    below the uniform baseline to pay for others; on an LLM that can lose to the baseline itself. Raising
    the most sensitive layers of a known-good uniform point cannot go below it, whatever the scores' errors."""
    return ilp_seeds(problem, count, seed, noise, steps=1, floor=floor)  # a one-step sweep: the budget itself
