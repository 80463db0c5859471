"""Benchmark: how fast can batch-1 W4 go on this GPU? fp16 against every GEMV tile and larger ones (needs a CUDA GPU).

At LLaMA-7B shapes a W4 weight is 8-23 MB, only a few memory latencies deep on an H200, so the
bandwidth ratio to fp16 (3.5-3.9x) need not be reachable. This measures, by CUDA graph replay
with L2 flushed (``autoq.kernels.timing``):

- ``torch.sum`` over a buffer of the W4 weight's bytes, and over the fp16 weight's, meant as a read
  floor. It is not one: on the H200 (2026-11-30) the int32 sum read at 424-531 GB/s and the fp16 sum
  more slowly than cuBLAS's GEMV, so the rows are kept only as a reference;
- torch's fp16 ``F.linear`` at batch 1;
- the W4 per-channel GEMV at 4096x4096 with every autotune tile and some larger ones outside the
  list, each checked against a float32 reference first.

    python benchmarks/gemv_floor.py [--out gemv_floor.json] [--rep-ms 30]

Prints a table and writes JSON. Without a GPU it says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from autoq.errors import AutoqError
from autoq.kernels.bench import LLAMA_7B_SHAPES, random_quantized
from autoq.kernels.capability import require_gpu
from autoq.kernels.timing import gpu_time_us, warm_up
from autoq.quant import QuantSpec

FORMAT = "int4-ch-asym"
SWEEP_SHAPE = (4096, 4096)  # the shape every tile is timed at
# (BLOCK_N, BLOCK_K, warps, stages, prefetch) outside the autotune list: longer K steps and more warps, more bytes in flight
EXTRA_TILES = [(8, 2048, 4, 2, True), (8, 4096, 8, 2, True), (16, 4096, 8, 2, True), (4, 2048, 2, 2, True),
               (4, 4096, 4, 2, True), (16, 2048, 8, 3, True), (32, 4096, 8, 2, True), (64, 512, 4, 2, True)]


def sweep(device: torch.device, rep_ms: float, shapes=LLAMA_7B_SHAPES, sweep_shape=SWEEP_SHAPE, timer=gpu_time_us) -> list[dict]:
    """One row per measurement: the two sums and fp16 at each shape, every tile at ``sweep_shape``."""
    import triton

    from autoq.kernels import triton_wq_gemv
    from autoq.kernels.registry import get_kernel

    gen = torch.Generator().manual_seed(0)
    spec = QuantSpec.from_name(FORMAT)
    rows = []
    for n, k in shapes:
        packed = get_kernel("wq").prepare(random_quantized(n, k, spec, gen)).to(device)
        fp16 = torch.randn(n, k, generator=gen).half().to(device)
        words = torch.randint(0, 9, (packed.nbytes // 4,), generator=gen, dtype=torch.int32).to(device)
        x = torch.randn(1, k, generator=gen).half().to(device)
        for what, nbytes, fn in [("sum over W4 bytes", words.numel() * 4, words.sum), ("sum over fp16 bytes", fp16.numel() * 2, fp16.sum),
                                 ("fp16 F.linear", fp16.numel() * 2, (lambda x=x, w=fp16: torch.nn.functional.linear(x, w)))]:
            median, p20, p80 = timer(fn, rep_ms, device)
            rows.append(dict(n=n, k=k, what=what, bytes=nbytes, median_us=median, p20_us=p20, p80_us=p80, gbps=nbytes / median / 1e3))
        if (n, k) != tuple(sweep_shape):
            continue
        ref = x.float() @ packed.dequantize().to(device).float().T
        tiles = [(c, "autotune list") for c in triton_wq_gemv._GEMV_CONFIGS]
        tiles += [(triton.Config({"BLOCK_N": bn, "BLOCK_K": bk, "PREFETCH": pf}, num_warps=w, num_stages=s), "extra")
                  for bn, bk, w, s, pf in EXTRA_TILES]
        for tile, source in tiles:
            name = (f"W4 GEMV {tile.kwargs['BLOCK_N']}x{tile.kwargs['BLOCK_K']} w{tile.num_warps} s{tile.num_stages}"
                    + ("" if tile.kwargs["PREFETCH"] else " no-prefetch"))
            try:
                out, _ = triton_wq_gemv.gemv(x, packed, 1, tile=tile)
                err = ((out.float() - ref).norm() / ref.norm()).item()
                if not err < 1e-2:
                    raise ValueError(f"relative error {err:.2e} against float32")
                median, p20, p80 = timer(lambda t=tile, x=x, w=packed: triton_wq_gemv.gemv(x, w, 1, tile=t), rep_ms, device)
            except Exception as exc:  # noqa: BLE001 - a tile that does not compile or is wrong is reported, not fatal
                rows.append(dict(n=n, k=k, what=name, source=source, error=f"{type(exc).__name__}: {str(exc)[:200]}"))
                continue
            rows.append(dict(n=n, k=k, what=name, source=source, bytes=packed.nbytes, median_us=median, p20_us=p20, p80_us=p80,
                             gbps=packed.nbytes / median / 1e3, rel_err=err))
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'n':>6} {'k':>6}  {'what':<40} {'median_us':>9} {'p20':>7} {'p80':>7} {'GB/s':>7}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['n']:>6} {r['k']:>6}  {r['what']:<40} {r['error']}")
        else:
            lines.append(f"{r['n']:>6} {r['k']:>6}  {r['what']:<40} {r['median_us']:>9.2f} {r['p20_us']:>7.2f} {r['p80_us']:>7.2f} "
                         f"{r['gbps']:>7.0f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gemv_floor.json")
    parser.add_argument("--rep-ms", type=float, default=30.0)
    args = parser.parse_args()
    try:
        require_gpu("benchmarks/gemv_floor.py")
    except AutoqError as exc:
        print(f"gemv_floor: error: {exc}", file=sys.stderr)
        return 2
    import triton

    device = torch.device("cuda", torch.cuda.current_device())
    warm_up(device)
    rows = sweep(device, args.rep_ms)
    result = dict(device=torch.cuda.get_device_name(device), torch=torch.__version__, triton=triton.__version__, format=FORMAT,
                  timing="CUDA graph replay, L2 flushed before each call (autoq.kernels.timing)", rows=rows)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)
    print(format_rows(rows))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
