"""A search whose Optuna storage or MLflow store cannot be written any more (a full disk, a place its files cannot
go): a one-line error naming the store, the trials kept and the command that resumes, and a resume that keeps them.

The Optuna storage's disk fills for real SQLite here: ``PRAGMA max_page_count`` caps its database, and SQLite then
fails a write with its own "database or disk is full", as on a full disk."""

from __future__ import annotations

import pytest
import torch
from helpers import page_count, run_main, sqlite_capped
from mlflow.tracking import MlflowClient

import autoq
from autoq.errors import AutoqError


def _mlp_and_data() -> tuple[torch.nn.Module, list[torch.Tensor]]:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)), [torch.randn(8, 16) for _ in range(2)]


def test_a_full_optuna_storage_stops_the_search_in_words_and_a_resume_keeps_its_trials(tmp_path):
    """It was a traceback of Optuna's "an exception is raised during the commit": neither the full disk nor the trials
    kept, nor how to go on, were said."""
    model, data = _mlp_and_data()
    db = tmp_path / "optuna.db"
    options = dict(budget="6bits", seed_from="none", tracking_uri=None, storage=f"sqlite:///{db}", progress=False)
    autoq.search(model, data, n_trials=1, study_name="first", **options)  # the tables made: what a search adds is its trials
    with sqlite_capped(db, page_count(db) + 3), pytest.raises(AutoqError) as stopped:
        autoq.search(model, data, n_trials=60, study_name="s", **options)
    text = str(stopped.value)
    assert f"the Optuna storage sqlite:///{db} failed a write (OperationalError: database or disk is full)" in text
    assert "continue with the same call with resume=True, study_name='s'" in text and "once its disk has free space again" in text
    kept = int(text.split("stopped after ")[1].split(" finished")[0])
    assert 0 < kept < 60
    again = autoq.search(model, data, n_trials=kept + 2, study_name="s", resume=True, **options)
    assert len(again.points) == kept + 2  # the kept ones, and the two more asked for


def test_an_mlflow_artifact_folder_that_cannot_be_written_stops_the_search_as_the_store_failing(tmp_path, mlflow_uri):
    """A local store's artifacts are files: an ``OSError`` there was "No space left on device" alone, naming neither the
    store nor the trials kept, and left the search's MLflow run RUNNING."""
    model, data = _mlp_and_data()
    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment(client.create_experiment("blocked", artifact_location=(tmp_path / "art").as_uri()))
    (tmp_path / "art").write_text("a file where the runs' artifact folders go")
    options = dict(budget="6bits", n_trials=3, seed_from="none", tracking_uri=mlflow_uri, experiment="blocked",
                   storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="s", progress=False)
    with pytest.raises(AutoqError, match=r"MLflow tracking store .* failed a request \(the run's artifacts could not be written to "
                                         rf"{(tmp_path / 'art').as_uri()}/.*\(Not a directory: .*\); .*continue with the same call with resume=True"
                                         r".*\(once it can be written again\)$"):  # not "once the store answers again": a disk's refusal
        autoq.search(model, data, **options)
    assert experiment.experiment_id
    (tmp_path / "art").unlink()
    result = autoq.search(model, data, resume=True, **options)
    assert len(result.points) == 3
    assert client.get_run(result.parent_run_id).info.status == "FINISHED"


def test_the_command_says_so_in_one_line_with_the_command_that_resumes(tmp_path, capsys):
    db = tmp_path / "optuna.db"
    common = ("--model", "digits-cnn", "--budget", "4.5bits", "--seed-from", "none", "--tracking-uri", "none",
              "--storage", f"sqlite:///{db}", "--no-progress")
    assert run_main("search", *common, "--n-trials", "1", "--study-name", "first", cwd=tmp_path, capsys=capsys)[0] == 0
    with sqlite_capped(db, page_count(db) + 2):
        code, _, err = run_main("search", *common, "--n-trials", "60", "--study-name", "s", cwd=tmp_path, capsys=capsys)
    assert code == 2 and "Traceback" not in err
    assert "autoq: error: the Optuna storage" in err and "(OperationalError: database or disk is full)" in err
    assert f"continue with: autoq search --resume s --tracking-uri none --storage sqlite:///{db}" in err


def test_the_database_reason_is_the_drivers_own_words_beneath_optunas(tmp_path):
    """Optuna's error says "An exception is raised during the commit"; SQLAlchemy's first line may be its autoflush
    advice. The driver's error, a cause or two down, says the disk is full."""
    import optuna

    from autoq.errors import database_failed, database_reason

    db = tmp_path / "o.db"
    storage = f"sqlite:///{db}"
    optuna.create_study(study_name="a", storage=storage)
    with sqlite_capped(db, page_count(db)), pytest.raises(optuna.exceptions.StorageInternalError) as full:
        study = optuna.load_study(study_name="a", storage=storage)
        for i in range(1000):
            study.set_user_attr(f"k{i}", "x" * 1000)
    assert "commit" in str(full.value)
    assert database_reason(full.value) == "OperationalError: database or disk is full" and database_failed(full.value)
    assert not database_failed(ValueError("no database")) and database_reason(ValueError("one\ntwo")) == "one"


def test_a_storage_that_takes_no_write_at_all_still_says_what_was_kept_and_how_to_resume(tmp_path, mlflow_uri):
    """A disk so full that no write goes through: the search's own error (trials kept, the resume command) was replaced
    by the failure of the session's last write to the Optuna storage, as the search ended."""
    model, data = _mlp_and_data()
    db = tmp_path / "optuna.db"
    options = dict(budget="6bits", seed_from="none", tracking_uri=mlflow_uri, storage=f"sqlite:///{db}", progress=False)
    autoq.search(model, data, n_trials=1, study_name="first", **options)
    with sqlite_capped(db, page_count(db) + 2, then_read_only=True), pytest.raises(AutoqError) as stopped:
        autoq.search(model, data, n_trials=60, study_name="s", **options)
    assert "continue with the same call with resume=True, study_name='s'" in str(stopped.value)
