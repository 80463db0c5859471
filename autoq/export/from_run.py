"""The assignment an MLflow run recorded: a trial's ``assignment.json``, or a search's best frontier point,
with the search settings an export must reproduce (sequential statistics, the calibration data's fingerprint)."""

from __future__ import annotations

import json
import shlex
import tempfile
from dataclasses import dataclass

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
    plugin_code: tuple[tuple[str, str], ...] = ()  # (plug-in PTQ method, its code digest as the search scored with it)
    run_id: str = ""  # the trial run that logged the point's quality, bits and size ("" when not recorded)


def point_from_run(tracking_uri: str, run_id: str) -> RunPoint:
    """The point of a trial run, or of a search's parent run (its highest-quality frontier point)."""
    from autoq.tracking import stored_run
    from autoq.tracking.runs import recorded, recorded_code

    client, run = stored_run(tracking_uri, run_id, "pass a trial's run id (or a search's parent run id) and the same --tracking-uri")
    _check_exportable(run, client.tracking_uri)
    assignment, what, point_run = _assignment(client, run)
    # a trial's search settings are on its parent; a search's are its own (it has a parent too when nested in a pipeline's run)
    parent_id = None if run.data.tags.get("autoq.kind") == "search" else run.data.tags.get("mlflow.parentRunId")
    params = _parent_params(client, parent_id, what) if parent_id else run.data.params
    _check_methods_known(assignment, what, params.get("plugins", "none"))
    return RunPoint(assignment, what, params.get("sequential") == "True", params.get("data_fingerprint", ""), params.get("model", ""),
                    recorded(params, "model_source"), recorded(params, "calibration_digest"), int(params.get("n_calibration_batches", 0)),
                    params.get("model_hash", ""), recorded_code(params), point_run)


def _check_exportable(run, tracking_uri: str) -> None:
    """Refuse a run that holds no point to export: a deleted one, a trial that failed, one autoq did not log."""
    from autoq.tracking.mlflow_logger import TRIAL_TAG, restore_command

    run_id, tags = run.info.run_id, run.data.tags
    if run.info.lifecycle_stage == "deleted":
        raise AutoqError(f"MLflow run {run_id!r} is deleted; restore it first ({restore_command(tracking_uri, run_id)}, or in the UI), "
                         "or export another run")
    if tags.get("autoq.kind") == "search":
        return  # a Ctrl-C'd search logged the frontier of what it finished; one killed outright has none (_assignment says so)
    if TRIAL_TAG not in tags:
        raise AutoqError(f"MLflow run {run_id!r} is not an autoq trial or search run (it has no {TRIAL_TAG!r} tag); pass the run id "
                         "of a trial (the UI's trial-N runs) or of a search's parent run")
    if run.info.status != "FINISHED" or "error" in tags:
        error = tags.get("error", "").strip().splitlines()
        why = f": {error[-1]}" if error else ""
        raise AutoqError(f"trial {tags[TRIAL_TAG]} (run {run_id}) did not finish (MLflow status {run.info.status}){why}; it has no "
                         "quality to stand behind: export a finished trial, such as a frontier point (autoq pareto NAME lists them)")


def _check_methods_known(assignment: Assignment, what: str, plugins: str) -> None:
    """Refuse, before loading the model, a point whose PTQ methods no loaded plug-in registers, naming the plug-ins
    the search ran with (logged as its ``plugins`` param)."""
    from autoq.choice import HALF_METHOD
    from autoq.ptq import method_names

    known = set(method_names())
    unknown = sorted({c.method for _, c in assignment.items() if c.method != HALF_METHOD and c.method not in known})
    if not unknown:
        return
    names = ", ".join(repr(m) for m in unknown)
    if plugins and plugins != "none":
        options = " ".join(f"--plugin {shlex.quote(p)}" for p in shlex.split(plugins))
        raise AutoqError(f"{what} uses PTQ method(s) {names}, which the search's plug-ins registered; add {options} "
                         "(or import them first, from Python)")
    raise AutoqError(f"{what} uses PTQ method(s) {names}, which no loaded plug-in registers; add --plugin MODULE_OR_FILE "
                     "of the plug-in that registered them (or import it first, from Python)")


