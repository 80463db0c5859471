"""Benchmark without a GPU: instructions per weight in the batch-1 GEMV's main loop, read from its SASS.

Compiles ``wq_gemv_kernel`` for every format below in every autotune tile, through its launcher at
4096 x 4096 (``compile_only``: specialized exactly as that launch on the GPU), reads the machine code with the ``cuobjdump``
Triton ships, and divides the main loop's length by the weights a thread handles per iteration (the JSON also
has each tile's registers and the whole kernel's length: what a thread runs outside the loop counts where a
program has few steps).
A GEMV stays memory-bound only while that count is under what the device can issue per weight its
memory delivers; the ``H100``/``H200`` columns give that limit for each format's bytes per weight
(4096 x 4096, packed words plus scales). ``bar`` counts the barriers in the loop of the main tile and of
the 16-row ``ROWS_IN_THREAD`` tile (``rows/thr``); W4 formats also in the packed-half ``HALF2`` tiles (``h2``,
best tile only). This is a static count, not a timing: the GPU decides.
The code depends on the Triton version that compiles it, which is in the output's name.

    TRITON_INTERPRET=0 python benchmarks/gemv_sass.py [--arch 90] [--formats int4-ch-asym,...] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

FORMATS = ("int4-ch-asym", "int4-ch-sym", "int4-g128-asym", "int4-g32-asym", "int8-ch-sym", "int8-g128-asym",
           "int2-ch-asym", "int2-g64-asym", "int3-ch-sym", "int3-g32-asym", "int3-g64-asym", "int3-g128-asym", "int5-g128-asym",
           "int6-g32-asym")


@dataclass(frozen=True)
class Issue:
    """What a GPU issues and reads: thread-instructions per clock (4 schedulers x 32 lanes per SM) and the
    memory bandwidth of its :mod:`autoq.latency.devices` preset."""

    preset: str
    sms: int
    clock_ghz: float

    @property
    def name(self) -> str:
        return self.preset.upper()

    def affordable(self, bytes_per_weight: float) -> float:
        """Instructions a weight the SMs can issue while the memory delivers weights at full bandwidth."""
        from autoq.latency.devices import get_device

        weights_per_second = get_device(self.preset).bandwidth_gbs * 1e9 / bytes_per_weight
        return 128 * self.sms * self.clock_ghz * 1e9 / weights_per_second


DEVICES = (Issue("h100", 132, 1.98), Issue("h200", 132, 1.98))  # SXM boards, boost clock


def main(argv: list[str] | None = None) -> int:
    from provenance import out_file, provenance  # beside this script: here, so that tests can load the module by its path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability to compile for, e.g. 90 for sm_90 (default: 90)")
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated formats (default: %(default)s)")
    # its folder made now: a missing one was a FileNotFoundError once every tile had been compiled
    parser.add_argument("--out", default=None, type=out_file, help="JSON file (default: benchmarks/results/gemv_sass_sm<arch>_triton<version>.json)")
    args = parser.parse_args(argv)
    os.environ["TRITON_INTERPRET"] = "0"
    import triton

    from autoq.kernels.compile_check import gemv_case, tile_report
    from autoq.kernels.formats import packed_nbytes
    from autoq.kernels.triton_wq_gemv import _GEMV_CONFIGS
    from autoq.quant import QuantSpec

    rows = []
    print(f"{'format':16s} {'best tile':>19s} {'loop/weight':>11s} {'16x1024 w4':>10s} {'bar':>4s} {'rows/thr':>10s} {'bar':>4s} "
          f"{'spills':>6s}  "
          + "  ".join(f"{d.name} limit" for d in DEVICES))
    for name in args.formats.split(","):
        spec = QuantSpec.from_name(name)
        bytes_per_weight = packed_nbytes(spec, 4096, 4096) / 4096**2
        limits = {d.name: round(d.affordable(bytes_per_weight), 2) for d in DEVICES}
        tiles = []
        for config in _GEMV_CONFIGS:
            if config.kwargs["HALF2"] and spec.bits != 4:  # packed-half tiles read W4 only
                continue
            tiles.append({"block_n": config.kwargs["BLOCK_N"], "block_k": config.kwargs["BLOCK_K"], "prefetch": config.kwargs["PREFETCH"],
                          "rows_in_thread": config.kwargs["ROWS_IN_THREAD"], "half2": config.kwargs["HALF2"],
                          "persist": config.kwargs.get("PERSIST", 0), "num_warps": config.num_warps,
                          "num_stages": config.num_stages, **tile_report(gemv_case(spec, "fp16", config), args.arch)})
        best = min(tiles, key=lambda t: t["loop_per_weight"])
        main_tile, rows_tile = (next(t for t in tiles if (t["block_n"], t["block_k"], t["num_warps"], t["prefetch"], t["rows_in_thread"],
                                                          t["half2"]) == (16, 1024, 4, True, rows, False)) for rows in (False, True))
        spills = sum(t["stack_bytes"] > 0 for t in tiles)
        rows.append({"format": name, "bytes_per_weight": round(bytes_per_weight, 4), "limits": limits, "tiles": tiles})
        persist = f" ps{best['persist']}" if best["persist"] else ""
        tile = (f"{best['block_n']}x{best['block_k']} w{best['num_warps']}{' np' if not best['prefetch'] else ' p2' if best['prefetch'] == 2 else ''}"
                f"{' h2' if best['half2'] else ' rt' if best['rows_in_thread'] else ''}{persist}")
        print(f"{name:16s} {tile:>19s} {best['loop_per_weight']:11.2f} {main_tile['loop_per_weight']:10.2f} {main_tile['loop_barriers']:4d} "
              f"{rows_tile['loop_per_weight']:10.2f} {rows_tile['loop_barriers']:4d} {spills:6d}  "
              + "  ".join(f"{limits[d.name]:10.2f}" for d in DEVICES), flush=True)
    out = Path(args.out or Path(__file__).parent / "results" / f"gemv_sass_sm{args.arch}_triton{triton.__version__}.json")
    out.write_text(json.dumps({"arch": f"sm_{args.arch}", "triton": triton.__version__, "kernel": "wq_gemv_kernel", **provenance(),
                               "shape_for_bytes": [4096, 4096], "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
