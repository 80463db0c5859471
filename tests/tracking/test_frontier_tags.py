"""The ``pareto`` tag of a search's trial runs: every run has one, and ``finish`` writes only those that change."""

from __future__ import annotations

from helpers import tracked_point
from mlflow.tracking import MlflowClient

from autoq.engine.result import Point
from autoq.tracking import MlflowTracker


def test_finish_tags_the_frontier_and_a_later_session_moves_it(mlflow_uri):
    """finish set both tags of every trial, one call each (seconds at thousands of trials, a request each on a tracking
    server); a trial is now logged off the frontier and finish changes only what moved, a session before included."""
    client = MlflowClient(mlflow_uri)
    tracker = MlflowTracker.open(mlflow_uri, "autoq")
    tracker.start("s", params={}, tags={})
    a, b = tracked_point(tracker, 0, 0.9, 4.0), tracked_point(tracker, 1, 0.8, 4.5)  # b is dominated by a
    assert client.get_run(a.run_id).data.tags["pareto"] == "false"  # logged off the frontier
    tracker.finish([a, b], [a], {}, None)
    assert {p.trial: client.get_run(p.run_id).data.tags["pareto"] for p in (a, b)} == {0: "true", 1: "false"}

    later = MlflowTracker.open(mlflow_uri, "autoq")  # a resumed session, on the same parent run
    later.parent_id = tracker.parent_id
    old = client.create_run(tracker.experiment_id, tags={"mlflow.parentRunId": tracker.parent_id, "autoq.trial": "2"})  # an older autoq's
    c = tracked_point(later, 3, 0.95, 3.0)  # dominates a and b
    legacy = Point(2, a.assignment, 0.5, 8.0, 800, run_id=old.info.run_id)
    later.finish([a, b, legacy, c], [c], {}, None)
    tags = {p.trial: client.get_run(p.run_id).data.tags.get("pareto") for p in (a, b, legacy, c)}
    assert tags == {0: "false", 1: "false", 2: "false", 3: "true"}
