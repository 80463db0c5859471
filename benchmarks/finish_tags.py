"""Benchmark: the time `MlflowTracker.finish` takes to tag a search's frontier, against its number of trials.

finish gave every trial run its ``pareto`` tag, one ``set_tag`` each: seconds at thousands of trials on SQLite, and a
request each on a tracking server (the ``set_tag calls`` column). Since 2026-12-02 a trial is logged with
``pareto=false`` and finish reads the children's tags in one search and writes only those that change: the frontier's.
Each size logs N trials of a synthetic trade-off (quality rising with bits, a few points on the frontier) into a new
SQLite store, then times finish and counts its ``set_tag`` calls. On this 2-core x86 CPU (2026-12-02), at 200, 1000
and 2000 trials: before, 0.92, 3.18 and 6.18 s with 232, 1082 and 2111 calls; since, 0.92, 1.13 and 2.27 s with 63, 163
and 221 (the frontier's two tags each, and the parent's note). The synthetic frontiers are wide (31-110 points).

    python benchmarks/finish_tags.py [--trials 200 1000 2000] [--out benchmarks/results/finish_tags.json]

Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from provenance import OUT_HELP, out_file, provenance

from autoq.choice import Assignment, LayerChoice
from autoq.engine.result import Point, pareto_front
from autoq.tracking import MlflowTracker


def measure(n_trials: int, seed: int = 0) -> dict[str, float]:
    """Log ``n_trials`` trials to a fresh store, then time ``finish`` on them."""
    rng = random.Random(seed)
    assignment = Assignment((("0", LayerChoice.from_name("int4-ch-asym:rtn-mse")),))
    with tempfile.TemporaryDirectory() as tmp:
        tracker = MlflowTracker.open(f"sqlite:///{Path(tmp) / 'mlflow.db'}", "bench")
        tracker.start("bench", params={}, tags={})
        points = []
        for trial in range(n_trials):
            bits = rng.uniform(2.0, 8.0)
            quality = 1.0 - 0.5 / bits + rng.uniform(-0.05, 0.0)
            run_id = tracker.log_trial(trial, {"quality": quality, "effective_bits": bits}, {}, assignment)
            points.append(Point(trial, assignment, quality, bits, int(bits * 1000), run_id=run_id))
        frontier = pareto_front(points)
        calls = 0
        set_tag = tracker.client.set_tag

        def counted(*args: object, **kwargs: object) -> None:
            nonlocal calls
            calls += 1
            set_tag(*args, **kwargs)

        tracker.client.set_tag = counted  # counts the calls; each still goes to the store
        start = time.perf_counter()
        tracker.finish(points, frontier, {}, None)
        seconds = time.perf_counter() - start
    return {"trials": n_trials, "frontier": len(frontier), "finish_s": round(seconds, 3), "set_tag_calls": calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[200, 1000, 2000],
                        help="trial counts, each logged to a fresh SQLite store and tagged by finish (default: 200 1000 2000)")
    parser.add_argument("--out", type=out_file, default=str(Path(__file__).parent / "results" / "finish_tags.json"), help=OUT_HELP)
    args = parser.parse_args()
    rows = [measure(n) for n in args.trials]
    print(f"{'trials':>7} {'frontier':>9} {'finish (s)':>11} {'set_tag calls':>14}")
    for row in rows:
        print(f"{row['trials']:>7} {row['frontier']:>9} {row['finish_s']:>11.3f} {row['set_tag_calls']:>14}")
    Path(args.out).write_text(json.dumps({**provenance(), "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
