"""The assignment an MLflow run recorded: a trial's ``assignment.json``, or a search's best frontier point,
with the search settings an export must reproduce (sequential statistics, the calibration data's fingerprint)."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from autoq.choice import Assignment
from autoq.errors import AutoqError


@dataclass(frozen=True)
class RunPoint:
    assignment: Assignment
    what: str  # "trial 7 (run ...)" or "the best frontier point, ..."
    sequential: bool = False  # the search captured statistics sequentially
    data_fingerprint: str = ""  # of the search's workload data ("" when not recorded)
    model_name: str = ""  # the searched model's name, as the search logged it
    model_source: str = ""  # what autoq.builtin.load_workload rebuilds it from ("" for a module the caller passed)
    calibration_digest: str = ""  # of the batches the search's data-driven methods calibrated on ("" when not recorded)
    n_calibration: int = 0
    model_hash: str = ""  # of the searched model's weights ("" when not recorded)


def point_from_run(tracking_uri: str, run_id: str) -> RunPoint:
    """The point of a trial run, or of a search's parent run (its highest-quality frontier point)."""
    from autoq.tracking import stored_run
    from autoq.tracking.runs import recorded

    client, run = stored_run(tracking_uri, run_id, "pass a trial's run id (or a search's parent run id) and the same --tracking-uri")
    assignment, what = _assignment(client, run)
    # a trial's search settings are on its parent; a search's are its own (it has a parent too when nested in a pipeline's run)
    parent_id = None if run.data.tags.get("autoq.kind") == "search" else run.data.tags.get("mlflow.parentRunId")
    params = client.get_run(parent_id).data.params if parent_id else run.data.params
    return RunPoint(assignment, what, params.get("sequential") == "True", params.get("data_fingerprint", ""), params.get("model", ""),
                    recorded(params, "model_source"), recorded(params, "calibration_digest"), int(params.get("n_calibration_batches", 0)),
                    params.get("model_hash", ""))


def model_of(point: RunPoint) -> str:
    """The built-in name or directory the run's search loaded its model from, to export it without being told."""
    if not point.model_source:
        searched = f"{point.model_name!r}" if point.model_name else "a model"
        raise AutoqError(f"{point.what} searched {searched} given as a module (or by an autoq that did not log its source); "
                         "pass the model to export: --model NAME_OR_DIR, or autoq.export(model, ...)")
    return point.model_source


def _assignment(client, run) -> tuple[Assignment, str]:
    """(assignment, what it is) of a trial run, or of a search run's highest-quality frontier point."""
    from mlflow.exceptions import MlflowException

    from autoq.tracking.runs import no_download_bars

    run_id = run.info.run_id
    is_search = run.data.tags.get("autoq.kind") == "search"
    artifact = "frontier.json" if is_search else "assignment.json"
    with tempfile.TemporaryDirectory() as tmp, no_download_bars():
        try:
            path = Path(client.download_artifacts(run_id, artifact, tmp))
        except (MlflowException, OSError):
            raise AutoqError(f"MLflow run {run_id!r} has no {artifact}; is it an autoq trial or search run?") from None
        text = path.read_text()
    if not is_search:
        trial = run.data.tags.get("autoq.trial", "?")
        return Assignment.from_json(text), f"trial {trial} (run {run_id})"
    frontier = json.loads(text)
    if not frontier:
        from autoq.tracking.mlflow_logger import STUDY_TAG

        study = run.data.tags.get(STUDY_TAG)
        resume = f"autoq search --resume {study}" if study else "autoq search --resume STUDY_NAME"
        raise AutoqError(f"search run {run_id!r} has no finished trial yet (its frontier is empty); resume the search ({resume}) "
                         "and export a point of its frontier then")
    from autoq.engine.result import best_rank

    best = max(frontier, key=lambda p: best_rank(p["quality"], p["effective_bits"], p.get("latency_ms"), p["trial"]))  # as result.best
    return Assignment.from_json(json.dumps(best["assignment"])), f"the best frontier point, trial {best['trial']}, of search run {run_id}"
