"""The run descriptions a user reads in the MLflow UI: the search's frontier with run ids, and each point's export command."""

from __future__ import annotations

import shlex
from dataclasses import replace
from pathlib import Path

from mlflow.tracking import MlflowClient

import autoq
from autoq.choice import Assignment, LayerChoice
from autoq.cli import main
from autoq.engine.result import Point
from autoq.export import QuantLinear
from autoq.tracking.run_notes import MAX_ROWS, NOTE_TAG, point_note, search_note


def test_a_search_run_lists_its_frontier_and_a_trial_run_exports_itself(mlflow_uri, tmp_path, monkeypatch, capsys):
    (tmp_path / "noop_plugin.py").write_text("# registers nothing; the search says it ran with it\n")
    monkeypatch.chdir(tmp_path)
    result = autoq.search("digits-cnn", budget="3.5bits", n_trials=8, seed=1, tracking_uri=mlflow_uri, progress=False, plugins=["noop_plugin.py"])
    client = MlflowClient(mlflow_uri)
    parent = client.get_run(result.parent_run_id).data
    assert parent.params["plugins"] == str(tmp_path / "noop_plugin.py")  # by absolute path: the commands work from anywhere
    # the UI's User and Source columns: MLflow's own context tags, which create_run does not set by itself
    assert parent.tags["mlflow.user"] and parent.tags["mlflow.source.type"] == "LOCAL"
    assert client.get_run(result.points[0].run_id).data.tags["mlflow.user"] == parent.tags["mlflow.user"]
    note = parent.tags[NOTE_TAG]
    assert f"--plugin {tmp_path / 'noop_plugin.py'} --out quantized" in note
    assert note.startswith(f"**autoq search**: {len(result.frontier)} Pareto points")
    shown = note.split("(filter: `", 1)[1].split("`", 1)[0]  # the filter the note gives is this search's frontier alone
    assert shown == f"tags.pareto = 'true' and tags.mlflow.parentRunId = '{result.parent_run_id}'"
    autoq.search("digits-cnn", budget="3.5bits", n_trials=2, seed=2, tracking_uri=mlflow_uri, progress=False, storage=None)  # a second
    frontier_runs = client.search_runs([client.get_run(result.parent_run_id).info.experiment_id], shown)
    assert {r.info.run_id for r in frontier_runs} == {p.run_id for p in result.frontier}
    rows = [line for line in note.splitlines() if line.startswith("| ") and "`" in line]
    assert [row.split(" | ")[0].strip("| ") for row in rows] == [str(p.trial) for p in result.frontier]
    assert all(f"`{p.run_id}`" in row for p, row in zip(result.frontier, rows))

    off_front = [p for p in result.points if p not in result.frontier]
    assert off_front and all(NOTE_TAG not in client.get_run(p.run_id).data.tags for p in off_front)
    point = result.frontier[-1]
    trial_note = client.get_run(point.run_id).data.tags[NOTE_TAG]
    assert f"quality {point.quality:.4f} at {point.effective_bits:.3f} bits" in trial_note
    command = shlex.split(next(line for line in trial_note.splitlines() if line.startswith("autoq export")))
    assert "--plugin" in command
    assert main(command[1:] + ["--no-progress"]) == 0  # the command as the UI shows it exports that point
    assert "Add `--log-to-run` to log it as an MLflow model of this run" in trial_note
    assert main([*command[1:], "--no-progress", "--log-to-run", "--registered-model-name", "noted"]) == 0  # as it says
    assert MlflowClient(mlflow_uri).get_model_version("noted", "1").run_id == point.run_id
    loaded = autoq.load(tmp_path / "quantized")
    assert sum(isinstance(m, QuantLinear) for m in loaded.modules()) == sum(
        not c.weight.is_half and name in ("6", "8") for name, c in point.assignment.items())


