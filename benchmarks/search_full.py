"""Benchmark: a search over ``full`` (bits x granularity x method) against bits-only searches at equal trials.

On the default model (MiniLM) at 4.5 bits: a bits-only search (rtn-mse, group 128,
only the bit-width varies per layer), the ``default`` preset (bits x {channel, g128},
rtn-mse) and ``full`` (bits x {channel, g32, g64, g128} x {rtn-mse, rtn-lp, gptq,
awq}), each with the same number of evaluated trials and seed, unseeded (``--seed-from none``:
uniform baselines and random budget-filling mixes, then TPE). ``full`` runs twice: with the
default cap of 16 uniform baselines and with all 43 (``max_uniform_seeds=None``). Prints the best
point within the budget of each and writes JSON to ``benchmarks/results/search_full.json``.

    python benchmarks/search_full.py [--n-trials 50] [--budget 4.5bits] [--n-eval 64]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from provenance import BUDGET_HELP, OUT_HELP, out_file, provenance

from autoq.builtin.huggingface import minilm_workload
from autoq.engine import SearchConfig, run_search

BITS_ONLY = """\
name: bits-only
description: bit-width per layer only (group 128, rtn-mse)
rules:
  - layers: ".*"
    bits: [2, 3, 4, 5, 6, 8]
    granularity: [g128]
    methods: [rtn-mse]
    half: true
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=50, help="evaluated trials of each search, the same for every space (default: 50)")
    parser.add_argument("--budget", default="4.5bits", help=BUDGET_HELP)
    parser.add_argument("--n-eval", type=int, default=64, help="held-out sentences per evaluation (default: 64, small for a 2-core CPU)")
    parser.add_argument("--out", type=out_file, default=str(Path(__file__).parent / "results" / "search_full.json"), help=OUT_HELP)
    args = parser.parse_args()
    workload = minilm_workload(n_eval=args.n_eval)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bits_only = Path(tmp) / "bits-only.yaml"
        bits_only.write_text(BITS_ONLY)
        runs = (("bits-only", str(bits_only), 16), ("default", "default", 16), ("full", "full", 16), ("full-all-uniform", "full", None))
        for label, space, max_uniform in runs:
            config = SearchConfig(budget=args.budget, space=space, n_trials=args.n_trials, seed=0, seed_from="none",
                                  tracking_uri=f"sqlite:///{tmp}/mlflow.db", storage=None, progress=True, max_uniform_seeds=max_uniform)
            t0 = time.perf_counter()
            result = run_search(workload, config)
            seconds = time.perf_counter() - t0
            best, uniform = result.best, result.best_uniform
            rows.append({
                "space": label, "n_trials": len(result.points), "best_quality": best.quality, "best_effective_bits": best.effective_bits,
                "best_is_uniform": best.uniform, "best_summary": best.assignment.summary()[:300],
                "best_uniform_quality": uniform.quality if uniform else None, "n_uniform": len(result.uniform_points),
                "search_seconds": seconds,
            })
            print(f"{label}: best {best.quality:.4f} at {best.effective_bits:.3f} bits ({best.assignment.summary()[:120]}) in {seconds:.0f} s", flush=True)
    baseline = max(r["best_quality"] for r in rows if not r["space"].startswith("full"))
    full = next(r for r in rows if r["space"] == "full")
    summary = {"model": workload.name, "metric": workload.metric, "budget": args.budget, "n_trials": args.n_trials,
               "full_best": full["best_quality"], "best_bits_only": baseline, "full_at_least_as_good": full["best_quality"] >= baseline,
               **provenance()}
    print(f"\n{'space':<16} {'trials':>6} {'uniform':>7} {'best quality':>12} {'eff.bits':>8} {'seconds':>7}  best point")
    for r in rows:
        print(f"{r['space']:<16} {r['n_trials']:>6} {r['n_uniform']:>7} {r['best_quality']:>12.4f} {r['best_effective_bits']:>8.3f} "
              f"{r['search_seconds']:>7.0f}  {r['best_summary'][:80]}")
    print(f"full >= best bits-only: {summary['full_at_least_as_good']} ({full['best_quality']:.4f} vs {baseline:.4f})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
