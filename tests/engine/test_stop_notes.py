"""What a stopped search says it kept and how to continue it (``autoq.engine.stop_notes``), without running one."""

from __future__ import annotations

import shlex

from autoq.choice import Assignment
from autoq.engine.result import Point
from autoq.engine.runner import SearchConfig
from autoq.engine.stop_notes import above_reference, kept_and_how_to_continue


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
