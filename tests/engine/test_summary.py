"""The closing summary of a search: counts read as English."""

from __future__ import annotations

import pytest

import autoq
from autoq.engine import format_summary


def test_one_trial_is_one_trial():
    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=1, seed_from="none", tracking_uri=None, storage=None, progress=False)
    summary = format_summary(result)
    assert "1 trial in " in summary and "1 trials" not in summary
    assert f" {result.best.size_bytes / 1e3:.1f} kB " in summary  # digits-cnn's points all read '0.02 MB'


def test_a_best_point_that_is_the_uniform_one_or_ties_it_is_not_called_a_gain_and_a_bare_budget_names_bits():
    """'the search is +0.0000 better' where the best point was the uniform baseline; '--budget 3.5' read 'within 3.5'."""
    from autoq.choice import Assignment
    from autoq.engine.result import Point
    from autoq.engine.summary import _gain

    result = autoq.search("digits-cnn", budget="3.5", n_trials=1, seed_from="none", tracking_uri=None, storage=None, progress=False)
    summary = format_summary(result)
    assert "within 3.5 bits (" in summary
    assert result.best.uniform and "; the best point found is this uniform assignment." in summary and "+0.0000 better" not in summary
    a, b = Assignment({"x": "int4-ch-asym:rtn-mse"}), Assignment({"x": "int8-ch-asym:rtn-mse"})
    assert _gain(Point(1, a, 0.91234, 4.0, 1), Point(0, b, 0.91233, 8.0, 1)) == "the search's best ties it (+1.0e-05 better)"
    assert _gain(Point(1, a, 0.9, 4.0, 1), Point(0, b, 0.9, 8.0, 1)) == "the search's best ties it"
    assert _gain(Point(1, a, 0.95, 4.0, 1), Point(0, b, 0.9, 8.0, 1)) == "the search is +0.0500 better"
    assert _gain(Point(1, a, 0.9003, 4.0, 1), Point(0, b, 0.9, 8.0, 1)) == "the search is +0.0003 better"  # 4 decimals tell them apart
    # a -loss of 1e-4: 3e-5 is a third of it, no tie, and shown in digits that tell the two apart ('-0.0001' both)
    assert _gain(Point(1, a, -5.4e-5, 4.0, 1), Point(0, b, -8.2e-5, 8.0, 1)) == "the search is +2.800e-05 better"


def test_small_qualities_are_shown_in_significant_digits():
    """An evaluate of -MSE around 1e-4: four frontier points of -1.44e-4 to -5.4e-5 all read -0.0001."""
    from autoq.engine.summary import format_quality
    from autoq.tracking.run_notes import search_note

    assert [format_quality(q) for q in (-1.44e-4, -8.2e-5, -6.4e-5, -5.4e-5)] == ["-0.0001440", "-8.200e-05", "-6.400e-05", "-5.400e-05"]
    assert [format_quality(q) for q in (0.98123, 0.1, 0.0, -12.5)] == ["0.9812", "0.1000", "0.0000", "-12.5000"]
    from autoq.choice import Assignment
    from autoq.engine.result import Point

    one = Assignment({"x": "int4-ch-asym:rtn-mse"})
    note = search_note([Point(i, one, q, 4.0 + i, 100) for i, q in enumerate((-1.44e-4, -8.2e-5))], "sqlite:///mlflow.db")
    assert "| 0 | -0.0001440 |" in note and "| 1 | -8.200e-05 |" in note


def test_sizes_are_shown_in_the_unit_that_tells_them_apart():
    from autoq.engine.summary import format_size

    assert [format_size(n) for n in (21_480, 999_999, 1_000_000, 22_700_000, 3_500_000_000)] == [
        "21.5 kB", "1000.0 kB", "1.00 MB", "22.70 MB", "3.50 GB"]
    assert [format_size(n, binary=True) for n in (21_480, 1_048_575, 1_048_576, 30_961_920, 3 * 2**30)] == [
        "21.0 KiB", "1024.0 KiB", "1.00 MiB", "29.53 MiB", "3.00 GiB"]


def test_sizes_beside_a_budget_in_binary_units_are_in_them_and_the_best_point_states_its_size():
    """Within a 30MiB budget a point of 29.53 MiB read '30.96 MB', over the budget at a glance; the best point's line
    gave its bits alone, not the size the budget limits."""
    result = autoq.search("digits-cnn", budget="24KiB", n_trials=2, seed_from="none", tracking_uri=None, storage=None, progress=False)
    summary = format_summary(result)
    best = f"{result.best.size_bytes / 1024:.1f} KiB"
    assert f" {best} " in summary and " kB " not in summary
    assert f"at {result.best.effective_bits:.3f} bits and {best}." in summary
    decimal = autoq.search("digits-cnn", budget="24kB", n_trials=1, seed_from="none", tracking_uri=None, storage=None, progress=False)
    assert f"bits and {decimal.best.size_bytes / 1e3:.1f} kB." in format_summary(decimal)


