"""pareto_front against a brute-force non-dominated filter."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from autoq.choice import Assignment
from autoq.engine.result import Point, pareto_front


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


def test_small_example():
    pts = [point(0, 0.80, 3.0), point(1, 0.85, 4.0), point(2, 0.83, 4.5), point(3, 0.99, 8.0), point(4, 0.70, 2.0), point(5, 0.80, 3.5)]
    assert [p.trial for p in pareto_front(pts)] == [4, 0, 1, 3]


def test_empty():
    assert pareto_front([]) == []
