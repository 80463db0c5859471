"""``autoq kernels bench``: measure autoq's kernels on this GPU into a latency table for ``--device``."""

from __future__ import annotations

import argparse
import re
import sys

from autoq.cli.parser import user_path


def add_parser(sub: argparse._SubParsersAction) -> None:
    from autoq.builtin import BUILTINS, DEFAULT_MODEL
    from autoq.kernels.bench import DEFAULT_BATCHES, DEFAULT_KERNELS
    from autoq.kernels.table import TIMINGS

    p = sub.add_parser("kernels", help="autoq's Triton kernels: measure them into a latency table",
                       description="autoq's Triton kernels (weight-only 2- to 8-bit, W8A8).")
    commands = p.add_subparsers(dest="kernels_command", required=True, metavar="ACTION")
    b = commands.add_parser(
        "bench", help="measure every format at a model's layer shapes on this GPU and write a latency table (JSON)",
        description="Time every weight format's kernel and torch's fp16 matmul at the layer shapes of a model "
                    "(and/or explicit shapes) and batch sizes on the current CUDA GPU; write the latency table that "
                    "'autoq search --device TABLE.json' reads. Needs a GPU.",
    )
    b.add_argument("--model", default=None, type=user_path, help=f"a built-in ({', '.join(BUILTINS)}; default: {DEFAULT_MODEL}), a local Hugging Face "
                   "model directory, or 'none' to measure only --shapes")
    b.add_argument("--shapes", default=None, help="extra layer shapes NxK (out x in features), e.g. 4096x4096,4096x11008,11008x4096")
    b.add_argument("--batches", default=",".join(map(str, DEFAULT_BATCHES)), help="batch sizes (rows of activations); default: %(default)s")
    b.add_argument("--formats", default=None, help="weight formats, e.g. int4-g128-asym,int8-ch-sym (default: 2-8 bits per channel and g32/g64/g128, asymmetric, "
                   "plus int4-g128-sym, int4-ch-sym and int8-ch-sym)")
    b.add_argument("--kernels", default=",".join(DEFAULT_KERNELS), help=f"kernels to time (default: {','.join(DEFAULT_KERNELS)})")
    b.add_argument("--rep-ms", type=int, default=100, help="timing time per case in ms, CUDA graph replays (default: 100)")
    b.add_argument("--timing", choices=tuple(TIMINGS), default="flush",
                   help="flush: L2 flushed before each call (default); rotate: calls back to back, each on its own copy "
                        "of the weights, as layers run in a forward pass")
    b.add_argument("--max-seconds", type=float, default=None, help="start no new case after this many seconds and write what was measured")
    b.add_argument("--compile-workers", type=int, default=None,
                   help="processes that compile the kernels before timing starts (default: one per core; 0: compile each at its first launch)")
    b.add_argument("--out", default=None, type=user_path, help="output JSON (default: latency_<device>.json in the current directory)")
    b.add_argument("--merge", action="store_true", help="keep the rows of an existing --out table that were not re-measured")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(run=run_bench)


