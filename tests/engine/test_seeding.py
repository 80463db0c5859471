"""Seeding from a sensitivity table: computed only where a seed it shapes would be evaluated."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

import autoq


def test_auto_seeding_skips_the_table_when_every_trial_is_a_uniform_baseline(tmp_path, monkeypatch, capsys, mlflow_uri):
    """digits-cnn at 4.5 bits has 6 uniform baselines: 3 trials never reach a seeded mix, so no table is computed
    (on MiniLM the fisher table took 113 of a 3-trial search's 180 s); 8 trials do. The parent run's seed_from param
    says what seeded the search (it said fisher either way)."""
    monkeypatch.setenv("AUTOQ_CACHE_DIR", str(tmp_path / "cache"))
    few = autoq.search("digits-cnn", budget="4.5bits", n_trials=3, tracking_uri=mlflow_uri, storage=None)
    assert all(p.uniform for p in few.points)
    assert "skips the sensitivity table: the 3 trial(s) asked for are all uniform baselines (of 6)" in capsys.readouterr().err
    assert not (tmp_path / "cache" / "sensitivity").exists()
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
    autoq.search("digits-cnn", **kwargs)
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
