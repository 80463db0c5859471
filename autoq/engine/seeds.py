"""Starting points enqueued before the sampler takes over.

* Uniform: every assignment giving all layers the same choice that fits the budget
  (the baselines a mixed-precision search must beat).
* Budget fill: the uniform assignment of the most bits within the budget, with randomly
  ordered layers raised to the cheapest format above the budget for as long as the
  budget allows. They spend the slack a uniform assignment leaves unused and need
  no sensitivity information; sensitivity-driven seeds come later.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from autoq.budget import Budget
from autoq.choice import Assignment
from autoq.cost import Cost, CostModel
from autoq.model import LayerInfo
from autoq.space import SearchSpace


def uniform_seeds(space: SearchSpace, cost_model: CostModel, budget: Budget, limit: int | None = None) -> list[Assignment]:
    """Uniform assignments within the budget, cheapest first; with a ``limit``, fewer of them.

    A space with several PTQ methods has a uniform assignment per (format, method): 43 within
    4.5 bits for ``full`` on MiniLM, which would fill most of a search's trials. With a limit,
    every weight format keeps one (its first method: the frontier's reach in bits), and the places
    left up to ``limit`` go to the other methods of the dearest formats, where the best baseline is.
    A limit below the number of formats keeps that many formats, evenly spread from the fewest effective bits to
    the most (it kept one a format whatever the limit: 20 for ``full`` at 16): bits, not the budget's own measure, so
    that under a latency budget a limit of 1 keeps the likeliest best (int8 or fp16), not the slowest (int3, whose
    kernels are slower than int4's). ``None`` keeps them all.
    """
    fitting = sorted((a for a in space.uniform_assignments() if budget.violation(cost_model.cost(a)) <= 0),
                     key=lambda a: budget.measure(cost_model.cost(a)))
    if limit is None or len(fitting) <= limit:
        return fitting
    by_format: dict[tuple, list[Assignment]] = {}
    for a in fitting:  # one weight format on every layer (one cost, but for an input-scaling method's scales)
        by_format.setdefault(_format(a), []).append(a)
    groups = list(by_format.values())  # cheapest format first
    if limit < len(groups):  # fewer places than formats: that many formats, the most bits first, then spread to the fewest
        if limit == 0:
            return []
        by_bits = sorted(groups, key=lambda group: cost_model.cost(group[0]).effective_bits)  # stable: ties keep the budget's order
        picks = {len(by_bits) - 1} if limit == 1 else {round(i * (len(by_bits) - 1) / (limit - 1)) for i in range(limit)}
        kept = {by_bits[i][0] for i in picks}
        return [a for a in fitting if a in kept]
    kept = {group[0] for group in groups}
    extras = [a for group in reversed(by_format.values()) for a in group[1:]]  # dearest format first
    kept.update(extras[: max(0, limit - len(kept))])
    return [a for a in fitting if a in kept]


def best_uniform(fitting: Sequence[Assignment], cost_model: CostModel) -> Assignment:
    """Of the uniform assignments within the budget (cheapest first), the one of the most effective bits, the last of
    equals: the dearest under a bits or size budget. Not the slowest under a latency budget: int3's kernels are slower
    than int4's, and the slowest (int3) as the base left no fill seeds and a raise floor that kept int4 out."""
    return max(reversed(fitting), key=lambda a: cost_model.cost(a).effective_bits)


def fill_seeds(space: SearchSpace, cost_model: CostModel, budget: Budget, count: int, seed: int = 0) -> list[Assignment]:
    """Up to ``count`` distinct budget-filling mixes: the best uniform assignment within the budget (`best_uniform`)
    with layers raised to one of the two cheapest uniform formats above the budget."""
    below = uniform_seeds(space, cost_model, budget)
    above = sorted(
        (a for a in space.uniform_assignments() if budget.violation(cost_model.cost(a)) > 0),
        key=lambda a: budget.measure(cost_model.cost(a)),
    )
    if not below or not above or count <= 0:
        return []
    base, uppers = best_uniform(below, cost_model), []
    for a in above:  # the two cheapest formats, each with its first method (not one format twice, with two methods)
        if all(_format(a) != _format(u) for u in uppers):
            uppers.append(a)
        if len(uppers) == 2:
            break
    rng = random.Random(seed)
    seeds: list[Assignment] = []
    for attempt in range(count * 4):
        upper = uppers[attempt % len(uppers)]
        candidate = _fill(base, upper, rng.sample(space.layers, len(space.layers)), cost_model, budget)
        if candidate not in seeds and candidate != base:
            seeds.append(candidate)
        if len(seeds) == count:
            break
    return seeds


def _format(a: Assignment) -> tuple:
    return tuple(choice.weight for choice in a.values())


def _fill(base: Assignment, upper: Assignment, order: Sequence[LayerInfo], cost_model: CostModel, budget: Budget) -> Assignment:
    """Raise layers of ``base`` to ``upper`` in ``order`` while the budget holds (costs add up per layer)."""
    choices = dict(base.items())
    bits = sum(cost_model.layer_bits(layer, choices[layer.name]) for layer in cost_model.layers)
    base_cost = cost_model.cost(base)
    size, latency = base_cost.size_bytes, base_cost.latency_us
    for layer in order:
        old, new = choices[layer.name], upper[layer.name]
        new_bits = bits + cost_model.layer_bits(layer, new) - cost_model.layer_bits(layer, old)
        new_size = size + cost_model.layer_bytes(layer, new) - cost_model.layer_bytes(layer, old)
        new_latency = None if latency is None else latency + cost_model.layer_us(layer, new) - cost_model.layer_us(layer, old)
        fits = budget.violation(Cost(new_bits / cost_model.n_weights, new_size, new_latency)) <= 0
        if fits and budget.is_latency and new_latency is not None and new_latency >= budget.limit_us * (1 - 1e-9):
            # a running float sum on the limit: summed layer by layer, as every check sums it, it was an ulp over
            fits = budget.violation(cost_model.cost(Assignment(tuple({**choices, layer.name: new}.items())))) <= 0
        if fits:
            choices[layer.name], bits, size, latency = new, new_bits, new_size, new_latency
    return Assignment(tuple(choices.items()))
