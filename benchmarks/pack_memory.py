"""Benchmark: working memory and time of packing codes into the bit stream the export stores, and back.

``autoq.quant.pack_codes`` / ``unpack_codes`` work in steps of ``CHUNK`` codes with uint8 temporaries. The
whole-tensor way they replaced (an int64 bit matrix of every code, kept here as ``whole_*`` for comparison) took
27-53 bytes per code to pack and 34-61 to unpack: 6-14 GB for one 8192 x 28672 layer at export or load; in steps,
4 and 1.5-3, as fast (2-core x86 CPU, 2026-12-02). Peak memory is Python's tracemalloc peak during the call (numpy's
buffers included), less the output, per code.

Then one layer through the export's ``to_tensors`` and the loader's ``from_tensors`` (which pack the kernel's int32
words in blocks of rows since 2026-12-02; whole layers took about 25 bytes a code): peak resident growth per code.

    python benchmarks/pack_memory.py [--rows 4096] [--cols 4096] [--out benchmarks/results/pack_memory.json]

Prints two tables and writes JSON (Linux: the second reads /proc/self/status).
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from provenance import OUT_HELP, count, out_file, provenance

from autoq.quant import pack_codes, unpack_codes


def whole_pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """The former way: one int64 bit matrix of every code."""
    flat = codes.reshape(-1).to(torch.int64).numpy()
    bit_matrix = ((flat[:, None] >> np.arange(bits, dtype=np.int64)) & 1).astype(np.uint8)
    return torch.from_numpy(np.packbits(bit_matrix.reshape(-1), bitorder="little"))


def whole_unpack(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    stream = np.unpackbits(packed.numpy()[: (count * bits + 7) // 8], bitorder="little")[: count * bits]
    return torch.from_numpy((stream.reshape(count, bits).astype(np.int64) @ (1 << np.arange(bits, dtype=np.int64))).astype(np.uint8))


def measure(fn: Callable[..., torch.Tensor], *args: object) -> tuple[torch.Tensor, float, int]:
    """(``fn(*args)``, seconds, peak bytes beyond the output)."""
    tracemalloc.start()
    start = time.perf_counter()
    out = fn(*args)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return out, seconds, peak - out.numel() * out.element_size()


def _peak_rss_growth(fn: Callable[..., object], *args: object) -> int:
    """Peak resident memory above the start during ``fn(*args)`` (Linux: VmHWM after resetting it; torch's buffers are
    not seen by tracemalloc)."""
    Path("/proc/self/clear_refs").write_text("5")
    start = _status("VmRSS")
    fn(*args)
    return _status("VmHWM") - start


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def export_rows(rows: int, cols: int) -> list[dict]:
    """One layer through the export's ``to_tensors`` and the loader's ``from_tensors`` (int32 words or bit stream, fp16
    scales): peak resident growth per code, outputs included."""
    from autoq.export.layout import from_tensors, to_tensors
    from autoq.quant import QuantSpec, quantize

    out = []
    print(f"\nexport and load of one {rows} x {cols} layer: peak resident growth per code (outputs included)")
    for name in ("int3-ch-asym", "int4-ch-asym", "int6-g128-asym"):
        spec = QuantSpec.from_name(name)
        qt = quantize(torch.randn(rows, cols, generator=torch.Generator().manual_seed(0)), spec)
        tensors, layout = to_tensors("layer", qt)
        export_peak = _peak_rss_growth(to_tensors, "layer", qt)
        load_peak = _peak_rss_growth(from_tensors, "layer", tensors, spec, (rows, cols), layout)
        row = {"format": name, "layout": layout, "export_bytes_per_code": export_peak / qt.codes.numel(),
               "load_bytes_per_code": load_peak / qt.codes.numel()}
        out.append(row)
        print(f"{name:<16} {layout:<10} export {row['export_bytes_per_code']:5.1f}   load {row['load_bytes_per_code']:5.1f}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=count, default=4096,
                        help="rows of the codes packed and of the layer exported (out features; default: 4096)")
    parser.add_argument("--cols", type=count, default=4096,
                        help="columns of the codes packed and of the layer exported (in features; default: 4096)")
    parser.add_argument("--out", type=out_file, default=str(Path(__file__).parent / "results" / "pack_memory.json"), help=OUT_HELP)
    args = parser.parse_args()
    n = args.rows * args.cols
    rows = []
    print(f"{n:,} codes ({args.rows} x {args.cols}); bytes of working memory per code, and seconds")
    print(f"{'bits':>4} {'way':<7} {'pack B/code':>11} {'pack s':>7} {'unpack B/code':>13} {'unpack s':>8}")
    for bits in (3, 5, 6):
        codes = torch.randint(0, 1 << bits, (args.rows, args.cols), generator=torch.Generator().manual_seed(bits), dtype=torch.uint8)
        for way, pack, unpack in (("steps", pack_codes, unpack_codes), ("whole", whole_pack, whole_unpack)):
            packed, pack_s, pack_peak = measure(pack, codes, bits)
            back, unpack_s, unpack_peak = measure(unpack, packed, bits, n)
            assert torch.equal(back, codes.reshape(-1)), f"{way} {bits} bits does not round-trip"
            row = {"bits": bits, "way": way, "codes": n, "pack_bytes_per_code": pack_peak / n, "pack_seconds": pack_s,
                   "unpack_bytes_per_code": unpack_peak / n, "unpack_seconds": unpack_s}
            rows.append(row)
            print(f"{bits:>4} {way:<7} {row['pack_bytes_per_code']:>11.1f} {pack_s:>7.2f} {row['unpack_bytes_per_code']:>13.1f} {unpack_s:>8.2f}")
    layers = export_rows(args.rows, args.cols)
    Path(args.out).write_text(json.dumps({**provenance(),
                                          "rows": rows, "export": layers}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
