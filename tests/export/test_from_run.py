"""``autoq.export.from_run``: which model a run's point is exported from when none is passed."""

from __future__ import annotations

import json

import pytest
from helpers import logged_search, logged_trial

from autoq.choice import Assignment, LayerChoice
from autoq.errors import AutoqError
from autoq.export.from_run import RunPoint, model_of, point_from_run


def point(source: str, name: str = "m") -> RunPoint:
    return RunPoint(Assignment({}), "trial 3 (run abc)", model_name=name, model_source=source)


def test_a_builtin_or_an_existing_folder_is_the_model(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert model_of(point("digits-cnn")) == "digits-cnn"
    assert model_of(point(str(tmp_path))) == str(tmp_path)


def test_a_searched_folder_moved_since_says_to_pass_where_it_is_now(tmp_path):
    """It went on to load_workload, whose 'does not exist; pass a local Hugging Face model directory' named no option
    of the export."""
    gone = tmp_path / "moved-away"
    with pytest.raises(AutoqError, match=r"moved-away, which has no config\.json now .*--model DIR, or autoq\.export\(DIR"):
        model_of(point(str(gone)))
    gone.mkdir()  # a folder, but no model in it
    with pytest.raises(AutoqError, match="has no config.json now"):
        model_of(point(str(gone)))


def test_a_module_search_needs_its_model_passed():
    with pytest.raises(AutoqError, match="searched 'Net' given as a module"):
        model_of(point("", "Net"))


ASSIGNMENT = Assignment((("fc", LayerChoice.from_name("int8-ch-asym:rtn-mse")),))


def _search_run(client, frontier: list | None, status: str = "FINISHED") -> str:
    """A search's parent run as autoq logs one, with its frontier.json unless None, ended with ``status``, in an
    experiment of its own."""
    experiment = client.create_experiment(f"search-{len(client.search_experiments())}")
    return logged_search(client, experiment, status=status, texts=None if frontier is None else {"frontier.json": json.dumps(frontier)})


def test_a_finished_trial_tagged_with_an_error_is_refused(mlflow_uri):
    """A trial run tagged with an ``error`` is refused whatever its MLflow status (one set back to FINISHED in a client
    still failed): its quality is not one to export by, as a FAILED trial's is not; the status alone let it through."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    trial = logged_trial(client, _search_run(client, []), ASSIGNMENT)
    assert point_from_run(mlflow_uri, trial).assignment == ASSIGNMENT  # the same run, untagged, exports
    client.set_tag(trial, "error", "Traceback ...\nRuntimeError: boom")
    with pytest.raises(AutoqError, match=r"did not finish \(MLflow status FINISHED\): RuntimeError: boom; it has no quality to stand behind"):
        point_from_run(mlflow_uri, trial)


def test_a_finished_search_without_its_frontier_says_the_artifacts_moved(mlflow_uri):
    """A search that finished logged its frontier.json: its absence means the store's artifacts moved, not that the
    search did not finish (which is said of a search killed before logging one)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    with pytest.raises(AutoqError, match="has no artifact frontier.json .*artifact folder was moved or deleted") as info:
        point_from_run(mlflow_uri, _search_run(client, None))
    assert "did not finish" not in str(info.value)
    with pytest.raises(AutoqError, match=r"did not finish \(MLflow status KILLED\) and logged no frontier"):
        point_from_run(mlflow_uri, _search_run(client, None, status="KILLED"))


def test_a_frontier_point_without_a_trial_run_is_exported(mlflow_uri):
    """A point whose trial run was never logged (a Ray worker's log failed: run_id "") has no run that could have been
    deleted: it is exported from the frontier, not refused as a run deleted for good."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    row = {"trial": 2, "quality": 0.9, "effective_bits": 8.0, "run_id": "", "assignment": ASSIGNMENT.to_dict()}
    search = _search_run(client, [row])
    point = point_from_run(mlflow_uri, search)
    assert (point.assignment, point.run_id) == (ASSIGNMENT, "")
    assert point.what == f"the best frontier point, trial 2, of search run {search}"
