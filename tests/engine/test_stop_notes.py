"""What a stopped search says it kept and how to continue it (``autoq.engine.stop_notes``), without running one."""

from __future__ import annotations

import errno
import shlex

import pytest
from tqdm.auto import tqdm

from autoq.choice import Assignment
from autoq.engine.result import Point
from autoq.engine.runner import SearchConfig
from autoq.engine.stop_notes import above_reference, kept_and_how_to_continue, say, store_stopped


def test_the_resume_command_names_the_stores_a_search_of_a_named_model_needs(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'my db' / 'optuna.db'}"
    config = SearchConfig(tracking_uri=None, storage=storage, n_trials=30)
    said = kept_and_how_to_continue(config, "s 1", storage, tracked=False)
    assert said.startswith(", kept in the Optuna study; continue with: autoq search --resume 's 1' --tracking-uri none --storage ")
    command = said.split("continue with: ", 1)[1].split("   (Python:", 1)[0]
    assert shlex.split(command)[-1] == storage  # quoted: the folder's space is one word
    assert "n_trials=30" in said


def test_a_sqlite_mlflow_store_implies_its_storage_and_ray_keeps_its_workers(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = SearchConfig(tracking_uri=uri, storage="auto", backend="ray", workers=3)
    said = kept_and_how_to_continue(config, "s", config.resolved_storage(), tracked=True)
    assert "kept in the Optuna study and MLflow" in said
    assert f"autoq search --resume s --tracking-uri {uri} --backend ray --workers 3" in said and "--storage" not in said.split("(Python")[0]
    assert "storage='sqlite:///" in said  # the Python call names the database 'auto' found


def test_without_storage_or_for_a_module_from_python() -> None:
    config = SearchConfig(tracking_uri=None, storage=None)
    assert kept_and_how_to_continue(config, "s", None, tracked=False) == "; nothing keeps them (--storage none, --tracking-uri none)"
    assert "with --storage none it cannot be resumed" in kept_and_how_to_continue(config, "s", None, tracked=True)
    by_module = kept_and_how_to_continue(SearchConfig(tracking_uri=None, storage="sqlite:///x.db"), "s", "sqlite:///x.db", False, by_name=False)
    assert "autoq search" not in by_module and by_module.endswith("(and the same model and data)")


def _points(*qualities: float) -> list[Point]:
    return [Point(i, Assignment({}), q, 4.0, 100) for i, q in enumerate(qualities)]


def test_above_reference_warns_only_when_most_points_beat_the_unquantized_model() -> None:
    assert above_reference(0.5, _points(0.6, 0.7, 0.4)) is not None
    assert "2 of 3 quantized points score above" in above_reference(0.5, _points(0.6, 0.7, 0.4))
    assert above_reference(0.5, _points(0.6, 0.4, 0.3)) is None
    assert above_reference(0.5, _points(0.6, 0.7)) is None  # too few to say
    assert above_reference(float("nan"), _points(0.6, 0.7, 0.8)) is None
    assert above_reference(1.0, _points(1.0, 1.0, 1.0)) is None  # equal is not above
    assert above_reference(0.5, _points(0.6, 0.7, 0.4, 0.3)) is None  # half is not most
    assert above_reference(1e12, _points(1e12 + 1, 1e12 + 1, 1e12 + 1)) is None  # within float noise of a large reference
    assert "(0.5; median 0.6)" in above_reference(0.5, _points(0.6, 0.7, 0.4))


def _failed(text: str, cause: BaseException | None = None) -> Exception:
    exc = RuntimeError(text)
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(("exc", "when"), [
    (_failed("cannot write", OSError(errno.ENOSPC, "No space left on device")), "once its disk has free space again"),
    (_failed("(sqlite3.OperationalError) database or disk is full"), "once its disk has free space again"),
    (_failed("cannot write", OSError(errno.EACCES, "Permission denied")), "once it can be written again"),
    (_failed("(sqlite3.OperationalError) attempt to write a readonly database"), "once it can be written again"),
    (_failed("Connection refused"), "once the store answers again"),  # a server: only it can answer again
], ids=["no-space", "sqlite-full", "os-error", "sqlite-readonly", "server-down"])
def test_a_search_its_tracking_store_stopped_says_when_a_resume_can_go_on(exc, when) -> None:
    config = SearchConfig(tracking_uri="sqlite:///mlflow.db", storage="sqlite:///optuna.db")
    said = str(store_stopped(config, exc, "the search stopped", "s", "sqlite:///optuna.db", by_name=True))
    assert said.endswith(f" ({when})") and "autoq search --resume s" in said


def test_the_resume_command_names_a_storage_not_beside_the_mlflow_store_and_the_stores_absolute_path(tmp_path, monkeypatch) -> None:
    """A storage of its own is named even beside a SQLite MLflow store; a relative store is named absolute, so that
    the command works from any folder; the Ray options set are carried."""
    monkeypatch.chdir(tmp_path)
    config = SearchConfig(tracking_uri="sqlite:///mlflow.db", storage="sqlite:///other.db", backend="ray", workers=2, cpus_per_trial=2)
    command = kept_and_how_to_continue(config, "s", "sqlite:///other.db", tracked=True).split("continue with: ", 1)[1].split("   (Python:")[0]
    assert shlex.split(command) == ["autoq", "search", "--resume", "s", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                                    "--storage", "sqlite:///other.db", "--backend", "ray", "--workers", "2", "--cpus-per-trial", "2.0"]


def test_a_hidden_password_of_the_tracking_uri_is_said() -> None:
    config = SearchConfig(tracking_uri="postgresql://me:secret@db/mlflow", storage="sqlite:///optuna.db")
    said = kept_and_how_to_continue(config, "s", "sqlite:///optuna.db", tracked=True)
    assert "secret" not in said and said.endswith(" (the tracking URI's password is hidden: put yours in place of ***)")


def test_a_note_without_a_progress_bar_goes_to_the_autoq_logger(caplog) -> None:
    """progress=False has no bar to write above: the note is the autoq logger's, as a batch job's log and a pipeline read it."""
    with caplog.at_level("INFO", logger="autoq"):
        say(tqdm(disable=True), "stopping after this trial")
    assert [r.getMessage() for r in caplog.records] == ["stopping after this trial"]
