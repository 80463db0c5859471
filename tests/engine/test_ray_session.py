"""The Ray a search runs on: a cluster it cannot join or use is refused before anything is stored, and signals.

These start and stop Ray themselves (tests/engine/test_ray_backend.py shares one the caller started).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

import autoq
from autoq.builtin import load_workload
from autoq.errors import AutoqError, AutoqWarning

pytestmark = pytest.mark.slow

ray = pytest.importorskip("ray")


@pytest.fixture(autouse=True)
def no_ray_running():
    assert not ray.is_initialized(), "another test left Ray running"
    yield
    ray.shutdown()


def _stores(tmp_path):
    return dict(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", storage=f"sqlite:///{tmp_path / 'optuna.db'}", progress=False)


def test_an_unreachable_cluster_is_refused_at_once_and_before_any_store_is_written(tmp_path):
    """An unreachable --address hung for minutes; 'auto' with no cluster gave a ConnectionError traceback after the
    MLflow run and the Optuna study were made."""
    with pytest.raises(AutoqError, match=r"cannot reach the Ray cluster at --address '127.0.0.1:1' \(.*refused"):
        autoq.search("digits-cnn", budget="4.5bits", n_trials=2, backend="ray", address="127.0.0.1:1", **_stores(tmp_path))
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "optuna.db").exists()


@pytest.mark.parametrize("address, message", [
    ("localhost", r"--address 'localhost' is not a Ray address: give HOST:PORT of the head node"),
    ("127.0.0.1:abc", r"--address '127.0.0.1:abc' is not a Ray address"),
    ("http", r"--address '127.0.0.1:\d+' answers HTTP, which no Ray cluster's GCS or Ray Client port does"),
])
def test_an_address_without_a_port_or_an_http_one_is_refused_at_once(address, message, tmp_path):
    """No port: ValueError's traceback; the dashboard's (an HTTP) port: ray.init retried for over eight minutes."""
    import http.server
    import threading

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        if address == "http":
            address = f"127.0.0.1:{server.server_address[1]}"
        with pytest.raises(AutoqError, match=message):
            autoq.search("digits-cnn", budget="4.5bits", n_trials=2, backend="ray", address=address, **_stores(tmp_path))
        assert not (tmp_path / "optuna.db").exists()
    finally:
        server.shutdown()


def test_ray_address_in_the_environment_is_joined_as_ray_tools_do(tmp_path, monkeypatch):
    """With RAY_ADDRESS set (as 'ray job submit' sets it) every ray search crashed: ray.init joined it and refused the
    num_cpus autoq passes to a local Ray. It is the cluster to join, and a bad one is named as the environment's."""
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    with pytest.raises(AutoqError, match=r"cannot reach the Ray cluster at RAY_ADDRESS='127.0.0.1:1' \(the environment\).*unset RAY_ADDRESS"):
        autoq.search("digits-cnn", budget="4.5bits", n_trials=2, backend="ray", **_stores(tmp_path))
    assert not (tmp_path / "optuna.db").exists()
    monkeypatch.setenv("RAY_ADDRESS", "")  # empty: a local Ray, as with none
    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=2, backend="ray", seed_from="none", **_stores(tmp_path))
    assert len(result.points) == 2 and not ray.is_initialized()


def test_a_failed_join_is_one_clear_error(tmp_path, monkeypatch):
    def no_cluster(*args, **kwargs):
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to.")

    monkeypatch.setattr(ray, "init", no_cluster)
    with pytest.raises(AutoqError, match=r"cannot join a Ray cluster at --address 'auto' \(Could not find any running Ray instance"):
        autoq.search("digits-cnn", budget="4.5bits", n_trials=2, backend="ray", address="auto", **_stores(tmp_path))
    assert not (tmp_path / "optuna.db").exists()


def test_a_trial_no_node_can_run_is_refused_and_a_callers_ray_stays_up(tmp_path):
    """cpus_per_trial above every node's CPUs: the trial waited forever, past the search's own timeout."""
    ray.init(num_cpus=1, include_dashboard=False, object_store_memory=128 * 1024**2, log_to_driver=False)
    with pytest.raises(AutoqError, match=r"a trial needs 2 CPU\(s\) and 0 GPU\(s\) on one node, and the largest node of this Ray has 1 and 0"):
        autoq.search("digits-cnn", budget="4.5bits", n_trials=2, backend="ray", cpus_per_trial=2, timeout=60, **_stores(tmp_path))
    assert ray.is_initialized()


