"""The ILP seed source against brute force on a 4-layer space, and its seeds."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from autoq.budget import Budget, parse_budget
from autoq.cost import CostModel
from autoq.engine.greedy import greedy_allocate, greedy_seeds
from autoq.engine.ilp import SWEEP_STEPS, ilp_seeds, ilp_solutions, raise_seeds, solve_ilp
from autoq.engine.knapsack import Knapsack, random_feasible
from autoq.model import find_layers
from autoq.search_spaces import load_preset
from autoq.space import SearchSpace


def four_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.Linear(256, 128), nn.Linear(128, 300), nn.Linear(300, 10))
    layers = find_layers(model)
    space = SearchSpace.build(load_preset("default"), layers)
    return space, CostModel.for_model(model, layers)


def problem(budget: str, seed: int = 0) -> Knapsack:
    space, cost_model = four_layers()
    rng = np.random.default_rng(seed)
    # sensitivity falls with bits, with layer-specific weights and noise, like real tables
    scores = [[rng.lognormal(0, 1) * 4.0 ** -c.weight.bits * rng.uniform(0.5, 2) for c in opts] for opts in space.options]
    return Knapsack.build(space, cost_model, parse_budget(budget), scores)


def brute_force(p: Knapsack, capacity: float, floor: list[int] | None = None) -> float:
    best = np.inf
    costs = [np.array(c) for c in p.costs]
    scores = [np.array(s) for s in p.scores]
    least = [c[k] for c, k in zip(costs, floor)] if floor else [0.0] * len(costs)
    for picks in itertools.product(*[range(len(c)) for c in costs]):
        if any(c[i] < lo for c, i, lo in zip(costs, picks, least)):
            continue
        if sum(c[i] for c, i in zip(costs, picks)) <= capacity:
            best = min(best, sum(s[i] for s, i in zip(scores, picks)))
    return best


@pytest.mark.parametrize("budget, seed", [("3.1bits", 0), ("4.5bits", 1), ("5.2bits", 2), ("2.3bits", 3)])
def test_ilp_matches_brute_force_on_four_layers(budget, seed):
    p = problem(budget, seed)
    picks = solve_ilp(p)
    assert picks is not None and p.total(picks) <= p.capacity
    assert sum(p.scores[i][k] for i, k in enumerate(picks)) == pytest.approx(brute_force(p, p.capacity), rel=1e-6)


def test_ilp_is_optimal_when_the_best_score_is_tiny_next_to_the_largest():
    """Scores span 10 orders of magnitude (8-bit ones 4^-6 of 2-bit ones, layers 10^7 apart), as real tables do."""
    rng = np.random.default_rng(0)
    worst = 1.0
    for _ in range(150):
        n_layers, bits = int(rng.integers(2, 6)), sorted(rng.choice([2, 3, 4, 5, 6, 8, 16], int(rng.integers(2, 5)), replace=False))
        sizes, weights = rng.integers(100, 5000, n_layers), 10 ** rng.uniform(-4, 3, n_layers)
        costs = tuple(tuple(float(n * b) for b in bits) for n in sizes)
        scores = tuple(tuple(float(w * 4.0 ** -b) if b < 16 else 0.0 for b in bits) for w in weights)
        lo, hi = sum(min(c) for c in costs), sum(max(c) for c in costs)
        p = Knapsack(None, costs, float(lo + (hi - lo) * rng.uniform(0.05, 0.6)), scores)
        picks = solve_ilp(p)
        best = brute_force(p, p.capacity)
        worst = max(worst, sum(scores[i][k] for i, k in enumerate(picks)) / best)
    assert worst == pytest.approx(1.0, rel=1e-6)  # scaled by the largest score, 3 of these were up to 9% worse


def test_a_huge_finite_score_is_solved_around():
    """1e306 and more in a hand-edited table overflowed to inf once scaled, and HiGHS refused the problem (a traceback)."""
    p = problem("4.5bits", 1)
    huge = tuple(tuple(1.5e308 if (i, k) == (0, 0) else v for k, v in enumerate(row)) for i, row in enumerate(p.scores))
    q = Knapsack(p.space, p.costs, p.capacity, huge)
    with np.errstate(all="raise"):  # no overflow warning either
        picks = solve_ilp(q)
    assert picks is not None and picks[0] != 0
    assert sum(huge[i][k] for i, k in enumerate(picks)) == pytest.approx(brute_force(q, q.capacity), rel=1e-6)


def test_ilp_is_optimal_at_or_above_the_dearest_assignment():
    """Greedy then puts every layer at its least score (0 once shifted); scaled by the largest score instead, the
    solver's gap let through solutions up to twice the optimum (an int8 layer beside fp16 ones at '16bits')."""
    rng = np.random.default_rng(1)
    for _ in range(100):
        n_layers, n_options = int(rng.integers(1, 6)), int(rng.integers(2, 5))
        costs = tuple(tuple(float(c) for c in rng.uniform(1, 1000, n_options)) for _ in range(n_layers))
        scale = rng.choice([1e-4, 10.0, 1e4], (n_layers, n_options))
        scores = tuple(tuple(float(v) for v in row) for row in rng.uniform(0, 1, (n_layers, n_options)) * scale)
        capacity = sum(max(row) for row in costs) * float(rng.uniform(1.0, 1.2))
        picks = solve_ilp(Knapsack(None, costs, capacity, scores))
        assert sum(scores[i][k] for i, k in enumerate(picks)) == pytest.approx(brute_force(Knapsack(None, costs, capacity, scores), capacity), rel=1e-9)


