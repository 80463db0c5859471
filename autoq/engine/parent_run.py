"""The search's MLflow parent run: opened (or reopened on a resume) with its params, and its summary metrics.

Each trial's child run is the tracker's (:mod:`autoq.tracking`); this module holds what the search loop logs about
the search as a whole, so that the UI can compare searches by their params and sort them by their metrics.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from autoq.budget import Budget
from autoq.builtin.workload import Workload
from autoq.engine.result import Point, best_point, distinct_assignments
from autoq.engine.resume import read_run_id, read_settings, remember_run_id
from autoq.engine.strategy import sampler_name
from autoq.interrupts import deferred_interrupts
from autoq.plugins import portable
from autoq.space import SearchSpace
from autoq.tracking import STUDY_TAG, MlflowTracker, without_password

SEEDED_FROM_TAG = "autoq.seeded_from"  # what seeds a resumed search's new trials, where it differs from the seed_from param

if TYPE_CHECKING:
    from autoq.engine.runner import SearchConfig


def start_tracking(workload: Workload, config: SearchConfig, space: SearchSpace, budget: Budget, study_name: str, storage: str | None,
                    reference: float, weights: str, calibration_digest: str = "", seeded_from: str | None = None, n_uniform: int = 0,
                    code: Mapping[str, str] | None = None) -> MlflowTracker | None:
    """The MLflow parent run of this search, or ``None`` when tracking is off; ``seeded_from``: the metric or table
    file whose scores seeded it (``None``: none did, as when ``auto`` skipped the table or fell back). The unquantized
    model's quality is logged at once: a search killed outright (kill -9) showed 'unquantized = not recorded'."""
    if not config.tracking_uri:
        return None
    nest_under = config.mlflow_parent_run_id
    if config.resume and nest_under is None:  # the run the search was nested in holds its run: look for it there
        nest_under = read_settings(storage, study_name).get("mlflow_parent_run_id")
    recorded = read_run_id(storage, study_name) if config.resume else None  # the parent run a resumed search recorded
    tracker = MlflowTracker.open(config.tracking_uri, config.experiment, nest_under, recorded)
    try:
        return _open_parent_run(tracker, workload, config, space, budget, study_name, storage, reference, weights, calibration_digest,
                                seeded_from, n_uniform, code, recorded)
    except KeyboardInterrupt:  # after the run was made or reopened: the caller has no tracker to mark it stopped
        if tracker.parent_id is not None:
            with deferred_interrupts():
                tracker.client.set_terminated(tracker.parent_id, status="KILLED")
        raise
    except Exception:  # nor one to end it: it was left RUNNING
        tracker.abandon()
        raise


