"""pareto_front against a brute-force non-dominated filter."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from autoq.choice import Assignment
from autoq.engine.result import Point, best_point, pareto_front


def point(trial: int, quality: float, bits: float) -> Point:
    return Point(trial=trial, assignment=Assignment(), quality=quality, effective_bits=bits, size_bytes=int(bits * 100))


def dominates(q: Point, p: Point) -> bool:
    return (
        q.effective_bits <= p.effective_bits
        and q.quality >= p.quality
        and (q.effective_bits < p.effective_bits or q.quality > p.quality)
    )


def brute_force(points: list[Point]) -> list[Point]:
    """Non-dominated points; among exact (bits, quality) duplicates keep the earliest trial."""
    kept = []
    for p in points:
        if any(dominates(q, p) for q in points):
            continue
        if any(q.effective_bits == p.effective_bits and q.quality == p.quality and q.trial < p.trial for q in points):
            continue
        kept.append(p)
    return sorted(kept, key=lambda p: p.effective_bits)


def check(points: list[Point]) -> None:
    front = pareto_front(points)
    assert front == brute_force(points)
    assert not points or best_point(points) in front
    bits = [p.effective_bits for p in front]
    qualities = [p.quality for p in front]
    assert bits == sorted(bits)
    assert all(a < b for a, b in zip(bits, bits[1:]))
    assert all(a < b for a, b in zip(qualities, qualities[1:]))
    if points:
        assert front[0].effective_bits == min(p.effective_bits for p in points)
        assert front[-1].quality == max(p.quality for p in points)


# small value grids force ties in bits and in quality
coarse = st.lists(
    st.tuples(st.sampled_from([0.5, 0.7, 0.9, 0.95, 1.0]), st.sampled_from([2.0, 2.5, 3.0, 4.0, 4.5, 8.0])),
    max_size=25,
)
fine = st.lists(
    st.tuples(st.floats(-1.0, 1.0, allow_nan=False), st.floats(1.0, 16.0, allow_nan=False)),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(coarse)
def test_matches_brute_force_with_ties(pairs):
    check([point(i, q, b) for i, (q, b) in enumerate(pairs)])


@settings(max_examples=150, deadline=None)
@given(fine)
def test_matches_brute_force_continuous(pairs):
    check([point(i, q, b) for i, (q, b) in enumerate(pairs)])


def test_matches_brute_force_seeded_loops():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(0, 30)
        points = [point(i, rng.choice([0.1, 0.5, rng.random()]), rng.choice([2.0, 3.0, rng.uniform(2, 8)])) for i in range(n)]
        rng.shuffle(points)
        check(points)


def test_ties_keep_the_earliest_trial_regardless_of_input_order():
    a, b, c = point(7, 0.9, 4.0), point(3, 0.9, 4.0), point(5, 0.9, 4.0)
    assert pareto_front([a, b, c]) == [b]
    assert pareto_front([c, a, b])[0].trial == 3
    # the best point is that frontier point too (Ray workers record in the order trials finish: the best was trial 7)
    assert best_point([a, b, c]) == best_point([c, a, b]) == b


def test_small_example():
    pts = [point(0, 0.80, 3.0), point(1, 0.85, 4.0), point(2, 0.83, 4.5), point(3, 0.99, 8.0), point(4, 0.70, 2.0), point(5, 0.80, 3.5)]
    assert [p.trial for p in pareto_front(pts)] == [4, 0, 1, 3]


def test_empty():
    assert pareto_front([]) == []


# ---------------------------------------------------------------- with latency (three objectives)


def lpoint(trial: int, quality: float, bits: float, latency: float) -> Point:
    return Point(trial=trial, assignment=Assignment(), quality=quality, effective_bits=bits, size_bytes=int(bits * 100), latency_us=latency)


def dominates3(q: Point, p: Point) -> bool:
    weak = q.quality >= p.quality and q.effective_bits <= p.effective_bits and q.latency_us <= p.latency_us
    return weak and (q.quality > p.quality or q.effective_bits < p.effective_bits or q.latency_us < p.latency_us)


def brute_force3(points: list[Point]) -> list[Point]:
    kept = [
        p for p in points
        if not any(dominates3(q, p) for q in points)
        and not any((q.quality, q.effective_bits, q.latency_us) == (p.quality, p.effective_bits, p.latency_us) and q.trial < p.trial for q in points)
    ]
    return sorted(kept, key=lambda p: p.effective_bits)


def test_latency_keeps_a_point_that_bits_alone_would_drop():
    # same bits, lower quality, but faster: on the 3-objective front, not on the 2-objective one
    a, b = lpoint(0, 0.9, 4.0, 100.0), lpoint(1, 0.8, 4.0, 50.0)
    assert pareto_front([a, b]) == [a, b]
    assert pareto_front([point(0, 0.9, 4.0), point(1, 0.8, 4.0)]) == [point(0, 0.9, 4.0)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=30))
def test_three_objective_front_matches_brute_force(values):
    points = [lpoint(i, q / 5, 2 + b, 10.0 * lat) for i, (q, b, lat) in enumerate(values)]
    front = pareto_front(points)
    assert sorted(front, key=lambda p: p.trial) == sorted(brute_force3(points), key=lambda p: p.trial)
    # result.best: of equal quality and bits the fastest, a point of the front (the slowest, dominated, was a mutant's)
    assert best_point(points) in front
    assert [p.effective_bits for p in front] == sorted(p.effective_bits for p in front)


def test_points_of_which_only_some_have_a_latency_get_the_two_objective_front():
    """Latency joins the objectives only where every point has one: a front of some points with and some without (read
    back from runs of two searches) is the quality-bits front, not a comparison of None with a latency (TypeError)."""
    a, b, c = lpoint(0, 0.9, 4.0, 100.0), point(1, 0.8, 4.0), lpoint(2, 0.95, 8.0, 50.0)
    assert pareto_front([a, b, c]) == [a, c]