def test_ilp_below_the_cheapest_assignment_is_none():
    p = problem("3bits")
    assert solve_ilp(p, capacity=p.lowest * 0.99) is None
    assert greedy_allocate(p, capacity=p.lowest * 0.99) is None


def test_greedy_is_feasible_and_no_better_than_the_ilp():
    for seed, budget in enumerate(["2.6bits", "3.7bits", "4.4bits", "6bits"]):
        p = problem(budget, seed)
        greedy, exact = greedy_allocate(p), solve_ilp(p)
        assert p.total(greedy) <= p.capacity
        objective = [sum(p.scores[i][k] for i, k in enumerate(x)) for x in (greedy, exact)]
        assert objective[0] >= objective[1] * (1 - 1e-9)


def test_greedy_walks_once_per_capacity_and_its_answer_cannot_be_changed_by_a_caller(monkeypatch):
    """Every ILP solve asked greedy for its yardstick at the same capacity: 53 walks at 8 capacities, each quadratic in
    layers in Python, made seeding a 3,200-layer model take two minutes."""
    from autoq.engine import greedy

    walks = []
    walk = greedy._walk
    monkeypatch.setattr(greedy, "_walk", lambda problem, capacity: walks.append(capacity) or walk(problem, capacity))
    p = problem("4.5bits")
    seeds = ilp_seeds(p, 12, seed=3)
    assert len(seeds) == 12 and len(walks) == len(set(walks)) <= SWEEP_STEPS + 1
    first = greedy_allocate(p)
    first[0] = -1
    assert greedy_allocate(p)[0] != -1 and greedy_allocate(dataclasses.replace(p))[0] != -1  # a copy, and a new problem walks anew


def test_greedy_on_float_costs_stays_within_capacities_that_assignments_sum_to_exactly():
    """The running total is checked by the exact sum near the capacity only: with float costs (latencies), a budget set
    to an assignment's own sum must still hold greedy's answer by the exact sum, which the search's check is (the
    running total alone went over it by an ulp: 51.1 over 51.099999999999994)."""
    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(3, 40))
        costs = tuple(tuple(sorted(float(np.round(c, 3)) for c in rng.uniform(0.1, 3, 3))) for _ in range(n))
        scores = tuple(tuple(float(s) for s in sorted(rng.random(3), reverse=True)) for _ in range(n))
        capacity = Knapsack(None, costs, 0.0, scores).total([int(k) for k in rng.integers(0, 3, n)])
        p = Knapsack(None, costs, capacity, scores)
        picks = greedy_allocate(p)
        assert picks is not None and p.total(picks) <= capacity


