"""MLflow logging through `MlflowClient` with explicit run ids (never the global active run).

One parent run per search; one nested child run per trial with the per-layer
choices as ``assignment.json``; ``pareto=true`` tags on the frontier's trials;
the frontier as CSV, JSON and a PNG plot among the parent's artifacts.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from autoq.choice import Assignment
from autoq.engine.result import Point

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else ``None``."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):])


class MlflowTracker:
    """Logs one search: ``start`` the parent, ``log_trial`` per trial, ``finish`` with the frontier."""

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        db = sqlite_path(tracking_uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            self.experiment_id = found.experiment_id
        else:
            location = (db.resolve().parent / "mlartifacts").as_uri() if db is not None else None
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        self.parent_id: str | None = None

    def start(self, run_name: str, params: Mapping[str, object], tags: Mapping[str, str]) -> str:
        from mlflow.entities import Param

        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=dict(tags))
        self.parent_id = run.info.run_id
        self.client.log_batch(self.parent_id, params=[Param(k, str(v)) for k, v in params.items()], synchronous=True)
        return self.parent_id

    def log_trial(self, number: int, metrics: Mapping[str, float], tags: Mapping[str, str], assignment: Assignment, status: str = "FINISHED") -> str:
        from mlflow.entities import Metric, Param

        assert self.parent_id is not None, "start() first"
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{number}",
            tags={"mlflow.parentRunId": self.parent_id, "autoq.trial": str(number), **tags},
        )
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
            params=[Param("trial", str(number)), Param("choices", assignment.summary()[:6000])],
            synchronous=True,
        )
        self.client.log_text(run_id, assignment.to_json(), "assignment.json")
        self.client.set_terminated(run_id, status=status)
        return run_id

    def finish(self, points: Sequence[Point], frontier: Sequence[Point], metrics: Mapping[str, float], plot_budget: float | None, status: str = "FINISHED") -> None:
        from mlflow.entities import Metric

        assert self.parent_id is not None, "start() first"
        on_front = {p.run_id for p in frontier}
        for p in points:
            if p.run_id:
                self.client.set_tag(p.run_id, "pareto", "true" if p.run_id in on_front else "false")
        now = int(time.time() * 1000)
        self.client.log_batch(self.parent_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()], synchronous=True)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            write_frontier_csv(frontier, out / "frontier.csv")
            (out / "frontier.json").write_text(json.dumps([{**p.row(), "assignment": p.assignment.to_dict()} for p in frontier], indent=1))
            plot_frontier(points, frontier, plot_budget, out / "frontier.png")
            for name in ("frontier.csv", "frontier.json", "frontier.png"):
                self.client.log_artifact(self.parent_id, str(out / name))
        self.client.set_terminated(self.parent_id, status=status)


def write_frontier_csv(points: Sequence[Point], path: Path) -> None:
    import csv

    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(Point.row(points[0]).keys()) if points else ["trial"])
        writer.writeheader()
        for p in points:
            writer.writerow(p.row())


def plot_frontier(points: Sequence[Point], frontier: Sequence[Point], budget_bits: float | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.scatter([p.effective_bits for p in points], [p.quality for p in points], s=12, c="#9aa5b1", label="trials")
    uni = [p for p in points if p.uniform]
    if uni:
        ax.scatter([p.effective_bits for p in uni], [p.quality for p in uni], s=40, marker="s", facecolors="none", edgecolors="#d9480f", label="uniform")
    ax.step([p.effective_bits for p in frontier], [p.quality for p in frontier], where="post", c="#1864ab", lw=1.5)
    ax.scatter([p.effective_bits for p in frontier], [p.quality for p in frontier], s=24, c="#1864ab", label="Pareto frontier")
    if budget_bits is not None:
        ax.axvline(budget_bits, ls="--", c="#495057", lw=1, label="budget")
    ax.set_xlabel("effective bits per weight (scales and zero points counted)")
    ax.set_ylabel("quality (higher is better)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

