"""Benchmark: how fast can batch-1 W4 go on this GPU, and how much of it is the timing? (needs a CUDA GPU)

At LLaMA-7B shapes a W4 weight is 8-23 MB, only a few memory latencies deep on an H200, so the
bandwidth ratio to fp16 (3.5-3.9x) need not be reachable, and a fixed cost per call counts.
Every row is timed by both methods of ``autoq.kernels.timing`` (CUDA graph replay):

- ``flush``: L2 flushed (256 MB written) before each call, what the committed tables used;
- ``rotate``: calls back to back, each on its own copy of the weights, as layers in a forward pass.

Rows, at every LLaMA shape unless said:

- a one-element ``add_``: what one call costs with no bytes to read, under each method;
- torch's fp16 ``F.linear`` at batch 1;
- the autotuned W4 GEMV (``autoq.kernels.ops.wq_linear``) per channel and in groups of 128, with its
  speedup over fp16 by the same method: the issue's target is 3x; where ``ops.wq_linear`` launches the GEMV as a
  programmatic dependent launch (``AUTOQ_GEMV_PDL=1`` on Hopper), also without it (``, no PDL``);
- at 4096 x 4096, the per-channel W4 GEMV in every autotune tile (the packed-half ones first, persistent ones where K is
  whole steps) and some outside the list (longer K steps, more warps; rows in each thread in other sizes), each checked
  against a float32 reference first;
- the autotuner's split candidates (six tiles, two of them HALF2, split 2, 4 or 8 ways over K, down to one step a program,
  partial sums added by the last split of each tile, in the same kernel; before the tiles outside the list): the autotuner picks by these
  timings too, and they say per tile whether more, shorter programs pay at batch 1;
- on Hopper, ``PDL_TILES`` again as programmatic dependent launches (``gemv(..., pdl=True)``): under ``rotate``,
  where calls run back to back, each starts while the one before ends; whether that takes the fixed cost of a
  call off is what these rows say.

On the H200 (2026-11-30, flush only) every tile then in the list took 7.6-18.6 us at 4096 x 4096 and a
``torch.sum`` over the same bytes, meant as a read floor, read at 424-531 GB/s (no floor: that row is gone).
The tiles with the rows in each thread (``ROWS_IN_THREAD``, no barriers in the loop) came after it.

    python benchmarks/gemv_floor.py [--out gemv_floor.json] [--rep-ms 30] [--timings flush,rotate]

Prints a table and writes JSON. Without a GPU it says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from unittest import mock

import torch

from autoq.errors import AutoqError
from autoq.kernels.bench import BASELINE_KERNEL, LLAMA_7B_SHAPES, prepare_case
from autoq.kernels.capability import require_gpu
from autoq.kernels.precompile import PrecompileCase, Target, precompile
from autoq.kernels.table import TIMINGS
from autoq.kernels.timing import copies_needed, time_calls_us, warm_up
from autoq.quant import QuantSpec

FORMATS = ("int4-ch-asym", "int4-g128-asym")  # the autotuned rows; the tile sweep is the first
SWEEP_SHAPE = (4096, 4096)  # the shape every tile is timed at
# (BLOCK_N, BLOCK_K, warps, stages, prefetch, rows in thread) outside the autotune list: longer K steps and more warps,
# more bytes in flight; and rows in each thread (no barriers) in a shorter step on 2 warps, without prefetch, 2 rows
# a thread, and 4 rows a thread in 2048-column steps (8192 warps for 4096 rows)
EXTRA_TILES = [(8, 2048, 4, 2, True, False), (8, 4096, 8, 2, True, False), (16, 4096, 8, 2, True, False),
               (4, 2048, 2, 2, True, False), (4, 4096, 4, 2, True, False), (16, 2048, 8, 3, True, False),
               (32, 4096, 8, 2, True, False), (64, 512, 4, 2, True, False), (8, 512, 2, 2, True, True),
               (8, 1024, 4, 2, False, True), (2, 1024, 4, 2, True, True), (4, 2048, 8, 2, True, True)]
# (BLOCK_N, BLOCK_K, warps, stages, prefetch, rows in thread[, half2[, persist]], split) timed again as programmatic dependent
# launches: the main tile, the fastest on the H200 (2026-11-30), the rows-in-thread one, a split to one step a program, two
# HALF2, the HALF2 tile two steps ahead in 8 x 2048 (its whole K in flight at once at 4096 x 4096), and a persistent one
# (2 programs an SM: the next kernel's programs, let in early, may take the SM slots the rest leave)
PDL_TILES = [(16, 1024, 4, 2, True, False, 1), (8, 1024, 2, 2, True, False, 1), (8, 1024, 4, 2, True, True, 1), (16, 512, 2, 2, True, False, 8),
             (16, 1024, 4, 2, True, True, True, 1), (8, 1024, 4, 2, True, True, True, 1), (8, 2048, 8, 2, 2, True, True, 1),
             (8, 2048, 8, 2, 1, True, True, 2, 1)]


def pdl_by_default(device: torch.device) -> bool:
    """Whether ``ops.wq_linear`` launches the GEMV as a programmatic dependent launch here (``AUTOQ_GEMV_PDL=1`` on Hopper)."""
    from autoq.kernels import triton_wq_gemv

    return triton_wq_gemv.pdl_by_default(device)


def _pdl_env(pdl: bool):
    """``AUTOQ_GEMV_PDL=0`` inside, unless ``pdl``: the autotuned rows without programmatic dependent launch (the
    environment is put back after, as ``unittest.mock.patch.dict`` does)."""
    return contextlib.nullcontext() if pdl else mock.patch.dict(os.environ, {"AUTOQ_GEMV_PDL": "0"})


def _copying(timings) -> str:
    """The timing whose copies of each weight serve all of ``timings``: ``flush`` reads the first of ``rotate``'s."""
    return "rotate" if "rotate" in timings else "flush"


