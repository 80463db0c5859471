"""Benchmark: the default search (``autoq search --budget 4.5bits``) against uniform baselines.

Prints one table (quality and effective bits per point; wall time per trial against
one evaluation pass) and writes it as JSON to ``benchmarks/results/``.

    python benchmarks/search_default.py [--model minilm] [--budget 4.5bits] [--n-trials 100]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from provenance import BUDGET_HELP, MODEL_HELP, OUT_HELP, out_file, provenance

from autoq.builtin import load_workload
from autoq.cost import CostModel
from autoq.engine import SearchConfig, run_search
from autoq.engine.runner import prepare
from autoq.evaluate import QuantCache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", help=MODEL_HELP)
    parser.add_argument("--budget", default="4.5bits", help=BUDGET_HELP)
    parser.add_argument("--n-trials", type=int, default=100, help="trials of the search, uniform baselines included (default: 100)")
    parser.add_argument("--sampler", default="tpe", help="Optuna sampler: tpe, nsga2 or random (default: tpe)")
    parser.add_argument("--out", type=out_file, default=str(Path(__file__).parent / "results" / "search_default.json"), help=OUT_HELP)
    args = parser.parse_args()

    workload = load_workload(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        config = SearchConfig(budget=args.budget, n_trials=args.n_trials, sampler=args.sampler, tracking_uri=f"sqlite:///{tmp}/mlflow.db", progress=True)
        t0 = time.perf_counter()
        result = run_search(workload, config)
        search_seconds = time.perf_counter() - t0

    # every uniform assignment, inside the budget or not, for context
    problem = prepare(workload, SearchConfig(budget=args.budget, tracking_uri=None))  # no store: $MLFLOW_TRACKING_URI unread
    cache = QuantCache(workload.model)
    cost_model: CostModel = problem.cost_model
    uniform_rows = []
    for label, assignment in problem.space.uniform_by_label().items():
        with cache.apply(assignment) as model:
            quality = workload.evaluate(model)
        cost = cost_model.cost(assignment)
        uniform_rows.append({"point": f"uniform {label}", "quality": quality, "effective_bits": cost.effective_bits, "size_bytes": cost.size_bytes, "within_budget": problem.budget.violation(cost) <= 0})
    uniform_rows.sort(key=lambda r: r["effective_bits"])

    frontier_rows = [{"point": f"frontier trial {p.trial}" + (" (uniform)" if p.uniform else ""), "quality": p.quality, "effective_bits": p.effective_bits, "size_bytes": p.size_bytes, "within_budget": True} for p in result.frontier]
    best, best_uniform = result.best, result.best_uniform
    per_trial = search_seconds / len(result.points)
    summary = {
        "model": workload.name,
        "metric": workload.metric,
        "budget": args.budget,
        "n_trials": len(result.points),
        "sampler": args.sampler,
        "over_budget_proposals_skipped": result.n_infeasible,
        "best_quality": best.quality,
        "best_effective_bits": best.effective_bits,
        "best_uniform_quality": best_uniform.quality if best_uniform else None,
        "best_uniform_effective_bits": best_uniform.effective_bits if best_uniform else None,
        "gain_over_uniform": best.quality - best_uniform.quality if best_uniform else None,
        "search_seconds": search_seconds,
        "seconds_per_trial": per_trial,
        "eval_pass_seconds": result.eval_seconds,
        "trial_over_eval_pass": per_trial / result.eval_seconds,
        **provenance(),
        "torch": torch.__version__,
    }

    print(f"\n{'point':<34} {'quality':>8} {'eff.bits':>9} {'size MB':>8} {'in budget':>9}")
    for row in uniform_rows + frontier_rows:
        print(f"{row['point']:<34} {row['quality']:>8.4f} {row['effective_bits']:>9.3f} {row['size_bytes'] / 1e6:>8.2f} {str(row['within_budget']):>9}")
    print(
        f"\nbest within {args.budget}: {best.quality:.4f} at {best.effective_bits:.3f} bits; best uniform: "
        f"{summary['best_uniform_quality']:.4f} at {summary['best_uniform_effective_bits']:.3f} bits; gain {summary['gain_over_uniform']:+.4f}"
    )
    print(f"{len(result.points)} trials in {search_seconds:.0f} s: {per_trial:.2f} s per trial vs {result.eval_seconds:.2f} s per evaluation pass ({summary['trial_over_eval_pass']:.2f}x)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"summary": summary, "uniform": uniform_rows, "frontier": frontier_rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
