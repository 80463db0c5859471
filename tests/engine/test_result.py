"""``SearchResult``: the search's Optuna study for Optuna's own tools, its points' readings, its baselines and coverage."""

from __future__ import annotations

import optuna
import pytest
from helpers import search_result

import autoq
from autoq.choice import Assignment
from autoq.engine.result import Point
from autoq.errors import AutoqError


def test_study_loads_every_proposal_from_the_storage(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = autoq.search("digits-cnn", budget="3.5bits", n_trials=8, seed=1, storage=storage, tracking_uri=None, progress=False, seed_from="none")
    study = result.study()
    assert study.study_name == result.study_name and study.metric_names == ["quality", "effective_bits"]
    complete = {t.number: t for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    assert sorted(complete) == sorted(p.trial for p in result.points)
    for p in result.points:
        assert complete[p.trial].values == pytest.approx([p.quality, p.effective_bits])
        assert complete[p.trial].params == {name: choice.name for name, choice in p.assignment.items()}
    frame = study.trials_dataframe()
    assert len(frame) == len(study.trials) >= len(result.points)  # the over-budget proposals too, pruned
    # a short repr: the dataclass's printed every point, and the frontier again (770 kB for 100 trials of MiniLM)
    best = result.best
    assert repr(result) == (f"SearchResult(budget='3.5bits', points={len(result.points)}, frontier={len(result.frontier)}, best=<trial "
                            f"{best.trial}, quality {best.quality:.4g} at {best.effective_bits:.3f} bits>, study_name={result.study_name!r}, "
                            "parent_run_id=None)")


def test_an_in_memory_study_is_a_clear_error():
    result = autoq.search("digits-cnn", budget="3.5bits", n_trials=2, storage=None, tracking_uri=None, progress=False, seed_from="none")
    with pytest.raises(AutoqError, match="kept in memory \\(storage=None\\) and is gone"):
        result.study()


INT4, INT8 = Assignment({"x": "int4-ch-asym:rtn-mse"}), Assignment({"x": "int8-ch-asym:rtn-mse"})


def test_a_points_latency_reads_in_ms_and_its_row_names_a_source_even_without_one():
    """``latency_ms`` is the summed microseconds over 1000; a row with a latency always has a (string) source column."""
    point = Point(0, INT4, 0.9, 4.0, 100, latency_us=1500.0)
    assert point.latency_ms == 1.5
    assert point.row()["latency_ms"] == 1.5 and point.row()["latency_source"] == ""
    assert "latency_ms" not in Point(0, INT4, 0.9, 4.0, 100).row()


def test_the_best_uniform_point_of_equal_qualities_is_the_one_of_fewer_bits():
    """Of uniform points of one quality the cheaper is the baseline (as result.best picks by bits after quality)."""
    cheap, dear = Point(0, INT4, 0.9, 4.0, 100, uniform=True), Point(1, INT8, 0.9, 8.0, 200, uniform=True)
    assert search_result(dear, cheap).best_uniform == cheap == search_result(cheap, dear).best_uniform


def test_a_repeated_uniform_assignment_counts_once_among_the_baselines_evaluated():
    """uniform_coverage counts distinct uniform assignments: a sampler's repeat of one is not a second baseline."""
    one, again = Point(0, INT4, 0.9, 4.0, 100, uniform=True), Point(3, INT4, 0.9, 4.0, 100, uniform=True)
    assert search_result(one, again, n_uniform=2).uniform_coverage == (1, 2)


def test_frontier_points_carry_how_the_search_ran_as_its_points_do():
    """autoq.export(model, result.frontier[i]) reads how the search calibrated from the point: frontier points carry it."""
    result = search_result(Point(0, INT4, 0.9, 4.0, 100), sequential=True, calibration_digest="abc", n_calibration=3)
    assert result.frontier[0].searched == result.points[0].searched
    assert result.frontier[0].searched.sequential and result.frontier[0].searched.n_calibration == 3


def test_a_result_with_latencies_covers_itself():
    """A frontier point matched in quality, bits and latency counts as covered (ties cover), with or without latency."""
    timed = search_result(Point(0, INT4, 0.9, 4.0, 100, latency_us=50.0), Point(1, INT8, 0.95, 8.0, 200, latency_us=80.0))
    assert timed.covers(timed)
    slower = search_result(Point(0, INT4, 0.9, 4.0, 100, latency_us=60.0))
    assert timed.covers(slower) and not slower.covers(timed)
