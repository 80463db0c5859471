"""The closing summary of a search: counts read as English."""

from __future__ import annotations

import dataclasses

import pytest
from helpers import search_result

import autoq
from autoq.choice import Assignment
from autoq.engine import format_summary
from autoq.engine.result import Point
from autoq.engine.summary import _gain, closing_note, export_command, open_command

INT4, INT8 = Assignment({"x": "int4-ch-asym:rtn-mse"}), Assignment({"x": "int8-ch-asym:rtn-mse"})


def gain(best: float, uniform: float) -> str:
    """How the summary words a best point of quality ``best`` (int4) over the best uniform one of ``uniform`` (int8)."""
    return _gain(Point(1, INT4, best, 4.0, 1), Point(0, INT8, uniform, 8.0, 1))


def test_one_trial_is_one_trial():
    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=1, seed_from="none", tracking_uri=None, storage=None, progress=False)
    summary = format_summary(result)
    assert "1 trial in " in summary and "1 trials" not in summary
    assert f" {result.best.size_bytes / 1e3:.1f} kB " in summary  # digits-cnn's points all read '0.02 MB'


def test_a_best_point_that_is_the_uniform_one_or_ties_it_is_not_called_a_gain_and_a_bare_budget_names_bits():
    """'the search is +0.0000 better' where the best point was the uniform baseline; '--budget 3.5' read 'within 3.5'."""
    result = autoq.search("digits-cnn", budget="3.5", n_trials=1, seed_from="none", tracking_uri=None, storage=None, progress=False)
    summary = format_summary(result)
    assert "within 3.5 bits (" in summary
    assert result.best.uniform and "; the best point found is this uniform assignment." in summary and "+0.0000 better" not in summary
    assert gain(0.91234, 0.91233) == "the search's best ties it (+1.0e-05 better)"
    assert gain(0.9, 0.9) == "the search's best ties it"
    assert gain(0.95, 0.9) == "the search is +0.0500 better"
    assert gain(0.9003, 0.9) == "the search is +0.0003 better"  # 4 decimals tell them apart
    # a -loss of 1e-4: 3e-5 is a third of it, no tie, and shown in digits that tell the two apart ('-0.0001' both)
    assert gain(-5.4e-5, -8.2e-5) == "the search is +2.800e-05 better"


def test_small_qualities_are_shown_in_significant_digits():
    """An evaluate of -MSE around 1e-4: four frontier points of -1.44e-4 to -5.4e-5 all read -0.0001."""
    from autoq.engine.summary import format_quality
    from autoq.tracking.run_notes import search_note

    assert [format_quality(q) for q in (-1.44e-4, -8.2e-5, -6.4e-5, -5.4e-5)] == ["-0.0001440", "-8.200e-05", "-6.400e-05", "-5.400e-05"]
    assert [format_quality(q) for q in (0.98123, 0.1, 0.0, -12.5)] == ["0.9812", "0.1000", "0.0000", "-12.5000"]
    note = search_note([Point(i, INT4, q, 4.0 + i, 100) for i, q in enumerate((-1.44e-4, -8.2e-5))], "sqlite:///mlflow.db")
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
    assert open_command("postgresql://me:secret@db/m", "r") == "mlflow ui --backend-store-uri 'postgresql://me:***@db/m'"
    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=1, seed_from="none", tracking_uri=None, storage=None, progress=False)
    uri = "postgresql://me:secret@db/m"
    for text in (format_summary(dataclasses.replace(result, tracking_uri=uri, parent_run_id="p")),
                 closing_note(dataclasses.replace(result, tracking_uri=uri, parent_run_id="p"))):
        assert "secret" not in text and "put yours in place of ***" in text


def test_a_best_uniform_of_only_some_baselines_says_so_and_logs_no_gain(mlflow_uri):
    """--strategy random (ilp, greedy) evaluates only the uniform assignments it happens to propose: the summary called
    the best of those "the best uniform within budget" and logged its gain (+0.0822 where the true one was +0.0511)."""

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
    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=3, seed_from="none", tracking_uri=None, storage=None, progress=False)
    assert "repeated an earlier" not in format_summary(result)
    first = result.points[0]
    again = dataclasses.replace(first, trial=99, run_id=None)
    summary = format_summary(dataclasses.replace(result, points=(*result.points, again, dataclasses.replace(again, trial=100))))
    assert "5 trials in " in summary and "2 trials repeated an earlier one's assignment" in summary


def _uniform(trial: int = 0, quality: float = 0.9, **kw) -> Point:
    return Point(trial, INT4, quality, 4.0, 100, uniform=True, **kw)


def test_a_plugins_param_of_none_adds_no_plugin_option():
    """The ``plugins`` param 'none' names no plug-in: the export command gets no '--plugin none'."""
    command = export_command("r", "sqlite:///m.db", plugins="none")
    assert "--plugin" not in command and command.endswith("--out quantized")
    assert "--plugin my_methods" in export_command("r", "sqlite:///m.db", plugins="my_methods")


def test_a_servers_run_page_drops_its_trailing_slash_and_query():
    """A tracking server's run page is '<server>/#/runs/<id>', without a doubled '/' or the URI's query."""
    assert open_command("http://host:5000/", "abc") == "http://host:5000/#/runs/abc   (in a browser)"
    assert open_command("http://host:5000?x=1", "abc") == "http://host:5000/#/runs/abc   (in a browser)"


def test_points_with_run_ids_but_no_tracking_uri_show_no_run_id_column():
    """Without a tracking store there is no run to export: the frontier table has no 'MLflow run id' column."""
    summary = format_summary(search_result(_uniform(run_id="abc123")))
    assert "MLflow run id" not in summary and "abc123" not in summary