def test_greedy_takes_an_upgrade_whose_exact_total_is_the_capacity_itself():
    """The running total sat an ulp above the exact sum, and the last upgrade, onto the capacity exactly, was filtered
    out by it: [1, 2, 2] (score 0.600) where the exact walk reached [2, 2, 2] (0.522)."""
    costs = ((16.376611628104286, 21.07519386075315, 39.013756038586365), (22.60600688810768, 30.54006836161898, 43.24681860023446),
             (0.7867134414959405, 5.463305649789318, 11.558340119314428, 45.26784247211953, 46.1802798036058))
    scores = ((0.34225301296727756, 0.31748120434192, 0.23915691434484998), (0.18201390173387888, 0.10838049995874492, 0.0027223871068030076),
              (0.84363966807299, 0.36774762886586904, 0.28015443152920433, 0.1742154732766141, 0.11212490180569687))
    capacity = Knapsack(None, costs, 0.0, scores).total([2, 2, 2])
    assert greedy_allocate(Knapsack(None, costs, capacity, scores)) == [2, 2, 2]


def test_ilp_seeds_are_distinct_within_budget_and_a_shorter_list_is_a_prefix():
    p = problem("4.5bits")
    seeds = ilp_seeds(p, 10, seed=3)
    assert len(seeds) == len(set(seeds)) == 10
    space, cost_model = four_layers()
    assert all(cost_model.cost(a).effective_bits <= 4.5 for a in seeds)
    assert seeds[0] == p.assignment(solve_ilp(p))  # the optimum at the budget comes first
    assert ilp_seeds(p, 4, seed=3) == seeds[:4]
    bits = [cost_model.cost(a).effective_bits for a in seeds]
    assert min(bits) < 3.5  # the sweep reaches well below the budget


def test_ilp_seeds_try_several_noisy_solves_per_seed_to_fill_the_list():
    """Past the sweep, a noisy solve often repeats one found before: up to six tries per seed fill a list of 16 here (one try
    per seed would leave it a seed short)."""
    p = problem("4.5bits")
    assert len(set(ilp_seeds(p, 16, seed=3))) == 16


def test_the_noisy_solves_stop_after_stale_solves_in_a_row_that_found_nothing_new():
    """``stale`` counts the solves since the last new solution, not all of them: with ``stale=1`` the solves go on while
    each finds a new seed."""
    p = problem("4.5bits")
    sweep = list(ilp_solutions(p, 3, tries=0))
    solutions = list(ilp_solutions(p, 3, stale=1))
    assert solutions[: len(sweep)] == sweep
    assert len(solutions) > len(sweep) + 1


@pytest.mark.parametrize("budget, seed", [("4.5bits", 0), ("5.2bits", 1), ("3.4bits", 2)])
def test_ilp_above_a_floor_matches_brute_force_and_raise_seeds_never_go_below_it(budget, seed):
    p = problem(budget, seed)
    # the floor: the dearest uniform assignment within the budget, as the seeded search uses it
    uniform = [a for a in p.space.uniform_assignments() if p.total(picks_of(p, a)) <= p.capacity]
    floor = picks_of(p, max(uniform, key=lambda a: p.total(picks_of(p, a))))
    picks = solve_ilp(p, floor=floor)
    assert sum(p.scores[i][k] for i, k in enumerate(picks)) == pytest.approx(brute_force(p, p.capacity, floor), rel=1e-6)
    seeds = raise_seeds(p, floor, 5, seed=seed)
    assert seeds[0] == p.assignment(picks) and len(set(seeds)) == len(seeds)
    assert len(seeds) >= (2 if budget == "5.2bits" else 1)  # room above the floor: noisy solves differ
    for a in seeds:
        chosen = picks_of(p, a)
        assert p.total(chosen) <= p.capacity
        assert all(row[k] >= row[f] for row, k, f in zip(p.costs, chosen, floor))
    # a floor above the budget leaves nothing to solve
    assert solve_ilp(p, capacity=p.total(floor) * 0.99, floor=floor) is None


def test_a_floor_that_rules_out_the_cheap_scores_still_finds_the_best_allowed():
    """Scaled by greedy's floor-blind answer (1e-6), both allowed options of the second layer passed the 1e9 cap and
    tied: the solver took the one scoring 5e4 over the one scoring 2e4."""
    p = Knapsack(None, ((1.0, 2.0), (1.0, 16.0, 16.0)), 18.0, ((1e-6, 0.0), (0.0, 5e4, 2e4)))
    assert solve_ilp(p, floor=[0, 1]) == [1, 2] and solve_ilp(p) == [1, 0]
    swapped = Knapsack(None, p.costs, p.capacity, ((1e-6, 0.0), (0.0, 2e4, 5e4)))
    assert solve_ilp(swapped, floor=[0, 1]) == [1, 1]


