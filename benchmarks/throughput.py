"""Benchmark: search throughput (trials per minute) of the Optuna backend and Ray with 1 and 2 workers.

Runs the same search (default model and budget, real MLflow and Optuna SQLite stores in a
temporary folder) once per backend and reports two rates:

* end to end: evaluated trials / wall time of ``run_search`` (reference pass, Ray start-up,
  quantizing each layer option for the first time and MLflow logging included);
* steady: trials completed between the first and the last completion, per minute
  (from the Optuna storage's completion times), which is what a long search approaches.

    python benchmarks/throughput.py [--model minilm] [--n-trials 20] [--configs optuna:1,ray:1,ray:2]

Writes ``benchmarks/results/throughput.json``. Run it alone (``flock /tmp/autoq-heavy.lock``):
the rates are only comparable on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import optuna
import torch
from provenance import BUDGET_HELP, MODEL_HELP, OUT_HELP, count, out_file, provenance

from autoq.builtin import load_workload
from autoq.engine import SearchConfig, run_search


def steady_rate(storage: str, study_name: str) -> float | None:
    """Trials per minute between the first and the last completed trial."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    done = sorted(t.datetime_complete for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)
    if len(done) < 2:
        return None
    return (len(done) - 1) / (done[-1] - done[0]).total_seconds() * 60


def _configs(text: str) -> list[tuple[str, int]]:
    """``--configs``: ``optuna:1,ray:2`` as ``[("optuna", 1), ("ray", 2)]``, or an argparse error saying the form."""
    configs = [tuple(item.split(":")) for item in text.split(",")]
    if any(len(c) != 2 or c[0] not in ("optuna", "ray") or not c[1].isdigit() or int(c[1]) < 1 for c in configs):
        raise argparse.ArgumentTypeError(f"{text!r}: give BACKEND:WORKERS items, comma-separated, each backend optuna or "
                                         "ray with at least 1 worker ('optuna:1,ray:2')")
    return [(backend, int(workers)) for backend, workers in configs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", help=MODEL_HELP)
    parser.add_argument("--budget", default="4.5bits", help=BUDGET_HELP)
    parser.add_argument("--n-trials", type=count, default=20, help="trials of each search, per config and round (default: 20)")
    parser.add_argument("--configs", type=_configs, default="optuna:1,ray:1,ray:2", help="BACKEND:WORKERS, comma-separated (default: %(default)s)")
    parser.add_argument("--repeats", type=count, default=2,
                        help="rounds over the configs, interleaved; the table keeps each config's fastest round (default: 2)")
    parser.add_argument("--out", type=out_file, default=str(Path(__file__).parent / "results" / "throughput.json"), help=OUT_HELP)
    args = parser.parse_args()

    workload = load_workload(args.model)
    runs = []
    for round_ in range(args.repeats):  # interleaved, so every config sees the machine's other load alike
        for backend, workers in args.configs:
            load_before = os.getloadavg()[0]
            with tempfile.TemporaryDirectory() as tmp:
                config = SearchConfig(
                    budget=args.budget, n_trials=args.n_trials, tracking_uri=f"sqlite:///{tmp}/mlflow.db", study_name=f"throughput-{backend}-{workers}",
                    backend=backend, workers=workers, progress=False,
                )
                t0 = time.perf_counter()
                result = run_search(workload, config)
                wall = time.perf_counter() - t0
                steady = steady_rate(result.storage, result.study_name)
            runs.append({
                "round": round_, "backend": backend, "workers": workers, "n_trials": len(result.points), "wall_seconds": wall,
                "trials_per_min_end_to_end": len(result.points) / wall * 60, "trials_per_min_steady": steady,
                "eval_pass_seconds": result.eval_seconds, "best_quality": result.best.quality, "n_over_budget": result.n_infeasible,
                "load_average_before": load_before, "load_average_after": os.getloadavg()[0],
            })
            print(f"round {round_} {backend}:{workers} done in {wall:.0f} s (load average {load_before:.1f} -> {os.getloadavg()[0]:.1f})", flush=True)
    rows = []
    for backend, workers in args.configs:
        mine = [r for r in runs if r["backend"] == backend and r["workers"] == workers]
        rows.append(max(mine, key=lambda r: r["trials_per_min_end_to_end"]))

    print(f"\n{'backend':<8} {'workers':>7} {'trials':>6} {'wall s':>7} {'trials/min (end to end)':>24} {'trials/min (steady)':>20}")
    for r in rows:
        steady = f"{r['trials_per_min_steady']:.1f}" if r["trials_per_min_steady"] else "-"
        print(f"{r['backend']:<8} {r['workers']:>7} {r['n_trials']:>6} {r['wall_seconds']:>7.1f} {r['trials_per_min_end_to_end']:>24.1f} {steady:>20}")
    out = {
        "model": workload.name, "budget": args.budget, "metric": workload.metric, "rows": rows, "all_runs": runs,
        **provenance(),
        "note": "rows: each config's fastest round. Ray workers get 1 CPU each (torch uses 1 thread per worker); the optuna backend evaluates "
                "in one process with all torch threads. The machine is shared: see the load averages in all_runs.",
        "torch": torch.__version__,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
