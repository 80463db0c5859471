"""Benchmark (Done-when 4): wall time of a cold ``autoq sensitivity`` on the default model, per metric.

Each metric runs as ``autoq sensitivity --metric M --refresh`` in a fresh process (model
loading, every quantization, the metric, CSV/JSON/PNG; no MLflow). Prints one table and
writes ``benchmarks/results/sensitivity_timing.json``. Run it alone on the machine:
the time is the point.

    python benchmarks/sensitivity_timing.py [--metrics kl,hessian]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from provenance import OUT_HELP, out_file, provenance
from sensitivity_ranking import time_cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", default="kl,hessian",
                        help="comma-separated metrics, each a cold `autoq sensitivity --metric M` (default: kl,hessian)")
    parser.add_argument("--out", type=out_file, default=str(Path(__file__).parent / "results" / "sensitivity_timing.json"), help=OUT_HELP)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for metric in args.metrics.split(","):
            load_before = os.getloadavg()[0]
            row = time_cli(metric, Path(tmp))
            table = json.loads((Path(tmp) / f"all-MiniLM-L6-v2-{metric}.json").read_text())
            rows.append({**row, "compute_seconds": table["seconds"], "load_avg_before": load_before, "settings": table["params"]})
            print(f"{metric}: {row['wall_seconds']:.0f} s wall ({table['seconds']:.0f} s computing), load average {load_before:.1f} -> {row['load_avg_after']:.1f}", flush=True)
    print("\n| `autoq sensitivity --metric` | wall seconds (cold) | of which computing | load average before/after |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['metric']} | {r['wall_seconds']:.0f} | {r['compute_seconds']:.0f} | {r['load_avg_before']:.1f} / {r['load_avg_after']:.1f} |")
    Path(args.out).write_text(json.dumps({"model": "all-MiniLM-L6-v2", "rows": rows, **provenance()}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
