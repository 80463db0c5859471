"""A search against a real MLflow tracking server (``mlflow server``, artifacts proxied), as a team runs one: what the
summary and the runs' descriptions say, and a server that goes away mid-search."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from mlflow.tracking import MlflowClient

SECRET = "s3cret-pw"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``mlflow server`` on a SQLite store and an artifact folder under ``folder``, started and stopped at will."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port, self.proc = folder, _free_port(), None
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                   "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}", "--artifacts-destination", str(self.folder / "artifacts")]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=(self.folder / "server.log").open("a"), start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.uri}/health", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            assert self.proc.poll() is None, (self.folder / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        raise AssertionError(f"mlflow server did not answer in 120 s: {(self.folder / 'server.log').read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server and its worker processes
            self.proc.wait(timeout=60)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "server")
    server.folder.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _autoq(*args: str, cwd: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "autoq", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore", **env})


def test_a_search_on_a_server_links_its_page_and_keeps_the_password_out_of_the_runs(server: Server, tmp_path: Path):
    """The summary said 'mlflow ui --backend-store-uri http://...', which fails on a server's URI; MLflow printed two
    'View run' links for every trial; and a password in the URI was written into every run's description."""
    uri = server.uri.replace("http://", f"http://alice:{SECRET}@")  # a server without auth takes and ignores it
    user = tmp_path / "user"
    user.mkdir()
    proc = _autoq("search", "--model", "digits-cnn", "--n-trials", "6", "--seed-from", "none", "--study-name", "team", "--no-progress",
                  "--tracking-uri", uri, cwd=user)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "View run" not in out and "View experiment" not in out
    assert SECRET not in out and "alice" not in out  # in a URL, credentials override MLflow's variables: '***' would fail
    assert f"in {server.uri} (the tracking URI's user and password are left out: set MLFLOW_TRACKING_USERNAME and" in out
    client = MlflowClient(server.uri)
    parent = client.search_runs([client.get_experiment_by_name("autoq").experiment_id], "tags.`autoq.study` = 'team'")[0]
    assert f"Open it:  {server.uri}/#/runs/{parent.info.run_id}   (in a browser)" in out
    assert requests.get(f"{server.uri}/ajax-api/2.0/mlflow/runs/get", params={"run_id": parent.info.run_id}, timeout=10).ok
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    notes = [run.data.tags.get("mlflow.note.content", "") for run in [parent, *children]]
    assert sum("autoq export --run-id" in note and f"--tracking-uri {server.uri} " in note for note in notes) >= 2
    assert not any(SECRET in note or "alice" in note for note in notes)


def test_a_server_that_goes_away_mid_search_ends_it_with_the_command_that_resumes_it(server: Server, tmp_path: Path):
    """It was minutes of MLflow's retries for each of three calls, Ctrl-C held meanwhile, then a traceback that did not
    say the finished trials were kept; the resume command it now prints names the storage (here optuna.db of the folder
    the search ran in: none is implied beside a server), so it works from another folder once the server is back."""
    ran, other = tmp_path / "ran", tmp_path / "other"
    ran.mkdir()
    other.mkdir()
    proc = _autoq("search", "--model", "digits-cnn", "--n-trials", "400", "--seed-from", "none", "--study-name", "gone", "--no-progress",
                  "--tracking-uri", server.uri, cwd=ran, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="10")
    client = MlflowClient(server.uri)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        experiment = client.get_experiment_by_name("autoq")
        if experiment is not None and len(client.search_runs([experiment.experiment_id], "tags.`autoq.trial` != ''")) >= 3:
            break
        time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()[1]
    server.stop()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "Traceback" not in err, err
    line = next(line for line in err.splitlines() if line.startswith("autoq: error:"))
    assert f"MLflow tracking store {server.uri} failed a request" in line
    assert "the search stopped after" in line and "finished trial(s), kept in the Optuna study and MLflow" in line
    command = line.split("continue with: ", 1)[1].split("   (Python")[0]
    assert f"--storage sqlite:///{ran.resolve() / 'optuna.db'}" in command
    server.start()
    resumed = subprocess.run([sys.executable, "-m", "autoq", *shlex.split(command)[1:], "--n-trials", "8", "--no-progress"], cwd=other,
                             capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming 'gone'" in resumed.stderr and "Best within budget" in resumed.stdout
    assert not (other / "optuna.db").exists()