def test_a_long_frontier_is_cut_to_what_an_mlflow_tag_holds():
    one = Assignment((("0", LayerChoice.from_name("int4-ch-asym:rtn-mse")),))
    frontier = [Point(i, one, 0.5 + i / 1000, 2 + i / 100, 10_000 + i, run_id="f" * 32, latency_us=3.0 + i, latency_source="table:X")
                for i in range(MAX_ROWS + 25)]
    note = search_note(frontier, "sqlite:///mlflow.db")
    assert len(note) < 8000  # MLflow's limit on a tag's value
    assert note.count("`ffff") == MAX_ROWS and "25 more in `frontier.csv`" in note
    assert "| latency (table:X) |" in note and "| 3.000 us |" in note
    assert "(quality up, effective bits down, latency down)" in note
    table = [line for line in note.splitlines() if line.startswith("|")]
    assert {line.count("|") for line in table} == {7}  # the separator row too has a cell per column: Markdown draws a table
    estimated = search_note([replace(p, latency_source="estimate:roofline:h100") for p in frontier[:2]], "sqlite:///mlflow.db")
    assert "| latency (ESTIMATE roofline:h100) |" in estimated  # an estimate says so, as every latency output does
    close = search_note([replace(frontier[0], latency_us=16.007), replace(frontier[1], latency_us=16.008), replace(frontier[2], latency_us=3141.6)],
                        "sqlite:///mlflow.db")
    assert "| 16.007 us |" in close and "| 16.008 us |" in close and "| 3.1416 ms |" in close  # as the console tells them apart
    assert "16.007 us (table:X)" in point_note(replace(frontier[0], latency_us=16.007), "sqlite:///mlflow.db")
    assert "latency" not in search_note([frontier[0].__class__(0, one, 0.9, 4.0, 1, run_id="r")], "sqlite:///mlflow.db")
    # the description is read in the MLflow UI, run from anywhere: the relative store named no particular database
    assert f"--tracking-uri sqlite:///{Path.cwd() / 'mlflow.db'}" in note and "sqlite:///mlflow.db" not in note


def test_the_export_command_names_a_store_that_is_the_default_only_through_the_environment(monkeypatch):
    """mlflow.set_tracking_uri (a pipeline's) sets $MLFLOW_TRACKING_URI in its process only: the summary's command left
    --tracking-uri out, and failed in a shell ('no MLflow store at mlflow.db')."""
    from autoq.engine.summary import export_command

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5057")
    assert export_command("abc", "http://127.0.0.1:5057") == "autoq export --run-id abc --tracking-uri http://127.0.0.1:5057 --out quantized"
    assert export_command("abc", "http://127.0.0.1:5057", shell=True) == "autoq export --run-id abc --out quantized"  # the shell's own


def test_a_search_of_a_module_passed_from_python_says_how_to_export_in_python(mlflow_uri, tmp_path, capsys):
    from autoq.engine import SearchResult, format_summary

    """The printed 'autoq export --run-id ...' (in the summary of autoq pareto and in the runs' descriptions) was refused:
    'searched ... given as a module ...; pass the model to export'."""
    import ast

    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    batches = [torch.randn(8, 16, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    result = autoq.search(model, batches, budget="5bits", n_trials=4, seed_from="none", tracking_uri=mlflow_uri, storage=None,
                          progress=False)
    client = MlflowClient(mlflow_uri)
    notes = [client.get_run(result.parent_run_id).data.tags[NOTE_TAG], client.get_run(result.best.run_id).data.tags[NOTE_TAG]]
    assert all("autoq export" not in note and "autoq.export(model, " in note for note in notes)
    assert "Add `log_to_run=True`" in notes[1] and "`registered_model_name=NAME`" in notes[1] and "--log-to-run" not in notes[1]
    # the Python summary too (it printed the command line's, refused), and from_mlflow's
    for summary in (format_summary(result), format_summary(SearchResult.from_mlflow(result.parent_run_id, mlflow_uri))):
        line = next(line for line in summary.splitlines() if "Export the best point:" in line)
        assert "autoq.export(model, " in line and "autoq export" not in line
    assert main(["pareto", result.study_name, "--tracking-uri", mlflow_uri]) == 0
    printed = next(line for line in capsys.readouterr().out.splitlines() if "Export the best point:" in line)
    call = printed.split("Export the best point:", 1)[1].split("   #")[0].strip()
    assert call.startswith("autoq.export(model, ")
    args = ast.parse(call).body[0].value  # run as printed, with the model searched
    run_id, out = (ast.literal_eval(a) for a in args.args[1:])
    tracking = {k.arg: ast.literal_eval(k.value) for k in args.keywords}
    written = autoq.export(model, run_id, tmp_path / out, progress=False, **tracking)
    assert isinstance(autoq.load(written, model=nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))), nn.Module)