def picks_of(p: Knapsack, assignment) -> list[int]:
    return [opts.index(assignment[layer.name]) for layer, opts in zip(p.space.layers, p.space.options)]


def test_greedy_seeds_and_random_picks_fit():
    import random

    p = problem("3.3bits")
    space, cost_model = four_layers()
    for a in greedy_seeds(p, 6):
        assert cost_model.cost(a).effective_bits <= 3.3
    rng = random.Random(0)
    picks = [random_feasible(p, rng) for _ in range(50)]
    assert all(p.total(x) <= p.capacity for x in picks)
    assert len({tuple(x) for x in picks}) >= 30


def test_random_picks_on_float_costs_meet_a_budget_one_assignments_exact_sum_sets():
    """Latency costs are floats: the running sum of a repair drifted an ulp above a budget the cheapest assignment meets
    and raised 'no assignment fits the budget' (395 of 100,000 such problems), after the search had called it feasible."""
    import random

    rng = random.Random(1)
    for _ in range(3000):
        costs = tuple(tuple(round(rng.uniform(1, 20), rng.randint(1, 6)) for _ in range(3)) for _ in range(rng.randint(3, 6)))
        reachable = [rng.randrange(3) for _ in costs]
        p = Knapsack(None, costs, sum(c[i] for c, i in zip(costs, reachable)))
        for seed in range(3):
            assert p.total(random_feasible(p, random.Random(seed))) <= p.capacity


def test_size_budgets_use_bytes():
    space, cost_model = four_layers()
    cheapest, dearest = space.extremes(cost_model, "bytes")
    middle = (cheapest.size_bytes + dearest.size_bytes) // 2
    p = Knapsack.build(space, cost_model, parse_budget(f"{middle / 1e6}MB"), [[1.0 / (1 + k) for k in range(len(o))] for o in space.options])
    picks = solve_ilp(p)
    assert cost_model.cost(p.assignment(picks)).size_bytes <= middle


def test_a_byte_budget_fits_exactly_the_assignments_the_cost_model_says_fit():
    """Counting the unquantized parameters at 1 byte instead of fp16's 2 went unseen: at a budget of exactly an
    assignment's size it fits, one byte below it does not."""
    space, cm = four_layers()
    assert cm.other_params > 0  # biases
    scores = [[1.0] * len(o) for o in space.options]
    for a in space.uniform_assignments():
        size = cm.cost(a).size_bytes
        at = Knapsack.build(space, cm, Budget("bytes", float(size)), scores)
        below = Knapsack.build(space, cm, Budget("bytes", float(size - 1)), scores)
        assert at.total(picks_of(at, a)) <= at.capacity
        assert below.total(picks_of(below, a)) > below.capacity


def test_the_ilp_sweep_reaches_down_to_the_cheapest_region():
    """A sweep that stopped halfway down passed the only other check (some seed under 3.5 bits)."""
    p = problem("6bits")
    seeds = ilp_seeds(p, SWEEP_STEPS, seed=0)
    assert min(p.total(picks_of(p, a)) for a in seeds) <= p.lowest + (p.capacity - p.lowest) * 2 / SWEEP_STEPS


def test_an_optimum_exactly_on_an_integer_capacity_is_found():
    """A hair of slack below the capacity (for HiGHS' tolerance) cut off totals exactly on it: a worse answer came back."""
    rng = np.random.default_rng(0)
    worse = 0
    for _ in range(300):
        costs = tuple(tuple(float(c) for c in sorted(rng.choice(np.arange(1, 9), size=3, replace=False))) for _ in range(4))
        scores = tuple(tuple(float(s) for s in sorted(rng.uniform(0, 1, size=3), reverse=True)) for _ in range(4))
        capacity = float(rng.integers(int(sum(min(c) for c in costs)), int(sum(max(c) for c in costs)) + 1))
        p = Knapsack(None, costs, capacity, scores)  # type: ignore[arg-type]  (the solver reads costs and scores alone)
        picks = solve_ilp(p)
        assert picks is not None and p.total(picks) <= capacity
        worse += sum(p.scores[i][k] for i, k in enumerate(picks)) > brute_force(p, capacity) + 1e-9
    assert worse == 0


