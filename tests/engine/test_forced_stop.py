"""Ctrl-C twice on a search that stops while its tracking server hangs: the first stops the search, the second its last
writes to the server (MLflow's retries take minutes); the MLflow run is said to be unfinished and a resume finishes it."""

from __future__ import annotations

import os
import signal
import threading
import time

from mlflow.tracking import MlflowClient

from autoq.cli import main
from autoq.tracking.mlflow_logger import MlflowTracker


def test_a_second_ctrl_c_while_the_frontier_goes_to_a_hung_server_stops_and_says_the_run_is_unfinished(
        tmp_path, mlflow_uri, monkeypatch, capsys, one_thread):
    original_init, original_log_artifact = MlflowTracker.__init__, MlflowClient.log_artifact
    hung, woke = threading.Event(), threading.Event()

    def as_a_server(self, *args, **kwargs):  # a tracking server's writes may be forced; a local file's never are
        original_init(self, *args, **kwargs)
        self.remote = True

    def hang(self, run_id, local_path, *args, **kwargs):  # the frontier's files, as to a server that went away
        if "frontier" in str(local_path) and not hung.is_set():
            hung.set()
            time.sleep(120)
            woke.set()
        return original_log_artifact(self, run_id, local_path, *args, **kwargs)

    def press_twice():
        hung.wait(300)
        for _ in range(2):
            time.sleep(0.3)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(MlflowTracker, "__init__", as_a_server)
    monkeypatch.setattr(MlflowClient, "log_artifact", hang)
    threading.Thread(target=press_twice, daemon=True).start()
    args = ["search", "--model", "digits-cnn", "--n-trials", "3", "--seed-from", "none", "--study-name", "hung", "--no-progress",
            "--tracking-uri", mlflow_uri, "--storage", f"sqlite:///{tmp_path / 'optuna.db'}"]
    assert main(args) == 130
    assert hung.is_set() and not woke.is_set()  # it returned while the write still hung, not after its 120 s
    err = capsys.readouterr().err
    # it was "interrupted after the last trial; the search and its results were stored in full", and exit status 0
    assert "stopped while the search's MLflow run was written, which is left unfinished, after 3 finished trial(s)" in err
    assert "autoq search --resume hung" in err
    client = MlflowClient(mlflow_uri)
    parent = client.search_runs([client.get_experiment_by_name("autoq").experiment_id], "tags.`autoq.study` = 'hung'")[0]
    assert parent.info.status == "RUNNING" and not any(a.path == "frontier.csv" for a in client.list_artifacts(parent.info.run_id))
    monkeypatch.setattr(MlflowClient, "log_artifact", original_log_artifact)
    assert main(["search", "--resume", "hung", "--tracking-uri", mlflow_uri, "--storage", f"sqlite:///{tmp_path / 'optuna.db'}",
                 "--no-progress"]) == 0
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    assert any(a.path == "frontier.csv" for a in client.list_artifacts(parent.info.run_id))