def test_a_search_that_starts_ray_leaves_the_callers_signal_handlers_and_environment(tmp_path, monkeypatch):
    """ray.init installs a SIGTERM handler that exits the process, and Tune one for SIGUSR1: both stayed behind. So did
    its environment variables: PYTHONBREAKPOINT=ray.util.rpdb._driver_set_trace broke the caller's next breakpoint()."""
    def mine(signum, frame):
        pass

    import logging

    from autoq.builtin import load_workload

    load_workload("digits-cnn")  # its imports set variables of their own (scikit-learn's KMP_*), as they would anywhere
    monkeypatch.delenv("PYTHONBREAKPOINT", raising=False)
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "1")  # one the caller set, which Ray changes
    environ = dict(os.environ)
    before = {sig: signal.signal(sig, mine) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    ray_logger = logging.getLogger("ray")
    level = ray_logger.level
    ray_logger.setLevel(logging.DEBUG)  # the caller's: ray.init(logging_level=ERROR) left it at ERROR
    try:
        autoq.search("digits-cnn", budget="4.5bits", n_trials=2, backend="ray", **_stores(tmp_path))
        assert not ray.is_initialized()  # started here, stopped here
        assert all(signal.getsignal(sig) is mine for sig in before)
        assert dict(os.environ) == environ
        assert ray_logger.level == logging.DEBUG
    finally:
        ray_logger.setLevel(level)
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_a_ctrl_c_as_ray_starts_leaves_no_ray_running(tmp_path, monkeypatch):
    """ray.init ran before the block that shuts it down: a Ctrl-C as it returned left the local Ray (its raylet, GCS
    and agents) running, which a notebook's next search then took for the caller's own and left up."""
    real_init = ray.init

    def init_then_interrupt(*args, **kwargs):
        real_init(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(ray, "init", init_then_interrupt)
    load_workload("digits-cnn")  # first in this process, its imports (scikit-learn, torch's inductor) set variables of their own
    environ = dict(os.environ)
    with pytest.raises(KeyboardInterrupt):
        autoq.search("digits-cnn", budget="4.5bits", n_trials=2, backend="ray", **_stores(tmp_path))
    assert not ray.is_initialized()
    assert dict(os.environ) == environ


def test_a_ctrl_c_as_the_local_ray_starts_waits_for_it_then_stops_the_search(tmp_path, monkeypatch):
    """Cut mid-way through ray.init, the node's dashboard and runtime-env agents outlived autoq by a minute or two (their
    SIGTERM blocked: `kill` did nothing), or the KeyboardInterrupt landed in a finalizer, which Python drops, and the
    search ran to its end. The Ctrl-C is now held until ray.init returns; then the search stops and Ray shuts down."""
    import signal

    real_init, started = ray.init, []

    def init_with_ctrl_c(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)  # pressed as Ray starts
        real_init(*args, **kwargs)
        started.append(ray.is_initialized())

    monkeypatch.setattr(ray, "init", init_with_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        autoq.search("digits-cnn", budget="4.5bits", n_trials=2, backend="ray", **_stores(tmp_path))
    assert started == [True] and not ray.is_initialized()


def test_a_sigterm_held_while_the_local_ray_starts_goes_to_the_callers_handler(monkeypatch):
    """ray.init installs a SIGTERM handler of its own (sys.exit); a TERM sent while it ran went to that one: the CLI
    exited with status 15 mid-way, saying nothing, and left Ray's agents running. ray.init now keeps the handler in
    place, and the TERM reaches the caller's once Ray has started (the CLI's: exit 143 after the clean-up)."""
    import signal
    import sys

    import ray._private.utils as ray_utils

    from autoq.engine.ray_session import _ensure_ray

    class Stopped(Exception):
        pass

    def caller(signum, frame):
        raise Stopped

    started = []

    def init_that_takes_term(*args, **kwargs):
        ray_utils.set_sigterm_handler(lambda signum, frame: sys.exit(signum))  # as ray.init does
        signal.raise_signal(signal.SIGTERM)  # sent as Ray starts
        started.append(True)

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init_that_takes_term)
    before = signal.signal(signal.SIGTERM, caller)
    try:
        with pytest.raises(Stopped):
            _ensure_ray(autoq.SearchConfig(backend="ray", tracking_uri=None, storage=None))
        assert started == [True] and signal.getsignal(signal.SIGTERM) is caller  # Ray started whole, then the TERM
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_ctrl_c_inside_ray_init_stops_the_node_it_started(tmp_path, monkeypatch):
    """Cut after ray.init started the local node's processes and before the driver connected, Ray was not yet
    initialized, so it was not shut down: its dashboard and runtime-env agents outlived autoq by a minute."""
    worker = ray._private.worker

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(worker, "connect", interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            autoq.search("digits-cnn", budget="4.5bits", n_trials=2, backend="ray", **_stores(tmp_path))
        assert worker._global_node is None  # the node ray.init started is gone with its processes
    finally:
        ray.shutdown()


@pytest.mark.parametrize("group", [False, True], ids=["to-the-driver", "to-its-process-group"])
def test_sigterm_stops_a_ray_search_as_ctrl_c_does(tmp_path, group):
    """A scheduler's TERM ended a ray search as a crash: exit status 15, the parent run FAILED, no resume hint. Sent to
    the whole process group (timeout, kill -TERM -PGID, SLURM, systemd), it killed the local Ray's GCS, which shares the
    group: the search hung 60 s and died with status 1, the parent run RUNNING, Ray's agents left behind."""
    import optuna

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "autoq", "search", "--model", "digits-cnn", "--n-trials", "400", "--backend", "ray", "--tracking-uri", uri,
           "--no-progress", "--study-name", "termed", "--seed-from", "none"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
                            start_new_session=True)  # a group of its own, as a scheduler's job has
    try:
        deadline, complete = time.time() + 180, 0
        while time.time() < deadline and complete < 3 and proc.poll() is None:
            time.sleep(0.5)
            try:
                study = optuna.load_study(study_name="termed", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
                complete = sum(t.state.name == "COMPLETE" for t in study.trials)
            except Exception:  # the study does not exist yet
                continue
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        left = time.time() + 30
        while time.time() < left and _group_alive(proc.pid):  # Ray stops its processes as the search ends
            time.sleep(0.5)
        assert not _group_alive(proc.pid), "processes of the search's group (Ray's) were left running"
    finally:
        proc.kill()
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err[-3000:]  # 128 + SIGTERM, as shells and schedulers expect
    assert f"continue with: autoq search --resume termed --tracking-uri {uri} --backend ray --workers 1" in err
    client = MlflowClient(uri)
    parents = client.search_runs([client.get_experiment_by_name("autoq").experiment_id], "tags.`autoq.kind` = 'search'")
    assert [p.info.status for p in parents] == ["KILLED"]


def _group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` runs (a zombie counts until reaped)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def test_gpus_held_for_a_model_on_the_cpu_are_warned_about(tmp_path, monkeypatch, capsys):
    """--gpus-per-trial reserved GPUs while every trial evaluated the CPU model, without a word (README's own example)."""
    import torch

    ray.init(num_cpus=1, num_gpus=1, include_dashboard=False, object_store_memory=128 * 1024**2, log_to_driver=False)  # a GPU Ray declares
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.warns(AutoqWarning, match=r"each trial holds 1 GPU\(s\) but evaluates where the model is, on the CPU"):
        result = autoq.search("digits-cnn", budget="4.5bits", n_trials=2, backend="ray", gpus_per_trial=1, seed_from="none", **_stores(tmp_path))
    assert len(result.points) == 2


def test_a_ray_client_address_without_a_port_is_left_to_ray():
    """Ray Client resolves 'ray://HOST' itself; only a plain address needs HOST:PORT."""
    from autoq.engine.ray_session import _check_reachable

    assert _check_reachable("ray://head.example", "--address 'ray://head.example'") is False
    with pytest.raises(AutoqError, match="is not a Ray address"):
        _check_reachable("head.example", "--address 'head.example'")


def test_two_ray_searches_of_one_process_run_one_after_the_other(tmp_path, capsys):
    """An outer Optuna study with n_jobs=2 ran two Ray searches at once: each thread started, or shut down under the
    other, the process's one Ray ('called ray.init twice', a node timed out during startup)."""
    import logging
    import threading

    import torch
    from torch import nn

    results, errors = {}, {}

    def run(i: int) -> None:
        torch.manual_seed(i)
        model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)).eval()
        try:
            results[i] = autoq.search(model, [torch.randn(4, 16) for _ in range(4)], n_trials=3, seed_from="none", backend="ray",
                                      workers=1, tracking_uri=None, storage=None, progress=False, seed=i)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors[i] = exc

    class Said(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    said: list[str] = []
    optuna_logger, handler = logging.getLogger("optuna"), Said()
    optuna_logger.addHandler(handler)
    try:
        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
    finally:
        optuna_logger.removeHandler(handler)
    assert not errors, errors
    # the waiting search was quieted too: it saved the first one's quiet level, which the first put back as it ended
    assert not [line for line in said if "A new study created" in line], said
    assert sorted(results) == [0, 1] and all(len(r.points) == 3 for r in results.values())
    assert "another Ray search of this process is running; this one starts when it ends" in capsys.readouterr().err
    assert not ray.is_initialized()


def test_more_workers_than_cpus_is_said_as_the_local_ray_starts(monkeypatch, caplog):
    """--workers 16 on a 2-CPU machine started a Ray claiming 16 CPUs, 16 model copies on shared CPUs, without a word."""
    import logging
    from types import SimpleNamespace

    from autoq.engine.ray_session import oversubscribed, ray_session

    assert oversubscribed(2, 1.0, 2) is None and oversubscribed(1, 2.0, 2) is None
    assert "(--workers 2 fits this machine)" in oversubscribed(4, 1.0, 2)
    assert "claim 3 CPUs on a machine with 2" in oversubscribed(2, 1.5, 2) and "(--workers 1 fits" in oversubscribed(2, 1.5, 2)
    assert oversubscribed(20, 0.1, 2) is None and "(--workers 20 fits" in oversubscribed(21, 0.1, 2)  # 2 // 0.1 is 19.0 in floats
    assert oversubscribed(3, 0.1, 1) is None and "(--workers 10 fits" in oversubscribed(12, 0.1, 1)
    assert oversubscribed(25, 0.28, 7) is None  # 25 x 0.28 is 7.000000000000001 in floats: 7 CPUs, not more
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cpus = os.cpu_count() or 1
    config = SimpleNamespace(backend="ray", address=None, workers=cpus + 1, cpus_per_trial=1.0, gpus_per_trial=0.0)
    with caplog.at_level(logging.INFO, logger="autoq"), ray_session(config):
        assert ray.cluster_resources()["CPU"] == cpus + 1  # as the README says: sized for the workers
    assert f"--workers {cpus + 1} x --cpus-per-trial 1 claim {cpus + 1} CPUs on a machine with {cpus}" in caplog.text


def test_while_tune_runs_a_stop_signal_the_caller_handles_or_ignores_stays_its_own():
    """A script's own SIGHUP handler (one that reopens its log) was replaced while Tune ran, and the search stopped on
    the signal the script meant to handle; an ignored one (nohup) stays ignored, and autoq's own (or none) stops Tune."""
    import os
    import signal

    from autoq.engine.ray_session import term_stops_tune
    from autoq.errors import Terminated
    from autoq.interrupts import raise_terminated

    got: list[int] = []
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        signal.signal(signal.SIGHUP, lambda signum, frame: got.append(signum))
        signal.signal(signal.SIGTERM, raise_terminated)
        with term_stops_tune() as received:
            os.kill(os.getpid(), signal.SIGHUP)
            assert got == [signal.SIGHUP] and received == []  # the caller's handler ran, Tune went on
            with pytest.raises(Terminated):  # autoq's: Tune's handler is not in place here, so it is raised
                os.kill(os.getpid(), signal.SIGTERM)
            assert received == [signal.SIGTERM]
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        with term_stops_tune() as received:
            os.kill(os.getpid(), signal.SIGHUP)
        assert received == [] and signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_a_blank_ray_address_in_the_environment_is_a_local_ray(monkeypatch):
    """RAY_ADDRESS left blank (a job script's 'export RAY_ADDRESS=" "') names no cluster: a local Ray, as when unset."""
    from types import SimpleNamespace

    from autoq.engine.ray_session import cluster_address

    monkeypatch.setenv("RAY_ADDRESS", " \t")
    assert cluster_address(SimpleNamespace(address=None)) is None
    monkeypatch.setenv("RAY_ADDRESS", " 10.0.0.5:6379 ")
    assert cluster_address(SimpleNamespace(address=None)) == "10.0.0.5:6379"