def test_a_points_own_average_bits_as_the_budget_admits_it():
    """``4.5 * n`` rounded below a total whose average the search calls 4.5: the ILP had no solution (None, not even greedy's)."""
    from autoq.engine.knapsack import _bits_capacity

    rng = np.random.default_rng(1)
    for _ in range(2000):
        n = int(rng.integers(1000, 10**9))
        total = float(rng.integers(2 * n, 8 * n))
        bits = total / n  # what the point's effective bits read, given back as the budget
        capacity = _bits_capacity(bits, n)
        assert capacity >= total and capacity / n <= bits


@pytest.mark.parametrize("bits, n_weights", [(5.9, 58_085_013), (4.5, 7), (3.3, 1_000_003), (4.25, 22_713_216)])
def test_a_bits_capacity_is_the_largest_total_whose_average_is_within_the_budget(bits, n_weights):
    """5.9 x 58,085,013 rounds above the budget: the loop stepping down ran in no test (one stepping the wrong way hung)."""
    from autoq.engine.knapsack import _bits_capacity

    capacity = _bits_capacity(bits, n_weights)
    assert capacity / n_weights <= bits < math.nextafter(capacity, math.inf) / n_weights


def test_a_budget_at_exactly_the_cheapest_assignment_is_met_by_every_seed_source():
    """The feasible range's low end, which the refusal of a lower budget tells a user to type."""
    import random

    p = problem("3.3bits")
    at_least = dataclasses.replace(p, capacity=p.lowest)
    cheapest = [min(range(len(c)), key=c.__getitem__) for c in p.costs]
    assert p.total(random_feasible(at_least, random.Random(0))) == p.lowest
    assert p.total(greedy_allocate(p, p.lowest)) == p.lowest and greedy_seeds(at_least, 3)
    assert p.total(solve_ilp(p, p.lowest)) == p.total(cheapest)


def _fractional(p: Knapsack, seed: int) -> Knapsack:
    """The problem's shape with latency-like costs: microseconds with fractions, a few whole."""
    rng = np.random.default_rng(seed)
    costs = tuple(tuple(float(np.round(rng.uniform(0.5, 4.0), 2)) if rng.random() > 0.2 else float(rng.integers(1, 5))
                        for _ in row) for row in p.costs)
    picks = [int(rng.integers(len(row))) for row in costs]  # the capacity: a total that exists, its fraction above one half
    capacity = sum(row[k] for row, k in zip(costs, picks))
    return dataclasses.replace(p, costs=costs, capacity=capacity + 0.99 - capacity % 1 if capacity % 1 < 0.5 else capacity)


@pytest.mark.parametrize("seed", range(6))
def test_ilp_matches_brute_force_on_fractional_costs(seed):
    """Costs in whole units (bits, bytes) let the solver's constraint reach half a unit past the last whole one;
    latency costs are fractional, and taken for whole they were cut at floor(capacity) + 0.5, below a better optimum."""
    p = _fractional(problem("4.5bits", seed), seed)
    picks = solve_ilp(p)
    assert picks is not None and p.total(picks) <= p.capacity
    assert sum(p.scores[i][k] for i, k in enumerate(picks)) == pytest.approx(brute_force(p, p.capacity), rel=1e-6)


def test_fractional_costs_beside_whole_ones_are_not_taken_for_whole():
    """Latency-like costs, one of them whole (4.0): read as whole units when any cost was whole (not all), the
    constraint moved and a worse solution came back (score 2.97 against the optimum's 1.95, a case found by search)."""
    p = dataclasses.replace(problem("4.5bits"), costs=((2.33, 4.0, 2.5), (3.0, 2.56, 1.16), (1.18, 2.61, 0.75)),
                            scores=((1.5, 2.23, 0.53), (1.16, 0.19, 2.18), (0.26, 1.19, 2.62)), capacity=6.13)
    assert solve_ilp(p) == [0, 1, 0]