def _timed(row: dict, fns, nbytes: int, timings, rep_ms: float, device: torch.device, timer) -> dict:
    """``row`` with ``<timing>_us`` (median, p20, p80) and ``<timing>_gbps`` for each of ``timings``."""
    row = dict(row, bytes=nbytes, copies=len(fns))
    for timing in timings:
        median, p20, p80 = timer(fns, timing, rep_ms, device)
        row[f"{timing}_us"] = [median, p20, p80]
        row[f"{timing}_gbps"] = nbytes / median / 1e3 if nbytes else None
    return row


def split_tiles(x, weight) -> list:
    """The split candidates of the GEMV's split-choosing autotuner that it keeps for activations ``x`` and ``weight``."""
    from autoq.kernels import triton_wq_gemv

    kept = triton_wq_gemv.prune_gemv_configs(triton_wq_gemv._GEMV_SPLIT_CONFIGS, {"K": x.shape[-1], "x_ptr": x}, CPW=weight.codes_per_word,
                                             GROUP=weight.group_size, BITS=weight.bits)
    return [c for c in kept if c.kwargs["SPLIT_K"] > 1]


def _tile_rows(device, n, k, x, weights, nbytes, timings, rep_ms, timer) -> Iterator[dict]:
    """The per-channel W4 GEMV in every autotune tile and every extra one, each checked against float32 first."""
    from autoq.kernels import triton_wq_gemv
    from autoq.kernels.autotune_log import tile_name
    from autoq.kernels.splits import with_split

    ref = x.float() @ weights[0].dequantize().float().T
    # the packed-half tiles first (the fastest so far): a run cut short by its deadline keeps them; persistent ones where K is whole steps
    tiles = [(c, "autotune list") for c in sorted(triton_wq_gemv._GEMV_CONFIGS, key=lambda c: not c.kwargs["HALF2"])
             if not (c.kwargs.get("PERSIST") and triton_wq_gemv.persist_problem(c, k, 1))]
    # the split candidates before the extra tiles: a run cut short by its deadline keeps what the autotuner may choose
    tiles += [(c, "autotune list, split") for c in split_tiles(x, weights[0])]
    if triton_wq_gemv.pdl_problem(device) is None:  # before the extra tiles too
        tiles += [(with_split(triton_wq_gemv.gemv_tile(*pdl[:-1]), pdl[-1]), "pdl") for pdl in PDL_TILES]
    tiles += [(triton_wq_gemv.gemv_tile(*extra), "extra") for extra in EXTRA_TILES]
    for tile, source in tiles:
        pdl = source == "pdl"
        row = dict(n=n, k=k, what=f"W4 GEMV {tile_name(tile)}{' pdl' if pdl else ''}", source=source, split_k=tile.kwargs.get("SPLIT_K", 1))
        try:
            out, _ = triton_wq_gemv.gemv(x, weights[0], None, tile=tile, pdl=pdl)
            err = ((out.float() - ref).norm() / ref.norm()).item()
            if not err < 1e-2:
                raise ValueError(f"relative error {err:.2e} against float32")
            fns = [lambda t=tile, w=w, p=pdl: triton_wq_gemv.gemv(x, w, None, tile=t, pdl=p) for w in weights]
            row = _timed(dict(row, rel_err=err), fns, nbytes, timings, rep_ms, device, timer)
        except Exception as exc:  # noqa: BLE001 - a tile that does not compile or is wrong is reported, not fatal
            row = dict(row, error=f"{type(exc).__name__}: {str(exc)[:200]}")
        yield row


