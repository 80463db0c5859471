"""``autoq kernels bench`` (autoq/cli/kernels.py): argument checks and the refusal without a GPU."""

from __future__ import annotations

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


def test_merge_into_a_table_of_another_timing_is_refused_before_measuring(tmp_path, monkeypatch, capsys):
    """The refusal came after the measurement, which was then thrown away: on a 15-minute GPU lease, the session's."""
    import shutil

    from autoq.kernels import bench, capability
    from autoq.latency.resolve import TABLES_DIR

    measured = []
    monkeypatch.setattr(capability, "require_gpu", lambda what: None)  # stand-ins for a GPU on this machine
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    monkeypatch.setattr(bench, "measure", lambda *a, **k: measured.append(1))
    old = shutil.copy(TABLES_DIR / "h200.json", tmp_path / "old.json")  # measured on the H200 by flush timing
    args = ["kernels", "bench", "--model", "none", "--shapes", "384x384", "--formats", "int4-ch-asym", "--merge", "--out", str(old)]
    assert main([*args, "--timing", "rotate"]) == 2
    assert "--merge: " in capsys.readouterr().err and measured == []
    (tmp_path / "old.json").write_text("{not json")
    assert main([*args, "--timing", "flush"]) == 2 and measured == []


def test_an_output_that_cannot_be_written_or_an_empty_measurement_is_refused_without_a_table(tmp_path, monkeypatch, capsys):
    """--out failed only after measure(), with the GPU time spent; a measurement cut to nothing wrote an empty table."""
    from autoq.kernels import bench, capability
    from autoq.kernels.table import LatencyTable

    measured = []
    monkeypatch.setattr(capability, "require_gpu", lambda what: None)  # stand-ins for a GPU on this machine
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    monkeypatch.setattr(bench, "measure", lambda *a, **k: measured.append(1) or LatencyTable("NVIDIA H200", ()))
    blocker = tmp_path / "file"
    blocker.write_text("")
    args = ["kernels", "bench", "--model", "none", "--shapes", "384x384", "--formats", "int4-ch-asym"]
    assert main([*args, "--out", str(blocker / "t.json")]) == 2
    assert "cannot make the latency table folder" in capsys.readouterr().err and measured == []
    assert main([*args, "--max-seconds", "1", "--out", str(tmp_path / "t.json")]) == 2
    assert "nothing was measured within --max-seconds 1 (compiling the kernels took it)" in capsys.readouterr().err
    assert measured == [1] and not (tmp_path / "t.json").exists()


def test_the_printed_search_command_runs_on_the_benched_model_at_a_measured_batch(tmp_path, monkeypatch, capsys):
    """It printed 'autoq search --budget 3ms --device PATH' for every table: unquoted (a path with a space split in
    two), without --model (the default model priced by digits-cnn's shapes) and without --batch (a table of batch 16
    refused at the search's batch 1), at a budget above digits-cnn's whole range. Its counts were this run's shapes
    beside the merged table's rows."""
    import dataclasses
    import shlex

    from autoq.kernels import bench, capability
    from autoq.kernels.table import LatencyTable
    from autoq.latency.resolve import TABLES_DIR

    h200 = LatencyTable.load(TABLES_DIR / "h200.json")  # real measurements, at batch 16 alone, as if benched here
    monkeypatch.setattr(capability, "require_gpu", lambda what: None)  # stand-ins for a GPU on this machine
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    monkeypatch.setattr(bench, "measure", lambda config, progress: dataclasses.replace(h200, rows=h200.select(batch=16)))
    out = tmp_path / "my tables" / "t.json"
    assert main(["kernels", "bench", "--model", "digits-cnn", "--batches", "16", "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = LatencyTable.load(out)
    assert f"{len(table.rows)} measurements of {len(table.shapes)} shapes x 1 batches written to {out}" in printed
    command = shlex.split(printed.split("use it with: ", 1)[1].splitlines()[0])
    assert command[:2] == ["autoq", "search"] and command[command.index("--device") + 1] == str(out)
    assert (command[command.index("--model") + 1], command[command.index("--batch") + 1]) == ("digits-cnn", "16")
    assert main([*command[1:], "--n-trials", "2", "--tracking-uri", "none", "--storage", "none", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "below the cheapest" not in err and "above the dearest" not in err  # a budget that narrows the search

    # shapes alone: no model to price, so the command names where the model and the budget go
    assert main(["kernels", "bench", "--model", "none", "--shapes", "64x64", "--no-progress", "--out", str(tmp_path / "s.json")]) == 0
    assert f"use it with: autoq search --device {tmp_path / 's.json'} --batch 16 --model MODEL --budget LATENCY (e.g. 3ms)" in capsys.readouterr().out
