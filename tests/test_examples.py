"""The examples run as written (small sizes)."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

import autoq
from autoq.builtin import load_workload

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run_pipeline(tmp_path, *extra: str) -> tuple[autoq.SearchResult, str]:
    load_workload("digits-cnn")  # train the built-in once in this session's cache, which the subprocess shares
    out = tmp_path / "best.pkl"
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "outer_optuna_pipeline.py"), "--outer-trials", "2", "--inner-trials", "6", "--out", str(out), *extra],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "best:" in proc.stdout
    result = pickle.loads(out.read_bytes())
    assert isinstance(result, autoq.SearchResult) and len(result.points) == 6
    return result, proc.stdout


@pytest.mark.slow
def test_outer_optuna_pipeline(tmp_path):
    _run_pipeline(tmp_path)
    assert not (tmp_path / "mlflow.db").exists()  # the inner searches were asked not to log


def test_outer_optuna_pipeline_nests_each_search_in_its_outer_trial_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'pipeline.db'}"
    best, printed = _run_pipeline(tmp_path, "--tracking-uri", uri, "--register", "pipeline-digits")
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("outer-pipeline").experiment_id
    runs = client.search_runs([experiment], max_results=100)
    outer = {r.info.run_id: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    searches = [r for r in runs if r.data.tags.get("autoq.kind") == "search"]
    assert len(outer) == 2 and all(r.info.status == "FINISHED" and "quality" in r.data.metrics for r in outer.values())
    assert sorted(s.data.tags["mlflow.parentRunId"] for s in searches) == sorted(outer)  # one search in each outer trial
    assert sum(r.data.tags.get("mlflow.parentRunId") == best.parent_run_id for r in runs) == 6  # its trials, one level down
    # the last step registered the chosen point's model, logged from its trial's run
    assert "registered models:/pipeline-digits/1" in printed
    assert client.get_model_version("pipeline-digits", "1").run_id == best.best.run_id
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(autoq.load("models:/pipeline-digits/1", tracking_uri=uri)(x), autoq.load(tmp_path / "quantized-pipeline-digits")(x))


@pytest.mark.parametrize(("args", "says"), [(["--outer-trials", "0"], "--outer-trials must be at least 1"),
                                            (["--register", "m"], "--register needs --tracking-uri")])
def test_outer_optuna_pipeline_refuses_bad_arguments_before_any_work(args, says):
    proc = subprocess.run([sys.executable, str(EXAMPLES / "outer_optuna_pipeline.py"), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr
