"""Seeding from a sensitivity table: computed only where a seed it shapes would be evaluated."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

import autoq


def test_auto_seeding_skips_the_table_when_every_trial_is_a_uniform_baseline(tmp_path, monkeypatch, capsys, mlflow_uri):
    """digits-cnn at 4.5 bits has 6 uniform baselines: 3 (or 6) trials never reach a seeded mix, so no table is computed
    (on MiniLM the fisher table took 113 of a 3-trial search's 180 s); 8 trials do. The parent run's seed_from param
    says what seeded the search (it said fisher either way). The skip is a note, said without a progress bar too."""
    monkeypatch.setenv("AUTOQ_CACHE_DIR", str(tmp_path / "cache"))
    few = autoq.search("digits-cnn", budget="4.5bits", n_trials=3, tracking_uri=mlflow_uri, storage=None, progress=False)
    assert all(p.uniform for p in few.points)
    # in a Python search's words too: it was told of --seed-from alone
    assert "seed_from='auto' (--seed-from auto) skips the sensitivity table: the 3 trial(s) asked for are all uniform baselines (of 6)" \
        in capsys.readouterr().err
    assert not (tmp_path / "cache" / "sensitivity").exists()
    exact = autoq.search("digits-cnn", budget="4.5bits", n_trials=6, tracking_uri=None, storage=None, progress=False)  # as many
    assert all(p.uniform for p in exact.points) and not (tmp_path / "cache" / "sensitivity").exists()
    assert "the 6 trial(s) asked for are all uniform baselines (of 6)" in capsys.readouterr().err
    more = autoq.search("digits-cnn", budget="4.5bits", n_trials=8, tracking_uri=mlflow_uri, storage=None, progress=False)
    assert list((tmp_path / "cache" / "sensitivity").glob("fisher-*.json"))
    client = MlflowClient(mlflow_uri)
    assert [client.get_run(r.parent_run_id).data.params["seed_from"] for r in (few, more)] == ["none", "fisher"]


def test_a_search_of_many_layers_says_it_solves_its_seeds_before_it_does(tmp_path, monkeypatch, capsys):
    """At 800 layers the table's ILP seeds took 42 to 68 s, after the table's progress bar and before the search's: a
    silent minute. From SEEDS_NOTE_LAYERS layers a line says what runs; below it (digits' 4 layers) none does."""
    from autoq.engine import seeding

    monkeypatch.setenv("AUTOQ_CACHE_DIR", str(tmp_path / "cache"))
    kwargs = dict(budget="4.5bits", n_trials=8, seed_from="fisher", tracking_uri=None, storage=None)
    autoq.search("digits-cnn", **kwargs)
    assert "solving the optuna strategy's seeds" not in capsys.readouterr().err
    monkeypatch.setattr(seeding, "SEEDS_NOTE_LAYERS", 4)
    autoq.search("digits-cnn", **kwargs)
    assert "solving the optuna strategy's seeds on the fisher table (4 layers;" in capsys.readouterr().err


def test_a_strategy_that_reads_no_table_gets_no_word_on_skipping_one(tmp_path, monkeypatch, capsys):
    """--strategy random with --seed-from auto was told the table was skipped as it 'would run data-driven PTQ on 0
    (layer, option) pairs up front (more than 500)': random reads no table. The note stays where optuna skips it."""
    from autoq.engine import seeding

    monkeypatch.setenv("AUTOQ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(seeding, "data_driven_pairs", lambda space: 501)  # a space of many GPTQ/AWQ pairs
    kwargs = dict(budget="4.5bits", n_trials=2, tracking_uri=None, storage=None)
    autoq.search("digits-cnn", strategy="random", **kwargs)
    assert "skips the sensitivity table" not in capsys.readouterr().err
    autoq.search("digits-cnn", progress=False, **kwargs)
    assert "skips the sensitivity table: it would run data-driven PTQ on 501 (layer, option) pairs up front (more than 500)" in capsys.readouterr().err


def test_a_table_file_without_its_ending_is_not_called_an_unknown_metric(tmp_path, monkeypatch):
    """'--seed-from tableplain', a file there, said 'unknown sensitivity metric' and listed the metrics."""
    from autoq.engine.seeding import check_seed_from
    from autoq.errors import AutoqError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tableplain").write_text("{}")
    with pytest.raises(AutoqError, match=r"^--seed-from tableplain: a file, but a table file's name ends in .json or .csv"):
        check_seed_from("tableplain")
    with pytest.raises(AutoqError, match="unknown sensitivity metric 'nofile'"):
        check_seed_from("nofile")
    check_seed_from("kl")


def test_an_unknown_seed_from_says_what_else_it_takes():
    """It listed the metrics alone: 'auto', 'none' and table files, all --seed-from takes, went unsaid."""
    from autoq.engine.seeding import check_seed_from
    from autoq.errors import AutoqError

    with pytest.raises(AutoqError, match=r"^--seed-from hesse: unknown sensitivity metric 'hesse'; choose one of kl, .*; or auto \(the "
                                         r"default\), none \(no seeds\), or a table file \(.json/.csv\)$"):
        check_seed_from("hesse")


@pytest.mark.parametrize("given, read", [("None", "none"), ("NONE", "none"), ("Auto", "auto"), ("fisher", "fisher"), ("T.JSON", "T.JSON")])
def test_the_cli_reads_auto_and_none_in_any_case(given, read):
    """``--storage NONE`` and ``--timeout None`` were taken, ``--seed-from None`` refused as an unknown metric."""
    from autoq.cli import build_parser

    assert build_parser().parse_args(["search", "--seed-from", given]).seed_from == read


def test_a_missing_table_or_a_folder_is_refused_before_the_model_loads(tmp_path, monkeypatch, capsys):
    """It was found missing after the model loaded (minutes for an LLM), and an empty optuna.db stayed; a folder was
    said not to exist."""
    from autoq.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tables").mkdir()
    base = ["search", "--model", "digits-cnn", "--n-trials", "2", "--no-progress", "--tracking-uri", "none", "--storage", "sqlite:///optuna.db"]
    assert main([*base, "--seed-from", "./missing.json"]) == 2
    err = capsys.readouterr().err
    assert "sensitivity table 'missing.json' does not exist" in err and "loading" not in err
    assert main([*base, "--seed-from", "tables/"]) == 2
    err = capsys.readouterr().err
    assert "sensitivity table 'tables' is a folder; pass a table file in it" in err and "loading" not in err
    assert not (tmp_path / "optuna.db").exists()


def test_a_resume_reads_no_table_and_asks_for_none_that_moved(tmp_path, monkeypatch, capsys):
    """The early check of --seed-from FILE refused the resume of a search whose table had moved, which reads none
    (its seeds are stored)."""
    from autoq.cli import main
    from autoq.sensitivity import SensitivityTable

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tables").mkdir()
    base = ["search", "--model", "digits-cnn", "--no-progress", "--tracking-uri", "none", "--storage", "sqlite:///optuna.db"]
    assert main(["sensitivity", "--metric", "sqnr", "--model", "digits-cnn", "--out", "tables", "--tracking-uri", "none", "--no-progress"]) == 0
    table = next((tmp_path / "tables").glob("*.json"))
    assert SensitivityTable.load(table).model_hash  # a real table, read by the first session
    assert main([*base, "--n-trials", "2", "--seed-from", str(table.relative_to(tmp_path)), "--study-name", "s"]) == 0
    (tmp_path / "tables").rename(tmp_path / "moved")
    capsys.readouterr()
    assert main([*base, "--resume", "s", "--n-trials", "3"]) == 0, capsys.readouterr().err


def test_a_resumed_ilp_search_reads_its_table_from_any_folder_and_refuses_one_overwritten_since(tmp_path, monkeypatch, capsys):
    """ilp solves on its table again when resumed: a relative --seed-from was stored as typed (a resume from another
    folder found no file, or another one), and a table overwritten since seeded the new trials from other scores while
    the search's seed_table.json was written over with it."""
    import shutil

    from autoq.cli import main
    from autoq.sensitivity import SensitivityTable

    ran, other = tmp_path / "ran", tmp_path / "other"
    ran.mkdir()
    other.mkdir()
    monkeypatch.setenv("AUTOQ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(ran)
    for metric in ("mse", "sqnr"):
        assert main(["sensitivity", "--metric", metric, "--model", "digits-cnn", "--out", metric, "--tracking-uri", "none", "--no-progress"]) == 0
    mse, sqnr = next((ran / "mse").glob("*.json")), next((ran / "sqnr").glob("*.json"))
    uri, storage = f"sqlite:///{ran / 'mlflow.db'}", f"sqlite:///{ran / 'optuna.db'}"
    base = ["search", "--model", "digits-cnn", "--no-progress", "--tracking-uri", uri, "--storage", storage]
    assert main([*base, "--strategy", "ilp", "--seed-from", "mse/" + mse.name, "--n-trials", "3", "--study-name", "s"]) == 0
    monkeypatch.chdir(other)
    capsys.readouterr()
    assert main([*base, "--resume", "s", "--n-trials", "4"]) == 0, capsys.readouterr().err
    shutil.copy(sqnr, mse)  # the file the search was seeded from, overwritten by another metric's table
    assert main([*base, "--resume", "s", "--n-trials", "5"]) == 2
    assert (f"cannot resume 's': the sensitivity table {mse} is not the one its search was seeded from (other scores: overwritten "
            "since); put that table back there (the search's MLflow run holds it as seed_table.json)") in capsys.readouterr().err
    client = MlflowClient(uri)
    (parent,) = client.search_runs([client.get_experiment_by_name("autoq").experiment_id], "tags.`autoq.kind` = 'search'")
    logged = SensitivityTable.load(client.download_artifacts(parent.info.run_id, "seed_table.json", str(tmp_path)))
    assert logged.metric == "mse"  # what seeded it, not what the file holds now


def test_a_pinned_search_reuses_the_table_autoq_sensitivity_cached(tmp_path, monkeypatch):
    """The table of a pinned search was computed over the pinned space (a pinned layer of one option): another cache key
    than autoq sensitivity's, which has no pins, so the table was computed again."""
    from autoq.cli import main

    monkeypatch.setenv("AUTOQ_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["sensitivity", "--metric", "mse", "--model", "digits-cnn", "--out", str(tmp_path / "t"), "--tracking-uri", "none", "--no-progress"]) == 0
    cached = list((tmp_path / "cache" / "sensitivity").glob("mse-*.json"))
    assert len(cached) == 1
    for pin in ("int8-ch-asym:rtn-mse", "int5-ch-asym:rtn-mse"):  # a choice of the space's, and one outside it
        result = autoq.search("digits-cnn", budget="4.5bits", n_trials=8, seed_from="mse", pins={"^0$": pin}, tracking_uri=None,
                              storage=None, progress=False)
        assert all(p.assignment["0"].name == pin for p in result.points)
    assert list((tmp_path / "cache" / "sensitivity").glob("mse-*.json")) == cached
    # a space whose rules leave out a pinned layer (the pin in place of a rule): its own table, over the pinned space
    space = tmp_path / "partial.yaml"
    space.write_text('name: partial\nrules:\n  - layers: "^(0|2|6)$"\n    bits: [4, 8]\n    granularity: [channel]\n'
                     '    symmetric: false\n    methods: [rtn-mse]\n    half: true\n')
    for seed_from in ("mse", "none"):
        result = autoq.search("digits-cnn", budget="6bits", n_trials=3, space=str(space), seed_from=seed_from, pins={"^8$": "fp16"},
                              tracking_uri=None, storage=None, progress=False)
        assert all(p.assignment["8"].name == "fp16" for p in result.points)


def test_auto_seeds_a_space_of_activation_formats_from_a_forward_metric():
    """fisher scores a8-tensor and a8-token alike (the weight change alone), and the seeds chose between them at random."""
    from torch import nn

    from autoq.engine.seeding import seed_metric
    from autoq.model import find_layers
    from autoq.search_spaces import load_preset
    from autoq.space import SearchSpace

    layers = find_layers(nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8)))
    assert seed_metric("auto", "optuna", SearchSpace.build(load_preset("w8a8"), layers)) == "kl"
    assert seed_metric("auto", "optuna", SearchSpace.build(load_preset("default"), layers)) == "fisher"
    assert seed_metric("fisher", "optuna", SearchSpace.build(load_preset("w8a8"), layers)) == "fisher"  # named: as named
    pinned = SearchSpace.build(load_preset("default"), layers, {"^0$": "int8-ch-sym:rtn-minmax+a8-token"})
    assert seed_metric("auto", "optuna", pinned) == "fisher"  # a pin's activation format leaves no choice to tell apart