def test_a_storage_read_back_with_its_password_hidden_says_so():
    """'autoq pareto' printed an optuna-dashboard command with '***' for the password, which cannot connect."""
    import dataclasses

    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=1, seed_from="none", tracking_uri=None, storage=None, progress=False)
    summary = format_summary(dataclasses.replace(result, storage="postgresql://me:***@db/s"))
    assert "in postgresql://me:***@db/s (MLflow keeps it with its password hidden: put yours in place of ***)." in summary
    # failed trials are pointed to where their errors are: it said "see their 'error' tags" with no MLflow run to see
    assert "2 trials failed (the first one's error was warned of)." in format_summary(dataclasses.replace(result, n_failed=2))
    assert "1 trial failed (see the 'error' user attribute of each failed Optuna trial)" in format_summary(dataclasses.replace(result, n_failed=1, storage="sqlite:///o.db"))
    assert "failed (see the 'error' tag of each failed MLflow run)" in format_summary(dataclasses.replace(result, n_failed=2, tracking_uri="sqlite:///m.db"))


def test_a_database_tracking_uris_password_is_not_printed_in_the_open_command():
    """The summary (and a Python search's closing lines) printed 'mlflow ui --backend-store-uri postgresql://me:secret@...'
    beside a store shown with its password hidden."""
    import dataclasses

    from autoq.engine.summary import closing_note, open_command

    assert open_command("postgresql://me:secret@db/m", "r") == "mlflow ui --backend-store-uri 'postgresql://me:***@db/m'"
    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=1, seed_from="none", tracking_uri=None, storage=None, progress=False)
    uri = "postgresql://me:secret@db/m"
    for text in (format_summary(dataclasses.replace(result, tracking_uri=uri, parent_run_id="p")),
                 closing_note(dataclasses.replace(result, tracking_uri=uri, parent_run_id="p"))):
        assert "secret" not in text and "put yours in place of ***" in text


def test_a_best_uniform_of_only_some_baselines_says_so_and_logs_no_gain(mlflow_uri):
    """--strategy random (ilp, greedy) evaluates only the uniform assignments it happens to propose: the summary called
    the best of those "the best uniform within budget" and logged its gain (+0.0822 where the true one was +0.0511)."""
    import dataclasses

    from mlflow.tracking import MlflowClient

    from autoq.engine.parent_run import summary_metrics

    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=8, tracking_uri=mlflow_uri, storage=None, progress=False)
    evaluated, within = result.uniform_coverage
    assert evaluated == within > 1  # the optuna strategy evaluates every baseline first
    assert result.n_uniform == within == autoq.SearchResult.from_mlflow(result.parent_run_id, mlflow_uri).n_uniform
    metrics = MlflowClient(mlflow_uri).get_run(result.parent_run_id).data.metrics
    assert metrics["n_uniform_evaluated"] == metrics["n_uniform_baselines"] == within and "gain_over_uniform" in metrics
    # the gain is the search's best over the best uniform one: positive where mixed precision won (the UI sorts by it)
    assert metrics["gain_over_uniform"] == pytest.approx(result.best.quality - result.best_uniform.quality)
    assert metrics["best_uniform_quality"] == pytest.approx(result.best_uniform.quality)
    assert "Best uniform within budget: trial " in format_summary(result)
    ran = len(result.points)
    assert ran > within
    more = dataclasses.replace(result, n_uniform=ran)  # as when a strategy proposed only some of them
    summary = format_summary(more)
    assert "Best uniform evaluated: trial " in summary and "Best uniform within budget" not in summary
    assert f"Only {within} of the {ran} uniform assignments within the budget were evaluated (the strategy proposed no others" in summary
    fewer = format_summary(dataclasses.replace(result, n_uniform=ran + 1))  # the cause known: said, not guessed
    assert f"(the search ran {ran} trials, fewer than the {ran + 1} baselines, which the optuna strategy evaluates first: more trials evaluate the rest (a larger --n-trials; a search --timeout or Ctrl-C stopped: its resume)" in fewer
    mixes = tuple(p for p in result.points if not p.uniform)
    none = format_summary(dataclasses.replace(result, points=mixes, n_uniform=0))  # a cap of 0 is one way there: said with the rest
    assert mixes and ("No uniform assignment was evaluated, so there is no baseline to compare with: none is within this budget, the space "
                      "gives its layers no option in common, pins cover every layer, or max_uniform_seeds=0 enqueued none.") in none
    logged = summary_metrics(list(result.points), 0.1, 0, 0, within + 3)
    assert "gain_over_uniform" not in logged and "best_uniform_quality" not in logged and logged["n_uniform_evaluated"] == within


def test_repeated_assignments_are_counted_in_the_summary():
    """Late in a long search on a small space most trials repeat an earlier assignment (557 distinct of 1956): the summary
    counted them all as evaluated without a word."""
    import dataclasses

    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=3, seed_from="none", tracking_uri=None, storage=None, progress=False)
    assert "repeated an earlier" not in format_summary(result)
    first = result.points[0]
    again = dataclasses.replace(first, trial=99, run_id=None)
    summary = format_summary(dataclasses.replace(result, points=(*result.points, again, dataclasses.replace(again, trial=100))))
    assert "5 trials in " in summary and "2 trials repeated an earlier one's assignment" in summary
