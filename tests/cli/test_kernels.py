"""``autoq kernels bench`` (autoq/cli/kernels.py): argument checks and the refusal without a GPU."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import torch

from autoq.cli import main
from autoq.cli.kernels import device_slug

NO_GPU = not torch.cuda.is_available()


@pytest.mark.skipif(not NO_GPU, reason="checks the refusal on a machine without a GPU")
def test_cli_says_no_gpu_and_exits_nonzero(capsys, tmp_path):
    out = tmp_path / "t.json"
    assert main(["kernels", "bench", "--shapes", "64x64", "--model", "none", "--out", str(out)]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert not out.exists()


def test_cli_rejects_bad_arguments_before_looking_for_a_gpu(capsys):
    assert main(["kernels", "bench", "--batches", "1,x"]) == 2
    assert "batch" in capsys.readouterr().err
    assert main(["kernels", "bench", "--model", "none"]) == 2
    assert "--shapes" in capsys.readouterr().err
    assert main(["kernels", "bench", "--kernels", "marlin"]) == 2
    assert "unknown kernel" in capsys.readouterr().err
    assert main(["kernels", "bench", "--max-seconds", "-1"]) == 2  # it wrote, and recommended, a table of no rows
    assert "max_seconds (--max-seconds) must be a positive number of seconds" in capsys.readouterr().err
    assert main(["kernels", "bench", "--rep-ms", "-5"]) == 2  # taken as 10 replay pairs
    assert "rep_ms (--rep-ms, timing time per case in ms) must be a positive whole number, got -5" in capsys.readouterr().err


def test_an_out_that_is_a_folder_is_refused_before_measuring(tmp_path, capsys):
    """It was refused as the table was written, after the GPU time, naming a temporary file the user never made."""
    assert main(["kernels", "bench", "--model", "none", "--shapes", "8x8", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"--out {str(tmp_path)!r} is a folder; pass a file such as" in err and "CUDA" not in err


@pytest.mark.parametrize(("args", "says"), [
    (["--kernels", "foo"], "unknown kernel 'foo'"),
    (["--rep-ms", "0"], "rep_ms (--rep-ms, timing time per case in ms) must be a positive whole number, got 0"),
    (["--max-seconds", "-1"], "max_seconds (--max-seconds) must be a positive number"),
    (["--out", "FOLDER"], "is a folder; pass a file such as"),
])
def test_the_llama_benchmark_refuses_bad_arguments_before_the_gpu(tmp_path, args, says):
    """They were checked after the GPU's timings (a traceback then; here, on no GPU, a misleading 'needs a CUDA GPU')."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "kernels_llama.py"
    args = [str(tmp_path) if a == "FOLDER" else a for a in args]
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 2 and "kernels_llama: error: " in done.stderr and says in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr


def test_cli_takes_the_two_timings_and_nothing_else(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["kernels", "bench", "--timing", "cold"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--timing: invalid choice: 'cold'" in err and "flush" in err and "rotate" in err
    if NO_GPU:  # a valid timing goes on to the GPU check
        assert main(["kernels", "bench", "--shapes", "64x64", "--model", "none", "--timing", "rotate"]) == 2
        assert "needs a CUDA GPU" in capsys.readouterr().err


def test_device_slug():
    assert device_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert device_slug("(?)") == "gpu"  # the default --out is latency_gpu.json, never latency_.json


@pytest.fixture
def gpu(monkeypatch):
    """Stand-ins for a GPU on this machine: ``measure`` records each config it is given and returns ``rows`` (the H200
    table's real batch-16 rows, unless a test sets others)."""
    from autoq.kernels import bench, capability
    from autoq.kernels.table import LatencyTable
    from autoq.latency.resolve import TABLES_DIR

    state = {"configs": [], "rows": LatencyTable.load(TABLES_DIR / "h200.json").select(batch=16)}
    monkeypatch.setattr(capability, "require_gpu", lambda what: None)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")

    def measure(config, progress):
        state["configs"].append(config)
        return LatencyTable("NVIDIA H200", tuple(state["rows"]))

    monkeypatch.setattr(bench, "measure", measure)
    return state


def printed_command(printed: str) -> list[str]:
    return shlex.split(printed.split("use it with: ", 1)[1].splitlines()[0])


def test_merge_into_a_table_of_another_timing_is_refused_before_measuring(tmp_path, gpu, capsys):
    """The refusal came after the measurement, which was then thrown away: on a 15-minute GPU lease, the session's."""
    import shutil

    from autoq.latency.resolve import TABLES_DIR

    old = shutil.copy(TABLES_DIR / "h200.json", tmp_path / "old.json")  # measured on the H200 by flush timing
    args = ["kernels", "bench", "--model", "none", "--shapes", "384x384", "--formats", "int4-ch-asym", "--merge", "--out", str(old)]
    assert main([*args, "--timing", "rotate"]) == 2
    assert "--merge: " in capsys.readouterr().err and gpu["configs"] == []
    (tmp_path / "old.json").write_text("{not json")
    assert main([*args, "--timing", "flush"]) == 2 and gpu["configs"] == []


def test_merge_into_a_new_table_writes_it_and_a_second_merge_keeps_the_old_rows(tmp_path, gpu, capsys):
    """--merge with an --out not there yet just writes it; into an existing table, the rows not measured again stay."""
    from autoq.kernels.table import LatencyTable

    out = tmp_path / "t.json"
    args = ["kernels", "bench", "--model", "none", "--shapes", "64x64", "--batches", "16", "--no-progress", "--merge", "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    first = LatencyTable.load(out)
    gpu["rows"] = [r for r in gpu["rows"] if r.format == "fp16"]  # fp16 alone measured again
    assert main(args) == 0, capsys.readouterr().err
    assert len(LatencyTable.load(out).rows) == len(first.rows)


def test_an_output_that_cannot_be_written_or_an_empty_measurement_is_refused_without_a_table(tmp_path, monkeypatch, gpu, capsys):
    """--out failed only after measure(), with the GPU time spent; a measurement cut to nothing wrote an empty table."""
    import os

    blocker = tmp_path / "file"
    blocker.write_text("")
    args = ["kernels", "bench", "--model", "none", "--shapes", "384x384", "--formats", "int4-ch-asym"]
    assert main([*args, "--out", str(blocker / "t.json")]) == 2
    assert "cannot make the latency table folder" in capsys.readouterr().err and gpu["configs"] == []
    access = os.access  # a table the user may not write (root, as CI runs here, writes any: os.access says no instead)
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) == blocker else access(path, mode, **kw))
    assert main([*args, "--out", str(blocker)]) == 2
    assert "is not writable; pass another --out" in capsys.readouterr().err and gpu["configs"] == []
    gpu["rows"] = []
    assert main([*args, "--max-seconds", "1", "--out", str(tmp_path / "t.json")]) == 2
    assert "nothing was measured within --max-seconds 1 (compiling the kernels took it)" in capsys.readouterr().err
    assert len(gpu["configs"]) == 1 and not (tmp_path / "t.json").exists()


def test_blank_entries_in_kernels_are_ignored_and_shapes_beside_a_model_are_measured_too(tmp_path, gpu, capsys):
    """'--kernels "wq, ,w8a8,"' times wq and w8a8 (not "unknown kernel ''"), and --shapes adds to the
    model's layer shapes."""
    assert main(["kernels", "bench", "--model", "none", "--shapes", "64x64", "--kernels", "wq, ,w8a8,", "--no-progress",
                 "--out", str(tmp_path / "t.json")]) == 0, capsys.readouterr().err
    assert gpu["configs"][0].kernels == ("wq", "w8a8")
    assert main(["kernels", "bench", "--model", "digits-cnn", "--shapes", "64x64", "--no-progress", "--out", str(tmp_path / "t.json")]) == 0
    assert (64, 64) in gpu["configs"][1].shapes and len(gpu["configs"][1].shapes) > 1


def test_the_printed_table_shows_the_fastest_format_per_shape_and_batch(tmp_path, gpu, capsys):
    """Each printed row is the format with the largest speedup over fp16 at its shape and batch."""
    from autoq.kernels.bench import speedups
    from autoq.kernels.table import LatencyTable

    out = tmp_path / "t.json"
    assert main(["kernels", "bench", "--model", "none", "--shapes", "64x64", "--batches", "16", "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split("(speedup over torch fp16):\n", 1)[1].split("\nautoq: ", 1)[0].splitlines()
    header, body = printed[0].split(), [line.split() for line in printed[1:]]
    best: dict = {}
    for row in speedups(LatencyTable.load(out)):
        key = (str(row["n"]), str(row["k"]), str(row["batch"]))
        best[key] = max(best.get(key, 0), row["speedup"] or 0)
    assert body and len(body) == len(best)
    for cells in body:
        row = dict(zip(header, cells))
        assert row["speedup"] == f"{best[(row['n'], row['k'], row['batch'])]:.2f}", cells


def test_the_printed_search_command_runs_on_the_benched_model_at_a_measured_batch(tmp_path, monkeypatch, gpu, capsys):
    """It printed 'autoq search --budget 3ms --device PATH' for every table: unquoted (a path with a space split in
    two), without --model (the default model priced by digits-cnn's shapes) and without --batch (a table of batch 16
    refused at the search's batch 1), at a budget above digits-cnn's whole range. Its counts were this run's shapes
    beside the merged table's rows. The budget is midway between the cheapest and the dearest assignment."""
    import autoq.builtin as builtin
    from autoq.builtin import load_workload
    from autoq.cost import CostModel
    from autoq.kernels.table import LatencyTable
    from autoq.latency.resolve import latency_model
    from autoq.model import find_layers
    from autoq.search_spaces import load_preset
    from autoq.space import SearchSpace

    out = tmp_path / "my tables" / "t.json"
    assert main(["kernels", "bench", "--model", "digits-cnn", "--batches", "16", "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = LatencyTable.load(out)
    assert f"{len(table.rows)} measurements of {len(table.shapes)} shapes x 1 batches written to {out}" in printed
    command = printed_command(printed)
    assert command[:2] == ["autoq", "search"] and command[command.index("--device") + 1] == str(out)
    assert (command[command.index("--model") + 1], command[command.index("--batch") + 1]) == ("digits-cnn", "16")
    budget = command[command.index("--budget") + 1]
    us = float(budget[:-2]) * (1000 if budget.endswith("ms") else 1)
    workload = load_workload("digits-cnn", with_metric=False)
    layers = find_layers(workload.model, tuple(workload.skip))
    cheapest, dearest = SearchSpace.build(load_preset("default"), layers).extremes(
        CostModel.for_model(workload.model, layers, latency_model(str(out), 16)), "latency_ms")
    assert us == pytest.approx((cheapest.latency_us + dearest.latency_us) / 2, rel=1e-3)
    assert main([*command[1:], "--n-trials", "2", "--tracking-uri", "none", "--storage", "none", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "below the cheapest" not in err and "above the dearest" not in err  # a budget that narrows the search

    # shapes alone: no model to price, so the command names where the model and the budget go
    assert main(["kernels", "bench", "--model", "none", "--shapes", "64x64", "--no-progress", "--out", str(tmp_path / "s.json")]) == 0
    assert f"use it with: autoq search --device {tmp_path / 's.json'} --batch 16 --model MODEL --budget LATENCY (e.g. 3ms)" in capsys.readouterr().out
    # the default model (digits-cnn standing in for it, as small) is measured, and not named in the command
    load = builtin.load_workload
    monkeypatch.setattr(builtin, "load_workload", lambda model, **kw: load(model or "digits-cnn", **kw))
    assert main(["kernels", "bench", "--batches", "16", "--no-progress", "--out", str(tmp_path / "d.json")]) == 0
    assert "--model" not in printed_command(capsys.readouterr().out)
