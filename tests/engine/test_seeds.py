"""Uniform and budget-fill seeds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autoq.budget import parse_budget
from autoq.cost import CostModel
from autoq.engine.seeds import fill_seeds, uniform_seeds
from autoq.model import find_layers
from autoq.search_spaces import load_preset
from autoq.space import SearchSpace


def space_and_costs(preset: str = "per-channel", widths=((256, 64), (128, 32), (512, 8), (64, 4), (256, 128))):
    torch.manual_seed(0)
    model = nn.Sequential(*(nn.Linear(i, o) for i, o in widths))  # shapes only; never run
    layers = find_layers(model)
    return SearchSpace.build(load_preset(preset), layers), CostModel.for_model(model, layers)


@pytest.fixture(scope="module")
def small():
    return space_and_costs()


BUDGETS = ["2.5bits", "3.3bits", "4.5bits", "5.9bits", "7bits", "12bits"]


@pytest.mark.parametrize("text", BUDGETS)
def test_uniform_seeds_fit_and_are_sorted(small, text):
    space, cm = small
    budget = parse_budget(text)
    seeds = uniform_seeds(space, cm, budget)
    assert seeds
    measures = [budget.measure(cm.cost(a)) for a in seeds]
    assert all(m <= budget.value for m in measures)
    assert measures == sorted(measures)
    # exactly the uniform assignments that fit
    fitting = [a for a in space.uniform_assignments() if budget.measure(cm.cost(a)) <= budget.value]
    assert set(seeds) == set(fitting)
    assert len(seeds) == len(fitting)


def test_uniform_seeds_empty_below_everything(small):
    space, cm = small
    assert uniform_seeds(space, cm, parse_budget("1bits")) == []


def test_uniform_seeds_size_budget(small):
    space, cm = small
    dearest = max(cm.cost(a).size_bytes for a in space.uniform_assignments())
    budget = parse_budget(f"{dearest / 2e6}MB")
    seeds = uniform_seeds(space, cm, budget)
    sizes = [cm.cost(a).size_bytes for a in seeds]
    assert seeds and all(s <= dearest / 2 for s in sizes)
    assert sizes == sorted(sizes)


@pytest.mark.parametrize("text", BUDGETS)
def test_fill_seeds_properties(small, text):
    space, cm = small
    budget = parse_budget(text)
    seeds = fill_seeds(space, cm, budget, count=6, seed=0)
    assert seeds, "the budget lies between two uniform assignments, so there is slack to fill"
    assert len(seeds) <= 6
    assert len(set(seeds)) == len(seeds)
    uniform = space.uniform_assignments()
    below = [a for a in uniform if budget.violation(cm.cost(a)) <= 0]
    floor = max(budget.measure(cm.cost(a)) for a in below)
    for s in seeds:
        space.validate(s)
        assert list(s) == space.names
        assert budget.violation(cm.cost(s)) <= 0
        assert s not in uniform
        assert budget.measure(cm.cost(s)) >= floor


def test_fill_seeds_mix_two_formats(small):
    """The dearest fitting format raised towards one of the two cheapest formats above the budget: int5 and int6 (in a
    space of several methods, not int5 twice under two methods)."""
    space, cm = small
    budget = parse_budget("4.5bits")
    mixes = {frozenset(c.weight.bits for c in s.values()) for s in fill_seeds(space, cm, budget, count=6, seed=0)}
    assert mixes == {frozenset({4, 5}), frozenset({4, 6})}
    assert len({c.method for a in space.uniform_assignments() for c in a.values()}) > 1


def test_fill_seeds_deterministic_per_seed(small):
    """One seed, one list of mixes; the seed picks the order layers are raised in, so seeds differ in their mixes (a
    fill that ignored its seed passed every test here)."""
    space, cm = small
    budget = parse_budget("4.5bits")
    assert fill_seeds(space, cm, budget, 5, seed=3) == fill_seeds(space, cm, budget, 5, seed=3)
    assert len({tuple(fill_seeds(space, cm, budget, 3, seed=s)) for s in range(4)}) > 1


def test_fill_seeds_respect_count(small):
    """As many seeds as asked for where that many mixes exist: an order of layers that gives a mix already found is
    tried again with another (four orders a seed), not counted as a seed."""
    space, cm = small
    budget = parse_budget("4.5bits")
    assert len(fill_seeds(space, cm, budget, count=2)) == 2
    assert len(set(fill_seeds(space, cm, budget, count=4))) == 4  # with one order a seed, two of the four would repeat
    assert fill_seeds(space, cm, budget, count=0) == []


def test_no_fill_seeds_without_uniform_above_budget(small):
    space, cm = small
    dearest = max(cm.cost(a).effective_bits for a in space.uniform_assignments())
    assert dearest == 16.0
    assert fill_seeds(space, cm, parse_budget("16bits"), count=8) == []
    assert fill_seeds(space, cm, parse_budget("20bits"), count=8) == []


def test_no_fill_seeds_without_uniform_below_budget(small):
    space, cm = small
    assert fill_seeds(space, cm, parse_budget("2bits"), count=8) == []


def test_fill_seeds_size_budget(small):
    space, cm = small
    uniform = sorted(cm.cost(a).size_bytes for a in space.uniform_assignments())
    mid = (uniform[4] + uniform[6]) / 2
    budget = parse_budget(f"{mid / 1e6}MB")
    seeds = fill_seeds(space, cm, budget, count=4)
    assert seeds
    assert all(cm.cost(s).size_bytes <= mid for s in seeds)
    assert all(cm.cost(s).size_bytes >= max(u for u in uniform if u <= mid) for s in seeds)


def test_fill_seeds_never_cheaper_than_best_fitting_uniform_default_preset():
    space, cm = space_and_costs("default", widths=((256, 8), (64, 8)))
    # at exactly the cost of uniform int4-ch there is no slack to fill
    assert fill_seeds(space, cm, parse_budget("4.2bits"), count=8) == []
    budget = parse_budget("4.9bits")
    floor = max(budget.measure(cm.cost(a)) for a in uniform_seeds(space, cm, budget))
    seeds = fill_seeds(space, cm, budget, count=8)
    assert seeds
    assert all(floor <= budget.measure(cm.cost(s)) <= 4.9 for s in seeds)


def test_a_limit_keeps_every_format_once_then_more_methods_of_the_dearest():
    """``full`` at 4.5 bits: 11 formats fit, with 4 methods each but int4-g64 (4.5 bits) without AWQ (its fp32 input
    scales add 32 bits an input); limited, each format keeps its first method, and the places left go to the other
    methods of the dearest formats (where the best baseline is)."""
    space, cm = space_and_costs("full", widths=((256, 256), (256, 512), (512, 256)))
    budget = parse_budget("4.5bits")
    every = uniform_seeds(space, cm, budget)
    groups: dict[tuple, list] = {}
    for a in every:
        groups.setdefault(tuple(c.weight for c in a.values()), []).append(a)
    assert len(groups) == 11 and len(every) == 43
    kept = uniform_seeds(space, cm, budget, 16)
    first = [g[0] for g in groups.values()]
    dearest, second = list(groups.values())[-1], list(groups.values())[-2]
    assert [a["0"].weight.name for a in dearest] == ["int4-g64-asym"] * 3 and len(second) == 4
    assert len(kept) == 16 and set(kept) == set(first) | set(dearest[1:]) | set(second[1:4])
    assert {a["0"].method for a in kept if a["0"].weight.name == "int4-g64-asym"} == {"rtn-mse", "rtn-lp", "gptq"}
    assert kept == [a for a in every if a in kept]  # still cheapest first
    # fewer places than formats: that many formats, from the cheapest to the dearest (it kept one a format whatever the
    # limit, which README calls a cap); 0: none; a large or no limit: all of them
    assert uniform_seeds(space, cm, budget, 1) == [first[-1]] and uniform_seeds(space, cm, budget, 0) == []
    five = uniform_seeds(space, cm, budget, 5)
    assert len(five) == 5 and set(five) <= set(first) and five[0] == first[0] and five[-1] == first[-1]
    by_bits = sorted(first, key=lambda a: cm.cost(a).effective_bits)
    assert set(five) == {by_bits[i] for i in (0, 2, 5, 8, 10)}  # evenly spread over 11, to the nearest (7.5 -> 8)
    assert uniform_seeds(space, cm, budget, 43) == every == uniform_seeds(space, cm, budget, None)


def test_one_fill_seed_is_one_and_a_longer_list_starts_with_it(small):
    """Every test asked for several: a count of 1 (``--n-fill-seeds 1``-like) must give one, not none."""
    space, cm = small
    budget = parse_budget("4.5bits")
    [one] = fill_seeds(space, cm, budget, 1, seed=0)
    assert budget.violation(cm.cost(one)) <= 0 and one not in space.uniform_assignments()
    assert fill_seeds(space, cm, budget, 0, seed=0) == []
    assert fill_seeds(space, cm, budget, 4, seed=0)[0] == one


@pytest.mark.parametrize("widths, name", [(((4096, 64), (64, 32), (200, 300)), "int3-ch-asym:rtn-mse"),
                                         (((4096, 64), (200, 64), (512, 512)), "int6-ch-asym:rtn-mse")])
def test_fill_seeds_on_a_latency_budget_are_within_it_as_summed_layer_by_layer(widths, name):
    """A mix's latency was kept as a running sum of per-layer changes, which came out an ulp below a budget set on a
    uniform assignment's latency: that uniform assignment came back as a 'mix', over budget by 1.8e-18 ms. A sum within
    a relative 1e-9 of the limit is checked again as every check sums it (the second case's sum is an ulp below it)."""
    from autoq.budget import Budget
    from autoq.latency import latency_model

    model = nn.Sequential(*(nn.Linear(i, o) for i, o in widths))  # shapes only; never run
    layers = find_layers(model)
    space = SearchSpace.build(load_preset("default"), layers)
    cm = CostModel.for_model(model, layers, latency_model("h100", 1))
    uniform = next(a for a in space.uniform_assignments() if {c.name for c in a.values()} == {name})
    budget = Budget("latency_ms", cm.cost(uniform).latency_us / 1e3)
    seeds = fill_seeds(space, cm, budget, count=16, seed=0)
    assert seeds and all(budget.violation(cm.cost(s)) <= 0 for s in seeds)
    assert uniform not in seeds


def test_latency_budget_fills_from_the_uniform_of_most_bits_not_the_slowest(tmp_path):
    """int3's kernels slower than int4's (the measured H200 table's order): the slowest fitting uniform is int3, yet the
    fill base is int4, and raising its layers to int8 or int5 spends the budget (from int3 no layer could be raised)."""
    from autoq.engine.seeds import best_uniform
    from autoq.kernels.table import LatencyRow, LatencyTable
    from autoq.latency import load_table

    model = nn.Sequential(*(nn.Linear(256, 256) for _ in range(4)))
    layers = find_layers(model)
    us = {"int2-ch-asym": 7.83, "int3-ch-asym": 8.72, "int4-ch-asym": 7.76, "int5-ch-asym": 9.5, "int6-ch-asym": 9.9,
          "int8-ch-asym": 9.0, "fp16": 14.0}
    rows = tuple(LatencyRow(256, 256, fmt, "test", 1, t, t, t, 0.0) for fmt, t in us.items())
    LatencyTable("Test GPU (made-up numbers for tests)", rows).save(tmp_path / "t.json")
    space = SearchSpace.build(load_preset("per-channel"), layers)
    cm = CostModel.for_model(model, layers, load_table(tmp_path / "t.json"))
    budget = parse_budget("34.9us")
    fitting = uniform_seeds(space, cm, budget)
    assert fitting[-1]["0"].weight.bits == 3  # the slowest within the budget
    assert best_uniform(fitting, cm)["0"].weight.bits == 4
    # a cap below the formats' count spreads over effective bits, not the budget's measure: a cap of 1 kept int3 (the
    # slowest), the poorest baseline, where int4 (the most bits that fit) is the likeliest best
    assert [a["0"].weight.bits for a in uniform_seeds(space, cm, budget, 1)] == [4]
    assert sorted(a["0"].weight.bits for a in uniform_seeds(space, cm, budget, 2)) == [2, 4]
    seeds = fill_seeds(space, cm, budget, 3)
    assert seeds and all(budget.violation(cm.cost(a)) <= 0 for a in seeds)
    for a in seeds:  # int4 with some layers raised to int8 or int5 (the two cheapest formats above the budget)
        bits = sorted(c.weight.bits for c in a.values())
        assert bits[0] == 4 and bits[-1] in (5, 8)


def test_the_fill_base_is_the_last_of_uniforms_of_equal_bits():
    """Of uniform assignments within the budget and of equal effective bits (one format, two range methods), the last
    in the space's order: the base the fill seeds raise is rtn-mse's, not rtn-minmax's, as in the sampler's queue."""
    from autoq.engine.seeds import best_uniform

    model = nn.Sequential(*(nn.Linear(256, 256) for _ in range(4)))
    layers = find_layers(model)
    space = SearchSpace.build(load_preset("per-channel"), layers)
    cm = CostModel.for_model(model, layers)
    fitting = uniform_seeds(space, cm, parse_budget("4.5bits"))
    assert [a["0"].name for a in fitting[-2:]] == ["int4-ch-asym:rtn-minmax", "int4-ch-asym:rtn-mse"]
    assert cm.cost(fitting[-2]).effective_bits == cm.cost(fitting[-1]).effective_bits
    assert best_uniform(fitting, cm) == fitting[-1]