def _open_parent_run(tracker: MlflowTracker, workload: Workload, config: SearchConfig, space: SearchSpace, budget: Budget, study_name: str,
                     storage: str | None, reference: float, weights: str, calibration_digest: str, seeded_from: str | None,
                     n_uniform: int, code: Mapping[str, str] | None, recorded: str | None) -> MlflowTracker:
    """:func:`start_tracking`'s parent run: the search's own (``recorded``, the run its study names), reopened on a
    resume, or a new one with its params."""
    if config.resume and tracker.continue_search(study_name, storage, recorded):  # the same parent run, not a second one
        run = tracker.client.get_run(tracker.parent_id)
        if "reference_quality" not in run.data.metrics:  # started by an autoq that logged it last
            tracker.client.log_metric(tracker.parent_id, "reference_quality", reference, step=0)
        if run.data.params.get("seed_from", seeded_from or "none") != (seeded_from or "none"):  # a param is set once
            # its first session seeded nothing (all uniform baselines, or its table skipped) and this one seeds from a table
            tracker.client.set_tag(tracker.parent_id, SEEDED_FROM_TAG, seeded_from or "none")
        tracker.client.log_metric(tracker.parent_id, "n_uniform_baselines", n_uniform, step=0)
        if not any(f.path == "search_space.json" for f in tracker.client.list_artifacts(tracker.parent_id)):
            tracker.client.log_text(tracker.parent_id, space_json(space), "search_space.json")  # its first session stopped before
        remember_run_id(storage, study_name, tracker.parent_id)  # a search an earlier autoq started records it now
        return tracker
    parent_id = tracker.start(
        study_name,
        params={
            "budget": budget.text, "budget_kind": budget.kind, "budget_value": budget.value,
            "model": workload.name, "model_source": workload.source or "none", "space": config.space, "seed": config.seed, "sampler": sampler_name(config.sampler),
            "strategy": config.strategy, "seed_from": seeded_from or "none",
            "skip": listed_param(config.skip), "pins": listed_param(f"{pattern}={choice}" for pattern, choice in config.pins),
            "n_trials": config.n_trials, "n_layers": len(space.layers), "metric": workload.metric[:500],
            "data_fingerprint": workload.data_fingerprint, "optuna_storage": without_password(storage) if storage else "memory",
            "study_name": study_name, "device": config.device or "none", "batch": config.batch,
            "backend": config.backend, "workers": config.workers, "max_retries": config.max_retries,
            "sequential": config.sequential, "calibration_digest": calibration_digest or "none",
            "n_calibration_batches": len(workload.calibration),
            "model_hash": weights,  # an export by run id checks it rebuilds these weights
            "plugins": " ".join(shlex.quote(portable(p)) for p in config.plugins) or "none",  # the export needs them too
            "plugin_code": json.dumps(dict(code or {}), sort_keys=True),  # an export by run id refuses an edited plug-in method
        },
        tags={"autoq.kind": "search", "autoq.model": workload.name, STUDY_TAG: study_name},
    )
    tracker.client.log_text(parent_id, space_json(space), "search_space.json")
    tracker.client.log_metric(parent_id, "reference_quality", reference, step=0)
    # at the start too: a search killed outright, read back, took every baseline for evaluated ("best uniform within budget")
    tracker.client.log_metric(parent_id, "n_uniform_baselines", n_uniform, step=0)
    remember_run_id(storage, study_name, parent_id)
    return tracker


def listed_param(items: Iterable[str]) -> str:
    """``--skip`` patterns or ``--pin`` rules as one MLflow param: shell words, so that a search's can be compared and
    filtered in the UI (``params.skip = 'none'``); cut at MLflow's 6,000 characters, the stored study holding them whole."""
    text = " ".join(shlex.quote(item) for item in items) or "none"
    return text if len(text) <= 6000 else text[:5990] + " ..."


def summary_metrics(points: list[Point], eval_seconds: float, n_infeasible: int, n_failed: int, n_uniform: int) -> dict[str, float]:
    """The parent run's summary metrics (reference_quality is logged at the start). ``best_uniform_quality`` and
    ``gain_over_uniform`` only where every one of the ``n_uniform`` uniform baselines was evaluated: over some of them
    (a strategy that proposes its own) the gain was overstated, and the UI sorts by it."""
    metrics = {"eval_seconds": eval_seconds, "n_evaluated": len(points), "n_distinct": distinct_assignments(points), "n_over_budget": n_infeasible,
               "n_failed": n_failed, "n_uniform_baselines": n_uniform}
    if points:
        best = best_point(points)
        metrics.update(best_quality=best.quality, best_effective_bits=best.effective_bits)
        if best.latency_ms is not None:
            metrics["best_latency_ms"] = best.latency_ms
        uniform = [p for p in points if p.uniform]
        metrics["n_uniform_evaluated"] = distinct_assignments(uniform)
        if uniform and metrics["n_uniform_evaluated"] >= n_uniform:
            metrics["best_uniform_quality"] = max(p.quality for p in uniform)
            metrics["gain_over_uniform"] = best.quality - metrics["best_uniform_quality"]
    return metrics


def space_json(space: SearchSpace) -> str:
    return json.dumps({layer.name: {"shape": [layer.out_features, layer.in_features], "options": [c.name for c in opts]} for layer, opts in zip(space.layers, space.options)}, indent=1)
