"""Starting points enqueued before the sampler takes over.

* Uniform: every assignment giving all layers the same choice that fits the budget
  (the baselines a mixed-precision search must beat).
* Budget fill: the dearest uniform assignment within the budget, with randomly
  ordered layers raised to the cheapest format above the budget for as long as the
  budget allows. They spend the slack a uniform assignment leaves unused and need
  no sensitivity information; sensitivity-driven seeds come later.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from autoq.budget import Budget
from autoq.choice import Assignment
from autoq.cost import CostModel
from autoq.space import SearchSpace


def uniform_seeds(space: SearchSpace, cost_model: CostModel, budget: Budget) -> list[Assignment]:
    """Uniform assignments within the budget, cheapest first."""
    fitting = [a for a in space.uniform_assignments() if budget.violation(cost_model.cost(a)) <= 0]
    return sorted(fitting, key=lambda a: budget.measure(cost_model.cost(a)))


def fill_seeds(space: SearchSpace, cost_model: CostModel, budget: Budget, count: int, seed: int = 0) -> list[Assignment]:
    """Up to ``count`` distinct budget-filling mixes: the dearest uniform assignment within the
    budget with layers raised to one of the two cheapest uniform formats above it."""
    uniform = sorted(space.uniform_assignments(), key=lambda a: budget.measure(cost_model.cost(a)))
    below = [a for a in uniform if budget.violation(cost_model.cost(a)) <= 0]
    above = [a for a in uniform if budget.violation(cost_model.cost(a)) > 0]
    if not below or not above or count <= 0:
        return []
    base, uppers = below[-1], above[:2]
    rng = random.Random(seed)
    names = [layer.name for layer in space.layers]
    seeds: list[Assignment] = []
    for attempt in range(count * 4):
        upper = uppers[attempt % len(uppers)]
        candidate = _fill(base, upper, rng.sample(names, len(names)), cost_model, budget)
        if candidate not in seeds and candidate != base:
            seeds.append(candidate)
        if len(seeds) == count:
            break
    return seeds


def _fill(base: Assignment, upper: Assignment, order: Sequence[str], cost_model: CostModel, budget: Budget) -> Assignment:
    choices = dict(base.items())
    for name in order:
        trial = {**choices, name: upper[name]}
        if budget.violation(cost_model.cost(trial)) <= 0:
            choices = trial
    return Assignment(tuple(choices.items()))