def device_slug(name: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def run_bench(args: argparse.Namespace) -> int:
    import dataclasses
    import os
    from pathlib import Path

    from autoq.errors import AutoqError
    from autoq.files import check_not_folder, make_folder
    from autoq.kernels.bench import (
        BenchConfig,
        default_formats,
        format_table,
        measure,
        model_shapes,
        parse_batches,
        parse_formats,
        parse_shapes,
        speedups,
    )
    from autoq.kernels.capability import require_gpu
    from autoq.kernels.registry import get_kernel
    from autoq.kernels.table import LatencyTable, check_mergeable

    batches = parse_batches(args.batches)  # parse everything first: bad input fails before any loading
    formats = parse_formats(args.formats) if args.formats else default_formats()
    kernels = tuple(k.strip() for k in args.kernels.split(",") if k.strip())
    for name in kernels:
        get_kernel(name)
    shapes = parse_shapes(args.shapes) if args.shapes else ()
    if args.model == "none" and not shapes:
        raise AutoqError("--model none measures only --shapes, and no --shapes were given")
    config = BenchConfig(shapes=shapes, batches=batches, formats=formats, kernels=kernels, rep_ms=args.rep_ms,
                         max_seconds=args.max_seconds, compile_workers=args.compile_workers, timing=args.timing)  # checked before the GPU
    check_not_folder(args.out, "--out", "latency.json")
    require_gpu("'autoq kernels bench'")  # before loading a model: without a GPU there is nothing to measure
    import torch

    device = torch.cuda.get_device_name(torch.cuda.current_device())
    out = Path(args.out or f"latency_{device_slug(device)}.json")
    make_folder(out.parent, "latency table")  # now, not after the GPU time is spent
    if out.exists() and not os.access(out, os.W_OK):
        raise AutoqError(f"{str(out)!r} is not writable; pass another --out")
    old = None
    if args.merge and out.exists():  # read and checked now: a refusal after measuring would throw the measurement away
        old = LatencyTable.load(out)
        import triton

        check_mergeable(old, device, args.timing, str(out), {"torch": torch.__version__, "triton": triton.__version__,
                                                              "cuda": str(torch.version.cuda)})

    workload = None
    if args.model != "none":
        from autoq.builtin import load_workload

        print(f"autoq: loading {args.model or 'the default model'} for its layer shapes ...", file=sys.stderr, flush=True)
        workload = load_workload(args.model, with_metric=False)
        shapes = tuple(dict.fromkeys(model_shapes(workload.model) + shapes))
        config = dataclasses.replace(config, shapes=shapes)
    table = measure(config, progress=not args.no_progress)
    if not table.rows:  # a table without rows would be written, and recommended, only to be refused by the search
        why = (f" within --max-seconds {args.max_seconds:g} (compiling the kernels took it); give it more time, or --compile-workers 0 "
               "to compile each kernel at its first launch") if args.max_seconds else ""
        raise AutoqError(f"nothing was measured{why}; no table written")
    if old is not None:
        table = table.updating(old, source=str(out))
    table.save(out)
    best: dict[tuple, dict] = {}
    for row in speedups(table):
        key = (row["n"], row["k"], row["batch"])
        if key not in best or (row["speedup"] or 0) > (best[key]["speedup"] or 0):
            best[key] = row
    print(f"fastest format per shape and batch on {table.device} (speedup over torch fp16):")
    print(format_table(best.values()))
    # the table written, merged rows too: this run's shapes and batches beside the whole table's rows understated it
    print(f"autoq: {len(table.rows)} measurements of {len(table.shapes)} shapes x {len(table.batches)} batches written to {out}; "
          f"use it with: {_search_command(args, workload, out, table.batches)}")
    return 0


def _search_command(args: argparse.Namespace, workload, out, batches: tuple[int, ...]) -> str:
    """The search that prices the benched model's layers by this table, as one pastes it: the table's absolute path,
    quoted; the model where not the default; ``--batch`` where 1 was not measured (a search's default batch, refused
    there); and a budget midway in the model's latency range over the default space (``3ms``, as it was for every
    model, constrained digits-cnn's 11-26 us not at all). A table of ``--shapes`` alone names no model or budget."""
    import shlex
    from pathlib import Path

    batch = 1 if 1 in batches else batches[0]
    words = ["autoq", "search"]
    if workload is not None and args.model:
        words += ["--model", workload.source]
    words += ["--device", str(Path(out).resolve()), *(["--batch", str(batch)] if batch != 1 else [])]
    budget = _midway_budget(workload, Path(out).resolve(), batch) if workload is not None else None
    if budget is None:
        return shlex.join([*words, *([] if workload is not None else ["--model", "MODEL"])]) + " --budget LATENCY (e.g. 3ms)"
    return shlex.join([*words, "--budget", budget])


def _midway_budget(workload, table: object, batch: int) -> str | None:
    """A latency halfway between the cheapest and the dearest assignment of the workload's model over the default space,
    priced by the table at ``batch`` ('18.4us'); ``None`` where the table cannot price it (formats left out of it)."""
    from autoq.cost import CostModel
    from autoq.errors import AutoqError
    from autoq.latency.resolve import latency_model
    from autoq.model.layers import find_layers
    from autoq.search_spaces import load_preset
    from autoq.space import SearchSpace

    try:
        layers = find_layers(workload.model, tuple(workload.skip))
        cost_model = CostModel.for_model(workload.model, layers, latency_model(str(table), batch))
        cheapest, dearest = SearchSpace.build(load_preset("default"), layers).extremes(cost_model, "latency_ms")
    except AutoqError:
        return None
    middle = (cheapest.latency_us + dearest.latency_us) / 2
    return f"{middle:.4g}us" if middle < 1000 else f"{middle / 1000:.4g}ms"
