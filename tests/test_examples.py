"""The examples run as written (small sizes)."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import autoq
from autoq.builtin import load_workload

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_outer_optuna_pipeline(tmp_path):
    load_workload("digits-cnn")  # train the built-in once in this session's cache, which the subprocess shares
    out = tmp_path / "best.pkl"
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "outer_optuna_pipeline.py"), "--outer-trials", "2", "--inner-trials", "6", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "best:" in proc.stdout
    result = pickle.loads(out.read_bytes())
    assert isinstance(result, autoq.SearchResult) and len(result.points) == 6
    assert not (tmp_path / "mlflow.db").exists()  # the inner searches were asked not to log