@pytest.mark.parametrize("source, kind", [("estimate:roofline:h100", "(an ESTIMATE from published peaks, not a measurement)"),
                                          ("table:h100", "(from a measured kernel table)")])
def test_an_estimated_latency_is_called_an_estimate(source, kind):
    """A roofline latency (source 'estimate:...') is said to be an estimate, a table's to be measured."""
    assert f"source {source} {kind}" in format_summary(search_result(_uniform(latency_us=12.0, latency_source=source)))


def test_an_unrecorded_reference_reads_not_recorded_and_a_zero_one_reads_zero():
    """A NaN reference quality is 'not recorded'; a reference of 0.0 is a recorded value, shown as 0.0000."""
    result = search_result(_uniform())
    assert "unquantized = not recorded)" in format_summary(dataclasses.replace(result, reference_quality=float("nan")))
    assert "unquantized = 0.0000)" in format_summary(dataclasses.replace(result, reference_quality=0.0))


def test_no_uniform_point_with_an_unrecorded_baseline_count_gives_the_general_reason():
    """Without a recorded count of baselines (n_uniform=None) no uniform point is not said to be 'none in the space'."""
    summary = format_summary(search_result(Point(0, INT4, 0.9, 4.0, 100)))
    assert "No uniform assignment was evaluated (none fits this budget, the space has none, or the strategy proposed none)." in summary


def test_over_budget_proposals_and_the_evaluation_pass_are_counted():
    """'1 over-budget proposal was skipped', '3 ... were skipped'; the evaluation pass in 2 decimals."""
    result = search_result(_uniform(), eval_seconds=1.234)
    assert "1 over-budget proposal was skipped without evaluation" in format_summary(dataclasses.replace(result, n_infeasible=1))
    assert "3 over-budget proposals were skipped without evaluation" in format_summary(dataclasses.replace(result, n_infeasible=3))
    assert "(one evaluation pass: 1.23 s)" in format_summary(result)


def test_a_finished_search_exports_the_best_points_own_run():
    """The export line names the best point's trial run where it has one, else the parent run."""
    result = search_result(_uniform(run_id="trialrun"), tracking_uri="sqlite:///m.db", parent_run_id="parentrun")
    summary = format_summary(result)
    assert "autoq export --run-id trialrun " in summary and "(its trial's run; or a frontier point's" in summary
    assert "(frontier.csv, frontier.png, pareto=true tags)" in summary and "has not finished" not in summary
    assert "has not finished" in format_summary(result, finished=False)
    bare = format_summary(dataclasses.replace(result, points=(_uniform(),), frontier=(_uniform(),)))
    assert "autoq export --run-id parentrun " in bare and "(the search's run;" in bare


def test_a_storage_with_stars_but_no_hidden_password_gets_no_password_note():
    """Only a ':***@' password, as MLflow hides it, is called hidden: '***' elsewhere in a path is not."""
    summary = format_summary(search_result(_uniform(), storage="sqlite:///a***b.db"))
    assert "Optuna study 's' in sqlite:///a***b.db." in summary and "password hidden" not in summary


def test_a_best_point_that_is_a_later_repeat_of_the_uniform_one_is_not_called_a_tie():
    """Points come in the order trials finish (Ray): the best point (earliest trial) and the best uniform one (first
    listed) may be two trials of one assignment, and that is 'this uniform assignment', not a tie."""
    summary = format_summary(search_result(_uniform(trial=5), _uniform(trial=2)))
    assert "the best point found is this uniform assignment." in summary and "ties it" not in summary


def test_a_gain_below_the_four_decimals_shown_is_told_in_digits_and_equal_zeros_tie():
    """A tie is a difference strictly below 5e-5 of the qualities' size (capped at 1): at 0.58, 3e-5 is no tie, and it
    read '+0.0000 better'; it is told in digits that show it. Two qualities of 0 tie ('+0.0000 better' too)."""
    assert gain(0.58003, 0.58) == "the search is +3.0e-05 better"
    best, uniform = 0.579084906784652, 0.5791138624777759  # best - uniform == -5e-5 * uniform exactly: no tie
    assert abs(best - uniform) == 5e-5 * uniform
    assert gain(best, uniform) == "the search is -2.9e-05 better"
    assert gain(0.0, 0.0) == "the search's best ties it"
    assert gain(0.9001, 0.9) == "the search is +0.0001 better"


def test_a_gain_at_qualities_of_0_1_reads_in_four_decimals():
    """Qualities of 0.1 and above (an accuracy) read in 4 decimals, the gain too; below 0.1 (a -loss) in 4 digits."""
    assert gain(0.1, 0.09) == "the search is +0.0100 better"
    assert gain(0.09, 0.08) == "the search is +0.01000 better"


def test_one_deleted_trial_run_is_said_in_the_singular():
    """'1 of its trial runs is deleted in MLflow', where the runs left hold no uniform point."""
    mixed = Point(0, INT4, 0.9, 4.0, 100)
    assert "(1 of its trial runs is deleted in MLflow)" in format_summary(search_result(mixed), deleted=1)
    assert "(2 of its trial runs are deleted in MLflow)" in format_summary(search_result(mixed), deleted=2)


def test_the_closing_note_of_a_search_without_mlflow_names_its_optuna_study():
    """A search kept in an Optuna storage alone ends by naming that study; one kept nowhere says it is in the result only."""
    result = search_result(_uniform())
    assert "Optuna study 's' in sqlite:///o.db (no MLflow: tracking_uri=None)" in closing_note(dataclasses.replace(result, storage="sqlite:///o.db"))
    assert "kept in this result only (tracking_uri=None, storage=None)" in closing_note(result)