def test_greedy_upgrades_by_gain_per_unit_of_cost_also_below_one_unit():
    """Costs under 1 (microseconds) were divided by 1, not by themselves: greedy took the one big gain over two that
    gain more per unit of cost."""
    p = problem("4.5bits")
    cheap = dataclasses.replace(p, costs=((1.0, 1.3), (1.0, 1.6), (1.0, 1.3)), scores=((1.0, 0.0), (1.5, 0.0), (1.0, 0.0)), capacity=3.6)
    assert greedy_allocate(cheap) == [1, 0, 1]
    nothing = dataclasses.replace(cheap, scores=((1.0, 1.0), (1.5, 1.5), (1.0, 1.0)))
    assert greedy_allocate(nothing) == [0, 0, 0]  # no gain, no upgrade: the budget is not spent for nothing


def test_greedy_and_the_ilp_sum_a_seeds_cost_as_its_check_does():
    """Greedy's running total drifted an ulp below the exact sum: with the capacity one ulp under the sum of its picks,
    greedy and the ILP (which fell back to greedy) both handed out an over-budget seed (found by search)."""
    costs = ((28.11583092158268,), (5.637526853148295, 2.5211248224654206, 8.231964476099943),
             (14.67531560028748, 2.0292111590255173, 27.75218887055944))
    p = dataclasses.replace(problem("4.5bits"), costs=costs, scores=((0.0,), (1.0, 3.051500892996968, 1.0), (0.0, 6.131844581369149, 0.18232382895201682)),
                            capacity=48.428673375018455)
    assert p.total([0, 0, 0]) > p.capacity
    greedy, ilp = greedy_allocate(p), solve_ilp(p)
    assert p.total(greedy) <= p.capacity and p.total(ilp) <= p.capacity
    assert sum(p.scores[i][k] for i, k in enumerate(ilp)) == pytest.approx(brute_force(p, p.capacity))


def test_a_solution_over_the_capacity_within_the_solvers_tolerance_is_cut_off_not_traded_for_greedys():
    """At 7e8 units one unit over is 1.4e-9 of the scaled row, inside HiGHS' tolerance: the ILP got the over-budget
    optimum, dropped it and returned greedy's answer, 6.5 times worse than the best within the budget."""
    p = dataclasses.replace(problem("4.5bits"), costs=((700000001.0, 600000009.0), (132.0, 79.0)), scores=((0.0, 6.484074272097805), (0.0, 1.0)),
                            capacity=700000132.0)
    assert solve_ilp(p) == [0, 1]
    # a total exactly on a capacity of 6.7e8 units: the slack of 1e-9 of the scaled row below it, most of a unit, lost it
    on = dataclasses.replace(p, costs=((668238944.0, 668446274.0), (168.0, 911.0), (786.0, 927.0)), capacity=668447228.0,
                             scores=((3.282912036877251, 0.4770256681929594), (2.6301291784216607, 1.6291515466128312), (1.069904917867014, 6.670917935826021)))
    assert solve_ilp(on) == [1, 0, 0] and on.total([1, 0, 0]) == on.capacity
    # fractional costs near 1e9: HiGHS took a solution 298 units over as feasible (1e-6 of the row) and lost the optimum
    near = dataclasses.replace(p, costs=((797.9503160840231, 566970019.9086595, 469538191.72626936), (31.76475803134057, 601.2652019566337),
                                         (851.6961563629674, 746453522.602833, 555.1112897498339), (738679238.1136572,)),
                               scores=((3.878042659014678, 0.3091546992201225, 4.652978080408016), (1.168917837256592, 0.813322824488827),
                                       (0.9220047107375163, 0.7782069511023086, 3.8053302436434446), (1.1505315909532805,)),
                               capacity=1305650412.3988085)
    assert solve_ilp(near) == [1, 0, 0, 0]


def test_a_solve_off_the_main_thread_warns_nothing_so_warnings_as_errors_do_not_stop_it():
    """scipy's milp warned of the HiGHS tolerances it does not name; autoq quieted that only on the main thread (the
    filters are the process's), so a search in a worker thread under ``-W error`` failed before its first trial, and
    without it printed the warning on every solve."""
    import threading
    import warnings

    p, found = problem("4.5bits"), []
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        worker = threading.Thread(target=lambda: found.append(solve_ilp(p)))
        worker.start()
        worker.join(60)
    assert found and found[0] is not None and not seen, [str(w.message) for w in seen]


