"""The ``autoq`` command: bad input exits non-zero with one line and no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def run_cli(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "autoq", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--budget", "abc"], "cannot parse budget 'abc'"),
        (["--budget=-1bits"], "must be positive"),
        (["--budget", "3ms"], "latency budget"),
        (["--model", "digits-cnn", "--budget", "0.5bits"], "below the cheapest assignment; the feasible range"),
        (["--model", "digits-cnn", "--budget", "99bits"], "above the dearest assignment"),
        (["--model", "does/not/exist"], "does not exist"),
        (["--model", "digits-cnn", "--skip", ".*"], "no quantizable layer"),
        (["--model", "digits-cnn", "--space", "nope"], "unknown search space 'nope'"),
        (["--model", "digits-cnn", "--pin", "garbage"], "cannot parse pin"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, needle, tmp_path):
    proc = run_cli("search", *args, "--no-progress", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("autoq: error:")]
    assert len(errors) == 1 and needle in errors[0], proc.stderr
    assert not (tmp_path / "mlflow.db").exists() or "budget" not in needle


def test_feasible_range_is_stated(tmp_path):
    proc = run_cli("search", "--model", "digits-cnn", "--budget", "0.5bits", "--no-progress", cwd=tmp_path)
    assert "2.102 bits to 16.000 bits" in proc.stderr


def test_no_quantizable_layer_in_a_real_model_dir(tmp_path):
    # a directory that is not a model at all
    (tmp_path / "empty").mkdir()
    proc = run_cli("search", "--model", str(tmp_path / "empty"), "--no-progress", cwd=tmp_path)
    assert proc.returncode == 2 and "no config.json" in proc.stderr and "Traceback" not in proc.stderr


def test_help_lists_search():
    proc = subprocess.run([sys.executable, "-m", "autoq", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "search" in proc.stdout