def sweep(device: torch.device, rep_ms: float, shapes=LLAMA_7B_SHAPES, sweep_shape=SWEEP_SHAPE, timings=tuple(TIMINGS),
          timer=time_calls_us) -> Iterator[dict]:
    """Rows as they are measured (see the module docstring), the tile sweep last; ``timer(fns, timing, rep_ms, device)``
    gives (median, p20, p80). Weights are made as ``autoq kernels bench`` makes them (``prepare_case``)."""
    gen = torch.Generator().manual_seed(0)
    copying = _copying(timings)
    pdl_here = pdl_by_default(device)  # asked once: inside _pdl_env(False) it would say no
    for n, k in shapes:
        x = torch.randn(1, k, generator=gen).half().to(device)
        cells = [torch.zeros(1, device=device) for _ in range(copies_needed(copying, 4))]
        yield _timed(dict(n=n, k=k, what="one-element add_"), [lambda c=c: c.add_(1) for c in cells], 0, timings, rep_ms, device, timer)
        weights, run, nbytes, _ = prepare_case(n, k, None, BASELINE_KERNEL, gen, device, copying)
        base = _timed(dict(n=n, k=k, what="fp16 F.linear"), [lambda w=w, x=x, run=run: run(x, w) for w in weights], nbytes, timings,
                      rep_ms, device, timer)
        yield base
        for name in FORMATS:
            weights, run, nbytes, _ = prepare_case(n, k, QuantSpec.from_name(name), "wq", gen, device, copying)
            for pdl in (True, False) if pdl_here else (False,):  # where ops.wq_linear uses PDL, also without
                with _pdl_env(pdl):
                    row = _timed(dict(n=n, k=k, what=f"{name} autotuned{', no PDL' if pdl_here and not pdl else ''}"),
                                 [lambda w=w, x=x, run=run: run(x, w) for w in weights], nbytes, timings, rep_ms, device, timer)
                yield dict(row, **{f"{timing}_speedup": base[f"{timing}_us"][0] / row[f"{timing}_us"][0] for timing in timings})
        del weights
    n, k = sweep_shape
    x = torch.randn(1, k, generator=gen).half().to(device)
    weights, _, nbytes, _ = prepare_case(n, k, QuantSpec.from_name(FORMATS[0]), "wq", gen, device, copying)
    yield from _tile_rows(device, n, k, x, weights, nbytes, timings, rep_ms, timer)


def format_row(r: dict, timings=tuple(TIMINGS)) -> str:
    """One line: per timing the median (us), GB/s and, for the autotuned rows, the speedup over fp16."""
    line = f"{r['n']:>6} {r['k']:>6}  {r['what']:<36}"
    if "error" in r:
        return f"{line} {r['error']}"
    for t in timings:
        gbps, speedup = r.get(f"{t}_gbps"), r.get(f"{t}_speedup")
        line += f" {r[f'{t}_us'][0]:>10.2f} {'-' if gbps is None else f'{gbps:.0f}':>6} {'-' if speedup is None else f'{speedup:.2f}':>6}"
    return line


def header(timings=tuple(TIMINGS)) -> str:
    return f"{'n':>6} {'k':>6}  {'what':<36}" + "".join(f" {t + ' us':>10} {'GB/s':>6} {'x fp16':>6}" for t in timings)


def main() -> int:
    from provenance import out_file  # beside this script: here, so that tests can load the module by its path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gemv_floor.json", type=out_file,  # its folder made now, not after the first row
                        help="JSON file, rewritten after each row (default: gemv_floor.json in the current folder)")
    parser.add_argument("--rep-ms", type=float, default=30.0,
                        help="ms spent on each timing (method) of each row, by CUDA graph replays (triton's do_bench if capture fails; default: 30)")
    parser.add_argument("--timings", default=",".join(TIMINGS), help=f"some of {', '.join(TIMINGS)} (default: both)")
    args = parser.parse_args()
    timings = tuple(t.strip() for t in args.timings.split(",") if t.strip())
    if not timings or set(timings) - set(TIMINGS):
        parser.error(f"--timings takes some of {', '.join(TIMINGS)}; got {args.timings!r}")
    try:
        require_gpu("benchmarks/gemv_floor.py")
    except AutoqError as exc:
        print(f"gemv_floor: error: {exc}", file=sys.stderr)
        return 2
    import triton
    from provenance import provenance  # beside this script: here, so that tests can load the module by its path

    device = torch.device("cuda", torch.cuda.current_device())
    report = precompile([PrecompileCase("wq", name, LLAMA_7B_SHAPES, (1,)) for name in FORMATS], Target.current())  # on every core
    print(f"gemv_floor: {report.summary()}", flush=True)
    warm_up(device)
    result = dict(device=torch.cuda.get_device_name(device), torch=torch.__version__, triton=triton.__version__, cuda=torch.version.cuda,
                  **{k: v for k, v in provenance().items() if k != "torch"}, timings={t: TIMINGS[t] for t in timings}, rows=[])
    print(header(timings), flush=True)
    for row in sweep(device, args.rep_ms, timings=timings):  # written row by row: a run cut short keeps what it measured
        result["rows"].append(row)
        print(format_row(row, timings), flush=True)
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=1)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
