"""Benchmark: search strategies at equal trial counts on the real MiniLM and SmolLM2-135M.

Rows: uniform (every uniform assignment within the budget), random search (random
choices repaired into the budget), ILP alone (budget sweep + noisy-score solves),
unseeded Optuna (the default before searches seeded from fisher: uniform baselines, random budget-filling mixes,
then multivariate TPE) and seeded Optuna (uniform baselines, raise, ILP and greedy
seeds from a sensitivity table, then the same TPE). Each strategy gets the same number of
evaluated trials (over-budget proposals are not evaluated, as in ``autoq search``).
Columns: the best quality within the budget and the Pareto hypervolume within the
budget (quality above the cheapest uniform assignment's, times bits below the budget).

The strategies are driven through ``autoq.engine.seeding.start_strategy`` with the
search loop's ask/tell protocol; one quantized-weight cache and one quality memo are
shared by all rows of a model (evaluation is deterministic), which changes no number,
only the wall time. Prints one table, writes ``benchmarks/results/strategies.json``.

    python benchmarks/strategies.py [--models minilm,smollm2]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from provenance import OUT_HELP, out_file, provenance

from autoq.builtin import load_workload
from autoq.choice import Assignment
from autoq.engine import SearchConfig
from autoq.engine.runner import prepare
from autoq.engine.seeding import start_strategy
from autoq.engine.seeds import uniform_seeds
from autoq.evaluate import OutputFidelity, QuantCache
from autoq.sensitivity import workload_table

SMOLLM2_SPACE = str(Path(__file__).parent / "smollm2_space.yaml")
# model -> (budgets, trials per strategy, seed metric, search space, workload loader)
SETUPS = {
    "minilm": (("4.5bits", "3.5bits"), 32, "fisher", "default", None),
    "smollm2": (("4.25bits", "3.25bits"), 24, "fisher", SMOLLM2_SPACE, None),
}
STRATEGIES = (("random", "random", None), ("ILP alone", "ilp", "metric"), ("unseeded Optuna (TPE)", "optuna", None), ("seeded Optuna (TPE)", "optuna", "metric"))


def minilm():
    """The default workload, quality measured on every 4th held-out batch (128 of the 512 sentences, all lengths):
    4x cheaper per trial; calibration (and so the sensitivity table) is unchanged."""
    workload = load_workload("minilm")
    fidelity = workload.evaluate
    return replace(workload, evaluate=OutputFidelity(workload.model, fidelity.batches[::4], fidelity.readout),
                   metric=workload.metric.replace("512", str(sum(len(b["input_ids"]) for b in fidelity.batches[::4]))))


def smollm2():
    from autoq.builtin.smollm2 import smollm2_workload

    return smollm2_workload(n_calibration_tokens=1024, n_eval_tokens=512, seq_len=128, batch_size=4)


class Quality:
    """Memoised quality per assignment, on one shared cache of quantized weights."""

    def __init__(self, workload) -> None:
        self.workload, self.cache, self.memo, self.evaluations = workload, QuantCache(workload.model), {}, 0

    def __call__(self, assignment: Assignment) -> float:
        if assignment not in self.memo:
            with self.cache.apply(assignment) as model:
                self.memo[assignment] = float(self.workload.evaluate(model))
            self.evaluations += 1
        return self.memo[assignment]


def hypervolume(points: list[tuple[float, float]], budget_bits: float, floor: float) -> float:
    """Area dominated by (bits, quality) points within the budget, above ``floor`` quality."""
    area, best = 0.0, floor
    front = sorted(p for p in points if p[0] <= budget_bits)
    edges = [b for b, _ in front] + [budget_bits]
    for (bits, quality), nxt in zip(front, edges[1:]):
        best = max(best, quality)
        area += (nxt - bits) * (best - floor)
    return area


def run_strategy(workload, problem, config: SearchConfig, quality: Quality) -> list[tuple[float, float]]:
    n_trials = config.n_trials
    engine, seeds, _, _, _ = start_strategy(workload, config, problem, f"bench-{config.strategy}-{config.seed_from}", None)
    engine.seed(seeds)
    points: list[tuple[float, float]] = []
    skipped = 0
    while len(points) < n_trials and skipped < 5000:
        proposal = engine.ask()
        cost = problem.cost_model.cost(proposal.assignment)
        violation = problem.budget.violation(cost)
        if violation > 0:
            engine.tell(proposal, None, violation)
            skipped += 1
            continue
        q = quality(proposal.assignment)
        engine.tell(proposal, (q, cost.effective_bits), violation)
        points.append((cost.effective_bits, q))
    return points


def bench_model(name: str) -> list[dict]:
    budgets, n_trials, metric, space_name, loader = SETUPS[name]
    workload = (loader or {"minilm": minilm, "smollm2": smollm2}[name])()
    quality = Quality(workload)
    space = prepare(workload, SearchConfig(budget=budgets[0], space=space_name, tracking_uri=None)).space
    workload_table(workload, space.layers, space.options, metric, weights=quality.cache)  # into the disk cache, sharing quantized weights
    rows = []
    for budget in budgets:
        problem = prepare(workload, SearchConfig(budget=budget, space=space_name, tracking_uri=None))
        uniform_all = sorted(problem.space.uniform_assignments(), key=lambda a: problem.cost_model.cost(a).effective_bits)
        floor = quality(uniform_all[0])  # the cheapest uniform assignment: the hypervolume's quality floor
        runs = [("uniform", [(problem.cost_model.cost(a).effective_bits, quality(a)) for a in uniform_seeds(problem.space, problem.cost_model, problem.budget)])]
        for label, strategy, seeded in STRATEGIES:
            t0 = time.perf_counter()
            config = SearchConfig(budget=budget, space=space_name, strategy=strategy, seed_from=metric if seeded else None, n_trials=n_trials,
                                  tracking_uri=None, storage=None, progress=False)
            runs.append((label, run_strategy(workload, problem, config, quality)))
            print(f"  {name} {budget} {label}: {time.perf_counter() - t0:.0f} s, {quality.evaluations} evaluations so far", flush=True)
        for label, points in runs:
            best = max(points, key=lambda p: (p[1], -p[0]))
            rows.append({
                "model": workload.name, "budget": budget, "strategy": label + (f" [{metric}]" if label.startswith(("seeded", "ILP")) else ""),
                "trials": len(points), "best_quality": best[1], "best_bits": best[0],
                "hypervolume": hypervolume(points, problem.budget.value, floor), "quality_floor": floor,
            })
            print(f"| {rows[-1]['model']} | {budget} | {rows[-1]['strategy']} | {len(points)} | {best[1]:.4f} | {best[0]:.3f} | {rows[-1]['hypervolume']:.4f} |", flush=True)
    return rows


def main() -> None:
    from autoq.quiet import quiet_logs

    with quiet_logs():
        _main()


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm,smollm2", help="comma-separated models: minilm, smollm2 (default: both)")
    parser.add_argument("--out", type=out_file, default=str(Path(__file__).parent / "results" / "strategies.json"), help=OUT_HELP)
    args = parser.parse_args()
    start = time.perf_counter()
    rows = [row for name in args.models.split(",") for row in bench_model(name)]
    print("\n| model | budget | strategy | trials | best quality | bits | hypervolume |\n|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['budget']} | {r['strategy']} | {r['trials']} | {r['best_quality']:.4f} | {r['best_bits']:.3f} | {r['hypervolume']:.4f} |")
    out = Path(args.out)
    previous = json.loads(out.read_text()).get("rows", []) if out.is_file() else []
    kept = [r for r in previous if r["model"] not in {row["model"] for row in rows}]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "rows": kept + rows, "setups": {k: {"budgets": v[0], "trials": v[1], "seed_metric": v[2], "space": Path(v[3]).name} for k, v in SETUPS.items()},
        "seconds": time.perf_counter() - start, **provenance(),
        "torch": torch.__version__,
    }, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
