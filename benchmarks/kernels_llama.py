"""Benchmark: autoq's kernels at LLaMA-7B layer shapes against torch's fp16 matmul (needs a CUDA GPU).

Shapes ``N x K`` (out x in): 4096x4096 (q/k/v/o), 11008x4096 (gate/up), 4096x11008 (down), at
batch 1, 16 and 128. Times each format by CUDA graph replay (``autoq.kernels.timing``: GPU time,
by ``--timing``: ``flush``, L2 flushed before each call, or ``rotate``, calls back to back on their own
copies of the weights) and writes the speedup over fp16 and the achieved bandwidth against the device's
peak to ``benchmarks/results/kernels_<device>.json`` (``kernels_<device>_rotate.json`` for ``rotate``;
the latency table is inside it, under ``table``).
Then it checks every kernel on this GPU against a float64 reference (max relative error per
format and batch) and writes the file again with the checks.

    python benchmarks/kernels_llama.py [--formats int4-g128-asym,...] [--batches 1,16,128] [--rep-ms 100] [--timing rotate]

Without a GPU it says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from autoq.cli.kernels import device_slug
from autoq.errors import AutoqError
from autoq.files import check_not_folder
from autoq.kernels.bench import (
    LLAMA_7B_SHAPES,
    BenchConfig,
    format_table,
    measure,
    parse_batches,
    parse_formats,
    random_quantized,
    speedups,
)
from autoq.kernels.capability import require_gpu
from autoq.kernels.registry import get_kernel
from autoq.kernels.table import TIMINGS

# W2, W3, W4 and W8, each per channel and in groups of 128, and W4 in groups of 32 and 64 too. W4 first: its
# batch-1 speedup is the headline number, measured even if a deadline cuts the run short.
DEFAULT_FORMATS = ",".join([
    "int4-g128-asym", "int4-g128-sym", "int4-ch-asym", "int8-ch-sym", "int8-ch-asym", "int2-g128-asym", "int3-g128-asym",
    "int4-g64-asym", "int4-g32-asym", "int8-g128-asym", "int2-ch-asym", "int3-ch-asym",
])


def check_correctness(formats, kernels, batches, shape=(4096, 4096)) -> list[dict]:
    """Max relative error (to the largest |reference| entry) of every kernel on this GPU against float64."""
    gen = torch.Generator().manual_seed(1)
    n, k = shape
    rows = []
    for spec in formats:
        qt = random_quantized(n, k, spec, gen)
        for name in kernels:
            info = get_kernel(name)
            if not info.supports(spec):
                continue
            packed = info.prepare(qt).to("cuda")
            w = packed.dequantize(torch.float64)
            for m in batches:
                x = torch.randn(m, k, generator=gen).half().cuda()
                ref = x.double() @ w.T
                err = (info.run(x, packed, backend="triton").double() - ref).abs().max() / ref.abs().max()
                rows.append({"format": spec.name, "kernel": name, "batch": m, "n": n, "k": k, "max_rel_error": float(err)})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formats", default=DEFAULT_FORMATS,
                        help="comma-separated weight formats, e.g. int4-g128-asym,int8-ch-sym (default: W2, W3, W4 and W8 per channel "
                             "and in groups of 128, W4 in groups of 32 and 64 too)")
    parser.add_argument("--kernels", default="wq,w8a8",
                        help="comma-separated kernels to time: wq, wq-gemv, wq-gemm, w8a8 (default: wq,w8a8)")
    parser.add_argument("--batches", default="1,16,128", help="comma-separated batch sizes, rows of activations (default: 1,16,128)")
    parser.add_argument("--rep-ms", type=int, default=100,
                        help="ms spent timing each case, by CUDA graph replays (triton's do_bench if capture fails; default: 100)")
    parser.add_argument("--timing", choices=tuple(TIMINGS), default="flush", help="how each case is timed (default: flush)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="start no new timing after this many seconds; write what was measured, then check (default: no limit)")
    parser.add_argument("--out", default=None, help="JSON file (default: benchmarks/results/kernels_<device>[_rotate].json)")
    args = parser.parse_args()
    try:  # every argument checked before the GPU time is spent: a refusal after it threw the timings away
        formats, batches = parse_formats(args.formats), parse_batches(args.batches)
        kernels = tuple(k.strip() for k in args.kernels.split(",") if k.strip())
        config = BenchConfig(shapes=LLAMA_7B_SHAPES, batches=batches, formats=formats, kernels=kernels, rep_ms=args.rep_ms,
                             max_seconds=args.max_seconds, timing=args.timing)
        check_not_folder(args.out, "--out", "kernels.json")
        require_gpu("benchmarks/kernels_llama.py")
    except AutoqError as exc:
        print(f"kernels_llama: error: {exc}", file=sys.stderr)
        return 2

    # Timings first, written at once, then the float64 checks (which reuse the compiled kernels), written again:
    # a run stopped by its deadline keeps what it measured.
    table = measure(config)
    rows = speedups(table)
    for row in rows:
        row["bandwidth_share"] = None if row["bandwidth_share"] is None else round(row["bandwidth_share"], 3)
    print(f"{table.device}: peak bandwidth {table.peak_bandwidth_gbs or float('nan'):.0f} GB/s; torch {table.torch}, triton {table.triton}, "
          f"CUDA {table.cuda}; timing {table.timing} ({TIMINGS[table.timing]})")
    print(format_table(rows, ("n", "k", "format", "kernel", "batch", "median_us", "fp16_us", "speedup", "gbps", "bandwidth_share", "tile")))

    suffix = "" if args.timing == "flush" else f"_{args.timing}"
    out = Path(args.out or Path(__file__).parent / "results" / f"kernels_{device_slug(table.device)}{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    from provenance import commit  # beside this script: here, so that tests can load the module by its path

    summary = {
        "device": table.device, "torch": table.torch, "triton": table.triton, "cuda": table.cuda, "created": table.created, "autoq_commit": commit(),
        "peak_bandwidth_gbs": table.peak_bandwidth_gbs, "timing": table.timing, "shapes_nk": [list(s) for s in LLAMA_7B_SHAPES], "batches": list(batches),
        "speedups": rows, "correctness": None, "table": table.to_dict(),
    }
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"timings written to {out}; checking every kernel against float64 ...", flush=True)
    summary["correctness"] = correctness = check_correctness(formats, kernels, batches)
    worst = max(correctness, key=lambda r: r["max_rel_error"]) if correctness else None
    if worst:
        print(f"largest error against float64: {worst['max_rel_error']:.2e} ({worst['format']}, {worst['kernel']}, batch {worst['batch']})")
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
