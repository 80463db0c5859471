"""Benchmark without a GPU: instructions per weight in the tiled weight-only GEMM's main loop, read from its SASS.

Compiles ``wq_gemm_kernel`` for every format below in every autotune tile, through its launcher at
4096 x 4096 (``compile_only``: specialized exactly as that launch on the GPU; batch 16 for the 16-row
tiles, the only ones a batch of 16 keeps, and 128 for the others), reads the machine code with the
``cuobjdump`` Triton ships and divides the main loop's length by the weights (columns of K, not slots)
a thread dequantizes per iteration. At batch 16 the GEMM reads as many bytes as the GEMV, so the
device limits that ``gemv_sass.py`` prints apply to the 16-row tiles too. A static count, not a timing:
the GPU decides. The code depends on the Triton version that compiles it, which is in the output's name.

    TRITON_INTERPRET=0 python benchmarks/gemm_sass.py [--arch 90] [--formats int4-ch-asym,...] [--act fp16] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

FORMATS = ("int4-ch-asym", "int4-g128-asym", "int4-g32-asym", "int8-ch-sym", "int2-ch-asym", "int3-ch-asym", "int3-g32-asym",
           "int3-g64-asym", "int3-g128-asym", "int5-g128-asym", "int6-ch-asym")


def best(tiles: list[dict], batch: int) -> dict | None:
    """The tile with the fewest instructions a weight among those without spills at ``batch``."""
    fits = [t for t in tiles if t["batch"] == batch and t["stack_bytes"] == 0]
    return min(fits, key=lambda t: t["loop_per_weight"]) if fits else None


def main(argv: list[str] | None = None) -> int:
    from provenance import out_file, provenance  # beside this script: here, so that tests can load the module by its path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability to compile for, e.g. 90 for sm_90 (default: 90)")
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated formats (default: %(default)s)")
    parser.add_argument("--act", default="fp16", choices=("fp16", "bf16"), help="activation dtype (default: %(default)s)")
    # its folder made now: a missing one was a FileNotFoundError once every tile had been compiled
    parser.add_argument("--out", default=None, type=out_file, help="JSON file (default: benchmarks/results/gemm_sass_sm<arch>_triton<version>.json)")
    args = parser.parse_args(argv)
    os.environ["TRITON_INTERPRET"] = "0"
    import triton

    from autoq.kernels.compile_check import gemm_case, tile_report
    from autoq.kernels.triton_wq_gemm import _GEMM_CONFIGS
    from autoq.quant import QuantSpec

    def label(t: dict | None) -> str:
        return f"{t['block_m']}x{t['block_n']}x{t['block_k']} {t['loop_per_weight']:5.2f}" if t else "all spill"

    rows = []
    print(f"{'format':16s} {'best at batch 16':>20s} {'best at batch 128':>20s} {'spilling tiles':>14s}")
    for name in args.formats.split(","):
        tiles = []
        for config in _GEMM_CONFIGS:
            case = gemm_case(QuantSpec.from_name(name), args.act, config)
            b = config.kwargs
            tiles.append({"block_m": b["BLOCK_M"], "block_n": b["BLOCK_N"], "block_k": b["BLOCK_K"], "num_warps": config.num_warps,
                          "num_stages": config.num_stages, "batch": case.batch, **tile_report(case, args.arch)})
        rows.append({"format": name, "tiles": tiles})
        spills = sum(t["stack_bytes"] > 0 for t in tiles)
        print(f"{name:16s} {label(best(tiles, 16)):>20s} {label(best(tiles, 128)):>20s} {spills:14d}", flush=True)
    out = Path(args.out or Path(__file__).parent / "results" / f"gemm_sass_sm{args.arch}_triton{triton.__version__}.json")
    out.write_text(json.dumps({"arch": f"sm_{args.arch}", "triton": triton.__version__, "kernel": "wq_gemm_kernel", "act": args.act,
                               **provenance(), "shape": [4096, 4096], "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
