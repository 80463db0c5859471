"""Shared fixtures: a real SQLite MLflow store per test, migrated once per session and copied."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from autoq.checkout import unshadow_installed_packages

unshadow_installed_packages()  # `python -m pytest` puts the checkout first on sys.path: before any test module imports transformers


@pytest.fixture(scope="session")
def _mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow-template")
    db = folder / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()  # runs the schema migration once
    return db


@pytest.fixture
def mlflow_uri(tmp_path: Path, _mlflow_template: Path) -> str:
    """A fresh, already-migrated SQLite MLflow store in this test's temporary directory."""
    db = tmp_path / "mlflow.db"
    shutil.copy(_mlflow_template, db)
    return f"sqlite:///{db}"


@pytest.fixture(scope="session", autouse=True)
def _worker_threads() -> Iterator[None]:
    """Under pytest-xdist (pyproject's `-n logical`: a worker per CPU) each worker gets its share of the cores for
    torch's thread pool, and the `autoq` processes tests start inherit it (OMP_NUM_THREADS): two workers each spinning a
    pool as wide as the machine thrashed it (the MiniLM end-to-end test ran 3.7 times slower beside another worker)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers <= 1:
        yield
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", str(threads))
        yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="session", autouse=True)
def _ctrl_c_pressable() -> Iterator[None]:
    """The tests press Ctrl-C as a terminal does (``signal.raise_signal(SIGINT)``, or SIGINT sent to an ``autoq`` they
    started). A shell's background job (``pytest -n 0 &``, nohup) starts with SIGINT ignored, which Python keeps and its
    children inherit: each of those tests failed there, nothing pressed. Python's own handler, as in a terminal."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.fixture(scope="session", autouse=True)
def _isolated_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """`_isolated_cache` for the whole session too: a module-scoped fixture (a search shared by a module's tests) is set up
    before any test's function-scoped fixtures, so it trained and cached digits-cnn in the user's ~/.cache/autoq, and an
    export test then found other weights than the session cache's (trained there on one thread by an earlier module).
    The tests run in a folder of their own: a store named relative (MLflow's ./mlruns for an experiment made without a
    location, autoq's default sqlite:///mlflow.db) was written into the checkout."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path_factory.mktemp("cwd"))
        patch.setenv("AUTOQ_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "autoq-cache"))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
        patch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
        yield


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Built-in models cache into one session folder, never the user's ~/.cache; and no MLflow server or experiment
    named in the environment (autoq's defaults follow MLflow's variables) reaches a test."""
    monkeypatch.setenv("AUTOQ_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "autoq-cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    # mlflow.set_experiment sets it for the rest of the process (a test's pipeline): read in the store a command names,
    # an id left by one test named another test's experiment
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one torch thread; on a busy machine a thread pool crawls on them."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
