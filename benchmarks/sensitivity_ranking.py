"""Benchmark: does each sensitivity metric rank MiniLM's layers the way reality does?

For every layer alone at 3 bits (``int3-g128-asym:rtn-mse``)
the quality drop is measured with the real evaluation (1 - mean cosine to fp32 on
512 held-out sentences); each metric's score of that layer at that option is
compared with it by Spearman's rank correlation. ``kl`` and ``hessian`` run as
``autoq sensitivity --refresh`` in a fresh process, cold, and are timed (Done-when 4);
the other metrics are computed in process for the scored option only (each option's score
is computed on its own, so the column equals that of a full table), sharing one cache of
quantized weights with the drop measurement. Prints one table, writes ``benchmarks/results/sensitivity_ranking.json``.

    python benchmarks/sensitivity_ranking.py [--metrics kl,hessian,mse,sqnr,fisher]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from provenance import OUT_HELP, out_file, provenance
from scipy.stats import spearmanr

from autoq.builtin import load_workload
from autoq.choice import Assignment
from autoq.engine import SearchConfig
from autoq.engine.runner import prepare
from autoq.evaluate import QuantCache
from autoq.sensitivity import SensitivityTable, metric_names, workload_table

OPTIONS = ("int3-g128-asym:rtn-mse",)
TIMED = ("kl", "hessian")  # run through the CLI in a fresh process, cold: their times answer "how long does `autoq sensitivity` take"


def measured_drops(workload, space, cache: QuantCache, label: str) -> list[float]:
    """1 - quality with only that layer at ``label`` (every other layer full precision)."""
    drops = []
    for layer, labels in zip(space.layers, space.labels):
        with cache.apply(Assignment(((layer.name, labels[label]),))) as model:
            drops.append(1.0 - float(workload.evaluate(model)))
    return drops


def time_cli(metric: str, out: Path) -> dict:
    """Wall time of a cold ``autoq sensitivity --refresh`` in its own process (no MLflow); the table lands in the disk cache."""
    cmd = [sys.executable, "-m", "autoq", "sensitivity", "--metric", metric, "--refresh", "--out", str(out), "--tracking-uri", "none", "--no-progress"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"autoq sensitivity --metric {metric} failed:\n{done.stderr[-2000:]}")
    return {"metric": metric, "wall_seconds": wall, "load_avg_after": os.getloadavg()[0], "stdout": done.stdout}


def score_row(table: SensitivityTable, space, drops: dict) -> dict:
    row = {"metric": table.metric, "seconds": table.seconds, "settings": dict(table.params)}
    for label in OPTIONS:
        scores = [table.score(layer.name, labels[label].name) for layer, labels in zip(space.layers, space.labels)]
        row["scores"] = scores
        row["spearman"] = float(spearmanr(scores, drops[label]).statistic)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", default=",".join(metric_names()),
                        help="comma-separated sensitivity metrics to rank the layers by (default: %(default)s)")
    parser.add_argument("--timed", default=",".join(TIMED),
                        help="comma-separated metrics run (and timed) by the CLI in a fresh process; '' for none (default: %(default)s)")
    parser.add_argument("--out", type=out_file, default=str(Path(__file__).parent / "results" / "sensitivity_ranking.json"), help=OUT_HELP)
    args = parser.parse_args()

    workload = load_workload("minilm")
    space = prepare(workload, SearchConfig(budget="4.5bits", tracking_uri=None)).space
    cache = QuantCache(workload.model)
    t0 = time.perf_counter()
    saved = Path(args.out).with_suffix(".drops.json")  # the measured drops are reused by a rerun on the same model
    if saved.is_file() and json.loads(saved.read_text()).get("layers") == space.names:
        drops = json.loads(saved.read_text())["drops"]
    else:
        drops = {label: measured_drops(workload, space, cache, label) for label in OPTIONS}
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps({"layers": space.names, "drops": drops}))
    drop_seconds = time.perf_counter() - t0
    print(f"measured drops in {drop_seconds:.0f} s", flush=True)
    rows, timings = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for metric in args.metrics.split(","):
            if metric in args.timed.split(","):
                timings.append(time_cli(metric, Path(tmp)))
                table = SensitivityTable.load(Path(tmp) / f"{workload.name}-{metric}.json")
            else:  # only the scored option: every metric scores each option on its own, so the column is the same as in a full table
                table = workload_table(workload, space.layers, [(labels[OPTIONS[0]],) for labels in space.labels], metric, weights=cache, use_cache=False)
            rows.append(score_row(table, space, drops))
            print(f"{metric:<8} Spearman {rows[-1]['spearman']:+.3f}  ({table.seconds:.0f} s)", flush=True)

    print(f"\nall-MiniLM-L6-v2, {len(space.layers)} layers; Spearman between each metric's score and the measured quality drop (1 - cosine)\n")
    print(f"| metric | Spearman vs measured drop, {OPTIONS[0]} | compute seconds | `autoq sensitivity` wall seconds (cold, own process) |\n|---|---:|---:|---:|")
    walls = {t["metric"]: t["wall_seconds"] for t in timings}
    for row in rows:
        wall = f"{walls[row['metric']]:.0f}" if row["metric"] in walls else "(quantization shared)"
        print(f"| {row['metric']} | {row['spearman']:+.3f} | {row['seconds']:.0f} | {wall} |")
    result = {
        "model": workload.name, "options": OPTIONS, "drops": drops, "layers": space.names, "drop_seconds": drop_seconds, "rows": rows,
        "cli_timings": timings, **provenance(),
        "torch": torch.__version__,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