PROBLEM_SOURCE = """
import numpy as np
from autoq.engine.knapsack import Knapsack

def problem():  # twelve layers of four options, bits falling as the score rises
    rng = np.random.default_rng(0)
    costs = tuple(tuple(float(b) * 4096 for b in (2, 4, 8, 16)) for _ in range(12))
    scores = tuple(tuple(float(rng.lognormal(0, 1)) * 4.0 ** -b for b in (2, 4, 8, 16)) for _ in range(12))
    return Knapsack(space=None, costs=costs, capacity=4.5 * 4096 * 12, scores=scores)
"""


OTHER_THREADS_OUTPUT = """
import os, threading
from autoq.engine.ilp import solve_ilp
from tests_problem import problem
done = threading.Event()
def solve():
    p = problem()
    for _ in range(20):
        assert solve_ilp(p) is not None
    done.set()
worker = threading.Thread(target=solve)
worker.start()
n = 0
while not done.is_set() or n < 50:
    os.write(1, b"line %d\\n" % n)
    n += 1
worker.join()
os.write(1, b"total %d\\n" % n)
"""


def test_a_solve_leaves_what_other_threads_write_to_stdout_alone(tmp_path):
    """A solve pointed file descriptor 1 at /dev/null (to hide HiGHS' debug line) for the whole process: a web
    server's or a logger's lines written meanwhile by other threads were lost."""
    import subprocess
    import sys

    (tmp_path / "tests_problem.py").write_text(PROBLEM_SOURCE)
    out = subprocess.run([sys.executable, "-c", OTHER_THREADS_OUTPUT], capture_output=True, text=True, check=True, timeout=120,
                         cwd=tmp_path).stdout.split("\n")
    total = int(out[-2].split()[1])
    assert out[:-2] == [f"line {i}" for i in range(total)]


def test_a_solve_with_stdout_closed_works(tmp_path):
    """sys.stdout None (``>&-``, pythonw): the solve's flush of it raised AttributeError, and every ILP search failed."""
    import subprocess
    import sys

    (tmp_path / "tests_problem.py").write_text(PROBLEM_SOURCE)
    script = "from autoq.engine.ilp import solve_ilp; from tests_problem import problem; assert solve_ilp(problem()) is not None"
    done = subprocess.run(f'"{sys.executable}" -c "{script}" >&-', shell=True, cwd=tmp_path, timeout=120, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr



def test_greedy_starts_each_layer_at_the_least_sensitive_of_its_cheapest_options():
    """Two options of one cost: the greedy start takes the one of lower score (sensitivity), not the first listed."""
    assert greedy_allocate(Knapsack(None, ((1.0, 1.0),), 1.0, ((5.0, 1.0),))) == [1]


def test_the_sweep_steps_from_the_budget_towards_the_cheapest_cost_and_greedy_seeds_are_distinct():
    """``sweep(n)``: n capacities a step of (budget - cheapest) / n apart from the budget down, the last a step above the
    cheapest; greedy allocations over it are distinct (a repeat is no new seed)."""
    assert Knapsack(None, ((1.0, 2.0), (1.0, 2.0)), 4.0, ((2.0, 1.0), (2.0, 1.0))).sweep(4) == [4.0, 3.5, 3.0, 2.5]
    p = problem("4.5bits")
    seeds = greedy_seeds(p, 16)
    assert len(set(seeds)) == len(seeds) and 1 < len(seeds) < 16  # 16 capacities, some of them the same allocation


def test_an_infeasible_binary_program_has_no_solution():
    """HiGHS reports no feasible point for x in {0, 1} with 2 <= x <= 3: ``None``, not the vector it stopped at."""
    from scipy.sparse import csr_array

    from autoq.engine.highs_mip import solve_binary

    assert solve_binary(np.array([1.0]), csr_array(np.array([[1.0]])), np.array([2.0]), np.array([3.0]), {}) is None
    assert solve_binary(np.array([1.0]), csr_array(np.array([[1.0]])), np.array([1.0]), np.array([3.0]), {}).tolist() == [1.0]
