"""A search against a real MLflow tracking server (``mlflow server``, artifacts proxied), as a team runs one: what the
summary and the runs' descriptions say, a server that goes away mid-search, and one that fails a chosen request (a proxy
in front of it) before the first trial or while the frontier is written."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import torch
from mlflow.tracking import MlflowClient

import autoq

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
        # without MLflow's job runner (GenAI jobs, which autoq never asks for): seven Huey consumer processes a start
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=(self.folder / "server.log").open("a"), start_new_session=True,
                                     env=env)
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


def _serving(folder: Path, template: Path) -> Iterator[Server]:
    server = Server(folder)
    server.folder.mkdir()
    shutil.copy(template, folder / "mlflow.db")  # migrated already: seconds of each start saved
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(tmp_path: Path, _mlflow_template: Path) -> Iterator[Server]:
    """A server of the test's own (it is stopped and started again)."""
    yield from _serving(tmp_path / "server", _mlflow_template)


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory, _mlflow_template: Path) -> Iterator[Server]:
    """One server for the module's tests that leave it running, each on its own study: a start is ~12 s of imports."""
    yield from _serving(tmp_path_factory.mktemp("shared") / "server", _mlflow_template)


class Gate:
    """An HTTP proxy in front of a server that answers 503 to every request from the first one ``trigger(path, body)``
    matches (a server gone behind its proxy), until ``failing`` is set back to False: one failure at a chosen write."""

    def __init__(self, backend: str, trigger: Callable[[str, bytes], bool]) -> None:
        self.backend, self.failing = backend, False
        self.trigger: Callable[[str, bytes], bool] | None = trigger
        gate = self

        class Relay(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if gate.trigger is not None and gate.trigger(self.path, body):
                    gate.failing, gate.trigger = True, None
                if gate.failing:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
                answer = requests.request(self.command, gate.backend + self.path, headers=headers, data=body, timeout=60)
                self.send_response(answer.status_code)
                for k, v in answer.headers.items():
                    if k.lower() not in ("content-length", "content-encoding", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = relay

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Relay)
        self.uri = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _autoq(*args: str, cwd: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "autoq", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore", **env})


def test_a_search_on_a_server_links_its_page_keeps_the_password_out_and_exports_there(shared_server: Server, tmp_path: Path):
    """The summary said 'mlflow ui --backend-store-uri http://...', which fails on a server's URI; MLflow printed two
    'View run' links for every trial; and a password in the URI was written into every run's description. Then the
    best point is exported, logged and registered on the server (artifacts through its proxy) and loaded elsewhere."""
    server = shared_server
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
    # nor in the Optuna study, whose attributes every reader of the storage sees (optuna-dashboard): it kept the URL whole
    assert SECRET.encode() not in (user / "optuna.db").read_bytes()
    proc = _autoq("search", "--resume", "team", "--n-trials", "7", "--no-progress", cwd=user)  # the stored store, without them
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert len(client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")) == 7

    proc = _autoq("export", "--run-id", parent.info.run_id, "--tracking-uri", server.uri, "--out", "best", "--log-to-run",
                  "--registered-model-name", "team-w4", "--no-progress", cwd=user)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "Registered as models:/team-w4/1 in the Model Registry." in out
    [logged] = client.search_logged_models(experiment_ids=[parent.info.experiment_id])
    assert json.loads(logged.tags["mlflow.modelVersions"]) == [{"name": "team-w4", "version": 1}]  # the server's, not twice
    assert logged.source_run_id == parent.info.run_id and logged.artifact_location.startswith("mlflow-artifacts:/")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    expected = autoq.load(user / "best")(x)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(elsewhere)
        assert torch.equal(autoq.load("models:/team-w4/1", tracking_uri=server.uri)(x), expected)
        assert torch.equal(autoq.load(f"runs:/{parent.info.run_id}/quantized_model", tracking_uri=server.uri)(x), expected)

    # the server's artifacts gone: MLflow's download error with a traceback, it was; now one line that says where to look
    (server.folder / "artifacts").rename(server.folder / "artifacts.away")
    try:
        with pytest.raises(autoq.AutoqError, match=r"has no artifact assignment.json \(looked for mlflow-artifacts:/.*; every such run "
                                                   "logs it: check that the tracking server serves its artifacts"):
            autoq.SearchResult.from_mlflow(parent.info.run_id, server.uri)
    finally:
        (server.folder / "artifacts.away").rename(server.folder / "artifacts")


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


@pytest.mark.parametrize(("trigger", "said"), [
    # the parent run's creation: the server went away while the seeds were computed (minutes on a large model)
    (lambda path, body: path.endswith("/runs/create"), "the search stopped before this session's first trial, kept in"),
    # the first frontier tag: the server went away after the last trial
    (lambda path, body: path.endswith("/runs/set-tag") and b'"pareto"' in body, "the search's MLflow run is left unfinished after 4 finished trial(s), kept in"),
], ids=["set-up", "frontier"])
def test_a_store_failing_before_the_first_trial_or_at_the_frontier_says_how_to_go_on(shared_server: Server, tmp_path: Path, trigger, said):
    """Both were MLflow's traceback after its retries, which said nothing of the search's study or how to go on."""
    server, study = shared_server, tmp_path.name  # a study of its own on the module's server
    gate = Gate(server.uri, trigger)
    try:
        proc = _autoq("search", "--model", "digits-cnn", "--n-trials", "4", "--seed-from", "none", "--study-name", study, "--no-progress",
                      "--tracking-uri", gate.uri, cwd=tmp_path, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="10")
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 2 and "Traceback" not in err, err
        line = next(line for line in err.splitlines() if line.startswith("autoq: error:"))
        assert f"MLflow tracking store {gate.uri} failed a request (" in line and said in line, line
        command = line.split("continue with: ", 1)[1].split("   (Python")[0]
        gate.failing = False  # the server is back
        resumed = subprocess.run([sys.executable, "-m", "autoq", *shlex.split(command)[1:], "--no-progress"], cwd=tmp_path, capture_output=True,
                                 text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        assert resumed.returncode == 0, resumed.stderr
        assert "Best within budget" in resumed.stdout
    finally:
        gate.close()
    client = MlflowClient(server.uri)
    (parent,) = client.search_runs([client.get_experiment_by_name("autoq").experiment_id], f"tags.`autoq.study` = '{study}'")
    assert parent.info.status == "FINISHED" and "frontier.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 4 and {c.data.tags.get("pareto") for c in children} <= {"true", "false"} and any(c.data.tags.get("pareto") == "true" for c in children)
