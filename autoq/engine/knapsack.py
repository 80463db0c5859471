"""The multiple-choice knapsack every seed source solves: one option per layer, costs add up per layer.

`Knapsack` holds per-layer option costs (in the budget's own unit: bits, bytes
or microseconds) and, when a sensitivity table is given, per-layer option scores.
ILP, greedy and random seeds are all built on it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from autoq.budget import Budget
from autoq.choice import Assignment
from autoq.cost import CostModel
from autoq.errors import AutoqError
from autoq.space import SearchSpace


@dataclass(frozen=True)
class Knapsack:
    """Costs (and scores) per layer and option, aligned with ``space.options``; ``capacity`` is the budget."""

    space: SearchSpace
    costs: tuple[tuple[float, ...], ...]
    capacity: float
    scores: tuple[tuple[float, ...], ...] = ()

    @classmethod
    def build(cls, space: SearchSpace, cost_model: CostModel, budget: Budget, scores: Sequence[Sequence[float]] | None = None) -> Knapsack:
        kind = budget.kind
        costs = tuple(tuple(float(cost_model.layer_amount(layer, c, kind)) for c in opts) for layer, opts in zip(space.layers, space.options))
        if kind == "bits":
            capacity = _bits_capacity(budget.value, cost_model.n_weights)
        elif kind == "bytes":
            capacity = budget.value - cost_model.other_bytes
        else:  # layer latencies are in us
            capacity = budget.limit_us
        if scores is not None:
            scores = tuple(tuple(float(s) for s in row) for row in scores)
            if [len(r) for r in scores] != [len(o) for o in space.options]:
                raise AutoqError("sensitivity scores do not match the search space's options")
        return cls(space, costs, capacity, scores or ())

    @property
    def lowest(self) -> float:
        """Cost of the cheapest assignment."""
        return sum(min(c) for c in self.costs)

    @cached_property
    def memo(self) -> dict[float, tuple[int, ...] | None]:
        """Greedy allocations of this problem by capacity (`greedy_allocate`), made on first use: a function of the
        problem alone, which every ILP solve recomputed. Not a field: equality and the repr are the problem's."""
        return {}

    def total(self, picks: Sequence[int]) -> float:
        return sum(c[i] for c, i in zip(self.costs, picks))

    def assignment(self, picks: Sequence[int]) -> Assignment:
        return self.space.assignment(list(picks))

    def score_matrix(self) -> np.ndarray:
        """Scores padded to a rectangle with +inf (options a layer lacks)."""
        if not self.scores:
            raise AutoqError("this seed source needs sensitivity scores (--seed-from METRIC)")
        width = max(len(r) for r in self.scores)
        out = np.full((len(self.scores), width), np.inf)
        for i, row in enumerate(self.scores):
            out[i, : len(row)] = row
        return out

    def sweep(self, count: int, top: float | None = None) -> list[float]:
        """``count`` capacities evenly spaced from ``top`` (the budget) down towards the cheapest cost."""
        top = self.capacity if top is None else top
        lo = self.lowest
        return [top - (top - lo) * i / max(1, count) for i in range(count)]


def random_feasible(problem: Knapsack, rng: random.Random) -> list[int]:
    """A random assignment, repaired into the budget by moving random layers to random cheaper options."""
    picks = [rng.randrange(len(c)) for c in problem.costs]
    total = problem.total(picks)
    while total > problem.capacity:
        layers = [i for i, (c, p) in enumerate(zip(problem.costs, picks)) if any(x < c[p] for x in c)]
        if not layers:
            # the running sum of float costs (latency) drifts: it raised above a budget the cheapest assignment's own
            # sum meets; the exact sum decides, as the search's check does
            if problem.total(picks) <= problem.capacity:
                break
            raise AutoqError("no assignment fits the budget")
        i = rng.choice(layers)
        cheaper = [k for k, x in enumerate(problem.costs[i]) if x < problem.costs[i][picks[i]]]
        k = rng.choice(cheaper)
        total += problem.costs[i][k] - problem.costs[i][picks[i]]
        picks[i] = k
        if total <= problem.capacity:  # the drift the other way: it stopped one ulp short of the budget
            total = problem.total(picks)
    return picks


def _bits_capacity(bits: float, n_weights: int) -> float:
    """The most total bits whose average is within ``bits``, as the search checks it (``total / n_weights <= bits``):
    ``bits * n_weights`` can round below a total the search admits (a point's own effective bits as a budget)."""
    capacity = bits * n_weights
    while (up := math.nextafter(capacity, math.inf)) / n_weights <= bits:
        capacity = up
    while capacity / n_weights > bits:
        capacity = math.nextafter(capacity, -math.inf)
    return capacity
