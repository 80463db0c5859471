"""Benchmark without a GPU: compiling the GPU session's kernels, one process against several.

``benchmarks/gpu_session.py`` measures two sets of cases, each autotuned: the LLaMA-7B shapes in
``kernels_llama.py``'s formats, and the default model's shapes in the latency table's formats.
Every autotune candidate of every format and shape compiles once. This script compiles exactly
those kernels for sm_90 (``autoq.kernels.precompile``, the step ``autoq kernels bench`` runs
before timing) into a fresh Triton cache per run, with each number of worker processes, and
prints how many kernels that is and how long it took. The GPU machine's CPU differs from this
one, so the seconds are a guide; the kernel counts are exact for the Triton version used.

    TRITON_INTERPRET=0 python benchmarks/precompile.py [--workers 1,2] [--sets llama,table] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from provenance import OUT_HELP, out_file, provenance

sys.path.insert(0, str(Path(__file__).parent))


def case_sets() -> dict:
    """The GPU session's two measuring steps as precompile work, by name."""
    from gpu_session import DEFAULT_MODEL_SHAPES, TABLE_FORMATS
    from kernels_llama import DEFAULT_FORMATS

    from autoq.kernels.bench import LLAMA_7B_SHAPES, BenchConfig, parse_formats, parse_shapes

    return {
        "llama": BenchConfig(shapes=LLAMA_7B_SHAPES, formats=parse_formats(DEFAULT_FORMATS)).precompile_cases(),
        "table": BenchConfig(shapes=parse_shapes(DEFAULT_MODEL_SHAPES), formats=parse_formats(TABLE_FORMATS)).precompile_cases(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default=f"1,{os.cpu_count() or 1}", help="worker processes to try (default: %(default)s)")
    parser.add_argument("--sets", default="llama,table", help="which of the GPU session's steps (default: %(default)s)")
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability to compile for, e.g. 90 for sm_90 (default: 90)")
    parser.add_argument("--out", type=out_file, default=str(Path(__file__).parent / "results" / "precompile.json"), help=OUT_HELP)
    args = parser.parse_args(argv)
    os.environ["TRITON_INTERPRET"] = "0"
    import triton

    from autoq.kernels.precompile import Target, precompile

    sets = case_sets()
    chosen = [s.strip() for s in args.sets.split(",") if s.strip()]
    if not chosen or set(chosen) - set(sets):
        parser.error(f"--sets takes some of {', '.join(sets)}; got {args.sets!r}")
    rows = []
    for name in chosen:
        for workers in (int(w) for w in args.workers.split(",")):
            with tempfile.TemporaryDirectory(prefix="autoq-precompile-") as cache:  # a fresh cache each run, removed after
                os.environ["TRITON_CACHE_DIR"] = cache  # the workers inherit it
                report = precompile(sets[name], Target("cuda", args.arch, 32), workers, progress=False)
            rows.append({"set": name, "cases": report.cases, "workers": report.workers, "kernels": report.compiled,
                         "seconds": round(report.seconds, 1), "failures": list(report.failures)})
            print(f"{name:6s} {report.cases:4d} cases  {report.workers:3d} workers  {report.compiled:4d} kernels  "
                  f"{report.seconds:7.1f} s  {report.seconds / max(report.compiled, 1):.2f} s a kernel"
                  f"{'  FAILED: ' + report.failures[0] if report.failures else ''}", flush=True)
    result = {**provenance(), "arch": f"sm_{args.arch}", "triton": triton.__version__, "cpus": os.cpu_count(), "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {args.out}")
    return 0 if all(not r["failures"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
