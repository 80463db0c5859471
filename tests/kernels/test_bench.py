"""autoq.kernels.bench and ``autoq kernels bench``: what is measured, how results read, and the refusal without a GPU."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from kernel_cases import DEVICE

from autoq.errors import AutoqError
from autoq.kernels.bench import (
    BASELINE_KERNEL,
    BenchConfig,
    default_formats,
    format_table,
    measure,
    model_shapes,
    moved_bytes,
    parse_batches,
    parse_formats,
    parse_shapes,
    prepare_case,
    random_quantized,
    speedups,
)
from autoq.kernels.formats import PackedWeight
from autoq.kernels.table import LatencyRow, LatencyTable
from autoq.kernels.timing import copies_for
from autoq.quant import QuantSpec

NO_GPU = not torch.cuda.is_available()
REPO = Path(__file__).resolve().parents[2]


def test_parse_shapes_batches_formats():
    assert parse_shapes("4096x4096, 4096X11008,11008x4096") == ((4096, 4096), (4096, 11008), (11008, 4096))
    assert parse_batches("1,16,128") == (1, 16, 128)
    assert [s.name for s in parse_formats("int4-g128-asym,fp16,int8-ch-sym")] == ["int4-g128-asym", "int8-ch-sym"]
    for bad in ("4096", "4096x", "0x5", "4096x0", "", "4096x４096"):
        with pytest.raises(AutoqError, match="shape"):
            parse_shapes(bad)
    for bad in ("1,x", "0", ""):
        with pytest.raises(AutoqError, match="batch"):
            parse_batches(bad)
    with pytest.raises(AutoqError, match="group size"):
        parse_formats("int4-g100-asym")
    with pytest.raises(AutoqError, match="int4-g128-asym"):
        parse_formats("int4_g128")
    with pytest.raises(AutoqError, match="--formats names only fp16, which every table measures as its baseline anyway; name the integer"):
        parse_formats("fp16")  # it said 'no formats given'
    with pytest.raises(AutoqError, match="--formats names no formats"):
        parse_formats(" , ")


def test_model_shapes_are_distinct_layer_shapes():
    model = torch.nn.Sequential(torch.nn.Linear(32, 96), torch.nn.ReLU(), torch.nn.Linear(96, 32), torch.nn.Linear(32, 96), torch.nn.Linear(96, 10))
    assert model_shapes(model) == ((96, 32), (32, 96), (10, 96))


def test_cases_cover_every_format_with_each_kernel_that_reads_it():
    config = BenchConfig(shapes=((64, 128),), formats=(QuantSpec.from_name("int4-g128-asym"), QuantSpec.from_name("int8-ch-sym")))
    cases = config.cases()
    assert cases[0] == ((64, 128), None, BASELINE_KERNEL)
    assert [(spec.name, kernel) for _, spec, kernel in cases[1:]] == [("int4-g128-asym", "wq"), ("int8-ch-sym", "wq"), ("int8-ch-sym", "w8a8")]
    names = [s.name for s in default_formats()]
    assert len(names) == len(set(names)) and "int3-g128-asym" in names and "int8-ch-sym" in names


def test_cases_put_every_baseline_first_then_go_format_by_format():
    """A run cut short (max_seconds) keeps the first formats at every shape, each with its fp16 baseline."""
    shapes = ((64, 128), (96, 32))
    config = BenchConfig(shapes=shapes, formats=(QuantSpec.from_name("int4-g128-asym"), QuantSpec.from_name("int2-ch-asym")), kernels=("wq",))
    cases = [(shape, spec.name if spec else "fp16") for shape, spec, _ in config.cases()]
    assert cases == [(shapes[0], "fp16"), (shapes[1], "fp16"), (shapes[0], "int4-g128-asym"), (shapes[1], "int4-g128-asym"),
                     (shapes[0], "int2-ch-asym"), (shapes[1], "int2-ch-asym")]


def test_a_bench_measures_batch_1_16_and_128_by_default():
    """Batch 1 (the GEMV), 16 and 128 (the GEMM's short and long tiles): the batch sizes a latency table holds unless
    ``--batches`` names others, as the help says."""
    assert BenchConfig(shapes=((8, 8),)).batches == (1, 16, 128)
    from autoq.cli import build_parser

    bench = build_parser().parse_args(["kernels", "bench"])
    assert parse_batches(bench.batches) == (1, 16, 128)


def test_an_unknown_timing_is_refused_with_the_two_there_are():
    with pytest.raises(AutoqError, match="unknown timing 'cold'; choose one of flush, rotate .*rotate: CUDA graph replay, calls back to back"):
        BenchConfig(shapes=((8, 8),), timing="cold")


def test_kernels_that_run_none_of_the_formats_are_refused_before_the_gpu():
    """Such a run timed only the fp16 baseline (``cases`` drops what no kernel runs) and wrote a table without a format."""
    with pytest.raises(AutoqError, match=r"kernel\(s\) w8a8 run none of the format\(s\) int4-g128-asym; .*\(int4-g128-asym: wq, wq-gemm"):
        BenchConfig(shapes=((8, 8),), kernels=("w8a8",), formats=parse_formats("int4-g128-asym,int8-ch-sym"))
    with pytest.raises(AutoqError, match="no kernel to time"):
        BenchConfig(shapes=((8, 8),), kernels=())
    only_w8a8 = BenchConfig(shapes=((8, 8),), kernels=("w8a8",))  # the default formats: it measures those it runs
    assert {spec.name for _, spec, _ in only_w8a8.cases() if spec is not None} == {"int8-ch-sym"}


@pytest.mark.parametrize("field, value, named", [
    ("batches", (1, 16, 1), "batches (--batches) name 1 more than once"),
    ("shapes", ((8, 8), (16, 8), (8, 8)), "shapes (--shapes) name 8x8 more than once"),
    ("formats", "int4-ch-asym,int8-ch-sym,int4-ch-asym", "formats (--formats) name int4-ch-asym more than once"),
    ("kernels", ("wq", "wq"), "kernels (--kernels) name wq more than once"),
])
def test_a_value_named_twice_is_refused_before_the_gpu(field, value, named):
    """It was measured twice into rows that ``--device`` then refused as measuring one case twice."""
    kwargs = {"shapes": ((8, 8),), field: parse_formats(value) if field == "formats" else value}
    with pytest.raises(AutoqError, match=re.escape(named) + "; each is measured once"):
        BenchConfig(**kwargs)
    once = {**kwargs, field: tuple(dict.fromkeys(kwargs[field]))}
    assert len(BenchConfig(**once).cases()) > 0


@pytest.mark.parametrize("spec_name, kernel", [(None, BASELINE_KERNEL), ("int4-g128-asym", "wq"), ("int8-ch-sym", "w8a8")])
def test_rotated_cases_run_on_enough_distinct_copies_of_one_weight(spec_name, kernel):
    """``rotate`` times each case on copies of its weight in distinct memory, so many that each leaves the L2 before it
    is read again; ``flush`` on one. Every copy computes the same output."""
    spec = QuantSpec.from_name(spec_name) if spec_name else None
    weights, run, nbytes, _ = prepare_case(16, 256, spec, kernel, torch.Generator().manual_seed(0), torch.device(DEVICE), "rotate")
    assert len(weights) == copies_for(nbytes) > 1

    def tensors(w):
        return [w] if spec is None else [t for t in vars(w).values() if isinstance(t, torch.Tensor)]

    assert len({t.data_ptr() for w in weights for t in tensors(w)}) == len(tensors(weights[0])) * len(weights)
    x = torch.randn(1, 256, generator=torch.Generator().manual_seed(1)).half().to(DEVICE)
    assert torch.equal(run(x, weights[0]), run(x, weights[-1]))
    flushed, _, flushed_bytes, _ = prepare_case(16, 256, spec, kernel, torch.Generator().manual_seed(0), torch.device(DEVICE), "flush")
    assert len(flushed) == 1 and flushed_bytes == nbytes and torch.equal(run(x, flushed[0]), run(x, weights[0]))


def test_random_weights_and_moved_bytes():
    spec = QuantSpec.from_name("int4-g128-asym")
    qt = random_quantized(256, 512, spec, torch.Generator().manual_seed(0))
    packed = PackedWeight.from_quantized(qt)
    assert packed.nbytes == 256 * 512 // 2 + 256 * 4 * 2 * 2
    assert moved_bytes(256, 512, 1, packed.nbytes) == packed.nbytes + 512 * 2 + 256 * 2


def test_speedups_and_text_table():
    rows = (LatencyRow(4096, 4096, "fp16", BASELINE_KERNEL, 1, 30.0, 29.0, 31.0, 1100.0),
            LatencyRow(4096, 4096, "int4-g128-asym", "wq", 1, 10.0, 9.5, 10.5, 900.0))
    table = LatencyTable("GPU", rows, peak_bandwidth_gbs=3000.0)
    (s,) = speedups(table)
    assert s["speedup"] == pytest.approx(3.0) and s["bandwidth_share"] == pytest.approx(0.3)
    text = format_table([s])
    assert "int4-g128-asym" in text and "3.00" in text


@pytest.mark.skipif(not NO_GPU, reason="checks the refusal on a machine without a GPU")
def test_measure_refuses_without_gpu():
    with pytest.raises(AutoqError, match="needs a CUDA GPU"):
        measure(BenchConfig(shapes=((8, 8),)))


@pytest.mark.skipif(not NO_GPU, reason="checks the refusal on a machine without a GPU")
def test_llama_benchmark_refuses_without_gpu():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "kernels_llama.py")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "needs a CUDA GPU" in proc.stderr


@pytest.mark.skipif(not NO_GPU, reason="checks the refusal on a machine without a GPU")
def test_gemv_floor_benchmark_refuses_without_gpu():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gemv_floor.py")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "needs a CUDA GPU" in proc.stderr


def test_gemv_floor_sweep_checks_and_times_every_tile_by_both_methods():
    """The sweep on small shapes with a stand-in timer: every autotune tile (the split candidates that fit too) and every
    extra one runs, is checked against float32 first, and gets both timings; rotated rows get enough copies of their weights; the autotuned W4 rows get a
    speedup over fp16 by each method. On a GPU the same code times them by graph replay."""
    spec = importlib.util.spec_from_file_location("gemv_floor", REPO / "benchmarks" / "gemv_floor.py")
    floor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(floor)
    calls = []

    def timer(fns, timing, rep_ms, device):
        fns[0 if timing == "flush" else -1]()
        calls.append((timing, rep_ms, len(fns)))
        return (2.0, 1.5, 2.5) if timing == "flush" else (1.0, 0.9, 1.1)

    rows = list(floor.sweep(torch.device(DEVICE), 7.0, shapes=((24, 1100), (8, 64)), sweep_shape=(24, 1100), timer=timer))
    tiles = [r for r in rows if r["what"].startswith("W4 GEMV")]
    from autoq.kernels import triton_wq_gemv

    split_tiles = floor.split_tiles(torch.empty(1, 1100, dtype=torch.float16, device="meta"),
                                    PackedWeight.empty(QuantSpec.from_name("int4-ch-asym"), (24, 1100)))
    splits = len(split_tiles)
    assert splits > 0 and all(1 < t.kwargs["SPLIT_K"] and t.kwargs["SPLIT_K"] * t.kwargs["BLOCK_K"] <= 1100 for t in split_tiles)
    pdl = len(floor.PDL_TILES) if triton_wq_gemv.pdl_problem(torch.device(DEVICE)) is None else 0  # on Hopper: PDL rows too
    whole = [c for c in triton_wq_gemv._GEMV_CONFIGS if not c.kwargs.get("PERSIST")]  # K=1100 is no whole number of steps
    assert len(tiles) == len(whole) + len(floor.EXTRA_TILES) + splits + pdl
    listed = [r["what"] for r in tiles if r["source"] == "autotune list"]
    assert all("half2" in w for w in listed[:sum(c.kwargs["HALF2"] for c in whole)])  # packed halves first
    split_rows = [r for r in tiles if r["source"] == "autotune list, split"]  # a PDL tile may split too (on Hopper)
    assert len(split_rows) == splits and all(r["what"].endswith(f" split{r['split_k']}") for r in split_rows)
    assert all(r["what"].endswith(" pdl") for r in tiles if r["source"] == "pdl") and sum(r["source"] == "pdl" for r in tiles) == pdl
    assert all("error" not in r and r["rel_err"] < 1e-3 for r in tiles), [r for r in tiles if "error" in r]
    per_shape = ["one-element add_", "fp16 F.linear", "int4-ch-asym autotuned", "int4-g128-asym autotuned"]
    if floor.pdl_by_default(torch.device(DEVICE)):  # Hopper: ops.wq_linear's programmatic dependent launch, and without
        per_shape = [*per_shape[:2], "int4-ch-asym autotuned", "int4-ch-asym autotuned, no PDL", "int4-g128-asym autotuned",
                     "int4-g128-asym autotuned, no PDL"]
    assert [r["what"] for r in rows if r["n"] == 8] == per_shape  # no sweep there
    assert all(r["flush_us"] == [2.0, 1.5, 2.5] and r["rotate_us"] == [1.0, 0.9, 1.1] for r in rows)
    assert all(r["copies"] == copies_for(max(4, r["bytes"])) for r in rows)  # so many that each copy leaves the L2
    assert len(calls) == 2 * len(rows) and {c[1] for c in calls} == {7.0}
    autotuned = [r for r in rows if "autotuned" in r["what"]]
    assert len(autotuned) == 4 * (1 + floor.pdl_by_default(torch.device(DEVICE)))
    assert all(r["flush_speedup"] == 1.0 and r["rotate_speedup"] == 1.0 for r in autotuned)
    assert rows[-1]["what"].startswith("W4 GEMV") and rows[0]["what"] == "one-element add_"  # the tile sweep last
    text = "\n".join([floor.header(), *map(floor.format_row, rows)])
    assert "W4 GEMV 16x1024 w4 s2 no-prefetch" in text and "W4 GEMV 8x1024 w4 s2 rows-in-thread" in text and "rotate us" in text
    assert "W4 GEMV 8x256 w1 s2 split4" in text


def test_gemv_floor_refuses_an_unknown_timing():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gemv_floor.py"), "--timings", "flush,cold"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--timings takes some of flush, rotate; got 'flush,cold'" in proc.stderr


def test_gemv_floor_times_the_autotuned_rows_without_pdl_too_where_pdl_is_the_default(monkeypatch):
    """Where ``ops.wq_linear`` launches the GEMV as a programmatic dependent launch (Hopper), each autotuned W4 row is
    timed again with ``AUTOQ_GEMV_PDL=0`` and labelled so; the variable is put back after."""
    spec = importlib.util.spec_from_file_location("gemv_floor", REPO / "benchmarks" / "gemv_floor.py")
    floor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(floor)
    monkeypatch.setattr(floor, "pdl_by_default", lambda device: True)
    monkeypatch.delenv("AUTOQ_GEMV_PDL", raising=False)
    seen = []

    def timer(fns, timing, rep_ms, device):
        fns[-1]()
        seen.append(os.environ.get("AUTOQ_GEMV_PDL"))
        return (1.0, 0.9, 1.1)

    rows = []
    for row in floor.sweep(torch.device(DEVICE), 5.0, shapes=((8, 64),), sweep_shape=(8, 64), timings=("rotate",), timer=timer):
        if row["what"].startswith("W4 GEMV"):
            break
        rows.append(row["what"])
    assert rows == ["one-element add_", "fp16 F.linear", "int4-ch-asym autotuned", "int4-ch-asym autotuned, no PDL",
                    "int4-g128-asym autotuned", "int4-g128-asym autotuned, no PDL"]
    assert seen[:6] == [None, None, None, "0", None, "0"] and "AUTOQ_GEMV_PDL" not in os.environ
