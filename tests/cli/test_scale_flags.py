"""``autoq search`` scale-out and resume flags: bad input is one line and exit status 2."""

from __future__ import annotations

import pytest

from autoq.cli import main


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--workers", "2"], "need the ray backend"),
        (["--backend", "ray", "--workers", "0"], "workers (--workers) must be at least 1"),
        (["--max-retries", "-1"], "max_retries (--max-retries) must be 0 or more"),
        (["--resume", "nope"], "no Optuna storage at"),  # nothing ran in tmp_path: no optuna.db to resume from
        (["--resume", "a", "--study-name", "b"], "name different searches"),
        (["--backend", "ray", "--cpus-per-trial", "100000"], "is more than this machine's"),  # the local Ray was sized to fit it
    ],
)
def test_bad_scale_flags(args, needle, tmp_path, capsys):
    code = main(["search", "--model", "digits-cnn", "--no-progress", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("autoq: error:")]
    assert len(errors) == 1 and needle in errors[0], err


def test_resume_reads_stored_settings(tmp_path, capsys, mlflow_uri):
    base = ["search", "--no-progress", "--tracking-uri", mlflow_uri]
    assert main([*base, "--model", "digits-cnn", "--budget", "3.5bits", "--n-trials", "4", "--seed", "7", "--study-name", "stored"]) == 0
    capsys.readouterr()
    assert main([*base, "--resume", "stored", "--n-trials", "6"]) == 0  # model, budget and seed come from the storage
    out = capsys.readouterr().out
    assert "within 3.5bits (" in out and "of 6 evaluated trials" in out
    assert main([*base, "--resume", "stored", "--seed", "8"]) == 2
    assert "seed 8 (stored: 7)" in capsys.readouterr().err
    # an option given at its default value is given: it was taken for left out and replaced by the stored value
    assert main([*base, "--resume", "stored", "--seed", "0"]) == 2
    assert "seed 0 (stored: 7)" in capsys.readouterr().err
    assert main([*base, "--resume", "stored", "--model", "smollm2"]) == 2  # refused before SmolLM2 loads (it was loaded first)
    err = capsys.readouterr().err
    assert "other settings: model 'smollm2' (stored: 'digits-cnn'); resume with the stored one (leave --model out)" in err
    assert "autoq: loading" not in err