def _parent_params(client, parent_id: str, what: str) -> dict:
    """The params of the search run a trial belongs to (its settings: sequential, data fingerprint, model)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(parent_id).data.params
    except MlflowException:
        raise AutoqError(f"{what} belongs to search run {parent_id!r}, which is no longer in the store (deleted for good by "
                         "'mlflow gc'?); the export needs its settings (model, data, sequential statistics)") from None


def model_of(point: RunPoint) -> str:
    """The built-in name or directory the run's search loaded its model from, to export it without being told."""
    if not point.model_source:
        searched = f"{point.model_name!r}" if point.model_name else "a model"
        raise AutoqError(f"{point.what} searched {searched} given as a module (or by an autoq that did not log its source); "
                         "pass the model to export: --model NAME_OR_DIR, or autoq.export(model, ...)")
    from pathlib import Path

    from autoq.builtin import BUILTINS

    source = point.model_source
    if source not in BUILTINS and not (Path(source) / "config.json").is_file():  # a local HF folder moved or deleted since
        raise AutoqError(f"{point.what} searched the Hugging Face model in {source}, which has no config.json now (moved or "
                         "deleted?); pass the model's folder where it is now: --model DIR, or autoq.export(DIR, ...)")
    return source


def _assignment(client, run) -> tuple[Assignment, str, str]:
    """(assignment, what it is, its trial run's id) of a trial run, or of a search run's highest-quality frontier point."""
    from autoq.tracking.runs import MissingArtifact, artifact_text, moved_artifacts, no_download_bars, resume_hint

    run_id = run.info.run_id
    is_search = run.data.tags.get("autoq.kind") == "search"
    artifact = "frontier.json" if is_search else "assignment.json"
    with tempfile.TemporaryDirectory() as tmp, no_download_bars():
        try:
            text = artifact_text(client, run, artifact, tmp)
        except MissingArtifact as exc:
            if is_search and run.info.status != "FINISHED":  # killed outright (kill -9): it logged no frontier
                raise AutoqError(f"search run {run_id!r} did not finish (MLflow status {run.info.status}) and logged no frontier; "
                                 f"{resume_hint(run, client.tracking_uri)}, or export one of its trial runs") from None
            raise AutoqError(moved_artifacts(exc)) from None  # _check_exportable let only runs through that log it
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:  # cut short: the search was writing it (MLflow copies an artifact in place)
        raise AutoqError(f"the {artifact} of MLflow run {run_id!r} cannot be read ({exc}); if its search is still writing it, "
                         "try again in a moment") from None
    if not is_search:
        trial = run.data.tags.get("autoq.trial", "?")
        return Assignment.from_json(text), f"trial {trial} (run {run_id})", run_id
    if not parsed:
        raise AutoqError(f"search run {run_id!r} has no finished trial yet (its frontier is empty); {resume_hint(run, client.tracking_uri)} "
                         "and export a point of its frontier then")
    from autoq.engine.result import best_rank

    best = max(parsed, key=lambda p: best_rank(p["quality"], p["effective_bits"], p.get("latency_ms"), p["trial"]))  # as result.best
    _check_not_deleted(client, best.get("run_id"), f"the best frontier point of search run {run_id!r}, trial {best['trial']}")
    what = f"the best frontier point, trial {best['trial']}, of search run {run_id}"
    if run.info.status == "RUNNING":  # a resumed search: its frontier is the one its last session logged as it ended
        what += " (as its last finished session logged it: the search is running again, or was killed, and may find better)"
    return Assignment.from_json(json.dumps(best["assignment"])), what, best.get("run_id") or ""


def _check_not_deleted(client, run_id: str | None, what: str) -> None:
    """Refuse a point whose trial run was deleted (in the UI): as exporting that run by its id is refused, and `autoq
    pareto`, reading the runs, leaves it out (it exported a point the other commands no longer showed)."""
    from mlflow.exceptions import MlflowException

    if not run_id:
        return
    try:
        stage = client.get_run(run_id).info.lifecycle_stage
    except MlflowException:  # deleted for good ('mlflow gc'): no restoring it
        raise AutoqError(f"{what} (run {run_id}) was deleted from MLflow for good ('mlflow gc'); export another point by its "
                         "trial run id (autoq pareto lists the frontier of the runs left)") from None
    if stage == "deleted":
        from autoq.tracking.mlflow_logger import restore_command

        raise AutoqError(f"{what} (run {run_id}) is deleted in MLflow; restore it ({restore_command(client.tracking_uri, run_id)}) to export "
                         "it, or export another point by its trial run id (autoq pareto lists the frontier of the runs left)")
