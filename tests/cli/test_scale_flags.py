"""``autoq search`` scale-out and resume flags: bad input is one line and exit status 2."""

from __future__ import annotations

import pytest

from autoq.cli import main
from autoq.engine import SearchConfig


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
    # a --tracking-uri given is the user's: refused as another store, not replaced by the stored one (which ran on in it)
    storage = SearchConfig(tracking_uri=mlflow_uri, storage="auto").resolved_storage()
    other = ["search", "--no-progress", "--tracking-uri", f"sqlite:///{tmp_path / 'other.db'}", "--storage", storage]
    assert main([*other, "--resume", "stored", "--n-trials", "8"]) == 2
    assert "cannot resume 'stored' in another MLflow store" in capsys.readouterr().err
    assert main([*base, "--resume", "stored", "--seed", "8"]) == 2
    assert "seed 8 (stored: 7)" in capsys.readouterr().err
    # an option given at its default value is given: it was taken for left out and replaced by the stored value
    assert main([*base, "--resume", "stored", "--seed", "0"]) == 2
    assert "seed 0 (stored: 7)" in capsys.readouterr().err
    assert main([*base, "--resume", "stored", "--model", "smollm2"]) == 2  # refused before SmolLM2 loads (it was loaded first)
    err = capsys.readouterr().err
    assert "other settings: model 'smollm2' (stored: 'digits-cnn'); resume with the stored one (leave --model out)" in err
    assert "autoq: loading" not in err


def test_a_command_line_resume_takes_a_python_searchs_seed_counts_and_refuses_another_parent_run(tmp_path, capsys, mlflow_uri):
    """A search started from Python with max_uniform_seeds set could not be resumed from the command line ('other
    settings: max_uniform_seeds 16 (stored: 2)', with no option to give it), and its n_fill_seeds was not stored: a
    resume to more trials enqueued the default 16's fill seeds. --mlflow-parent-run-id on a resume was ignored, the run
    staying under its first parent."""
    import optuna
    from mlflow.tracking import MlflowClient

    import autoq
    from autoq.errors import AutoqError

    client = MlflowClient(mlflow_uri)
    outer, other = (client.create_run(client.create_experiment(name)).info.run_id for name in ("outer", "other"))
    options = dict(budget="4.5bits", n_trials=4, max_uniform_seeds=2, n_fill_seeds=0, seed_from="none", study_name="py",
                   tracking_uri=mlflow_uri, mlflow_parent_run_id=outer, progress=False)
    autoq.search("digits-cnn", **options)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"  # beside the store: where the command line looks
    seeded = sum(bool(t.user_attrs.get("seeded")) for t in optuna.load_study(study_name="py", storage=storage).trials)
    assert main(["search", "--no-progress", "--tracking-uri", mlflow_uri, "--resume", "py", "--n-trials", "6"]) == 0, capsys.readouterr().err
    trials = optuna.load_study(study_name="py", storage=storage).trials
    assert sum(t.state.name == "COMPLETE" for t in trials) == 6  # (over-budget proposals are told too, as pruned)
    assert sum(bool(t.user_attrs.get("seeded")) for t in trials) == seeded  # no fill seeds: none was asked for
    with pytest.raises(AutoqError, match=r"other settings: n_fill_seeds 16 \(stored: 0\)"):
        autoq.search("digits-cnn", resume=True, **{**options, "n_fill_seeds": 16})
    with pytest.raises(AutoqError, match=rf"other settings: mlflow_parent_run_id '{other}' \(stored: '{outer}'\)"):
        autoq.search("digits-cnn", resume=True, **{**options, "mlflow_parent_run_id": other})
    assert autoq.search("digits-cnn", resume=True, **options).parent_run_id is not None  # the same parent: taken


def test_a_python_search_seeded_from_nothing_resumes_from_the_command_line_and_as_none(tmp_path, mlflow_uri, capsys):
    """seed_from=None was stored as null, which a command-line resume skipped: its --seed-from default, auto, was then
    refused as another setting ("seed_from 'auto' (stored: None)"); and from Python "none" was refused against None."""
    import optuna

    import autoq

    options = dict(budget="4.5bits", n_trials=3, max_uniform_seeds=2, n_fill_seeds=0, seed_from=None, study_name="rn",
                   tracking_uri=mlflow_uri, progress=False)
    autoq.search("digits-cnn", **options)
    assert main(["search", "--no-progress", "--tracking-uri", mlflow_uri, "--resume", "rn", "--n-trials", "4"]) == 0, capsys.readouterr().err
    assert autoq.search("digits-cnn", resume=True, **{**options, "seed_from": "none", "n_trials": 5}).study_name == "rn"
    trials = optuna.load_study(study_name="rn", storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials
    assert sum(t.state.name == "COMPLETE" for t in trials) == 5


def test_a_python_search_with_a_sampler_instance_is_sent_back_to_python_to_resume(tmp_path, mlflow_uri, capsys):
    """Its class name was taken for --sampler, and the registry's "unknown sampler 'RandomSampler' ... --plugin MODULE"
    sent the user looking for a plug-in."""
    import optuna

    import autoq

    autoq.search("digits-cnn", budget="4.5bits", n_trials=2, seed_from=None, sampler=optuna.samplers.RandomSampler(seed=3),
                 study_name="inst", tracking_uri=mlflow_uri, progress=False)
    assert main(["search", "--no-progress", "--tracking-uri", mlflow_uri, "--resume", "inst", "--n-trials", "3"]) == 2
    err = capsys.readouterr().err
    assert "searched with sampler 'RandomSampler', which no --sampler names here: an Optuna sampler passed from Python" in err
    assert "sampler=..., resume=True, study_name='inst'" in err and "(--plugin MODULE)" in err and "loading" not in err


def test_a_resume_given_a_built_in_for_a_folder_or_a_folder_for_a_built_in_is_refused_before_loading():
    """Two folders are left to the full check (a moved folder holds the same model); a built-in against a folder is not."""
    from autoq.cli.scale import _check_model
    from autoq.errors import AutoqError

    for stored, given in (("digits-cnn", "/data/my-bert"), ("/data/my-bert", "digits-cnn"), ("digits-cnn", "smollm2")):
        with pytest.raises(AutoqError, match=rf"model '{given}' \(stored: '{stored}'\); resume with the stored one"):
            _check_model("nightly", stored, given)
    for stored, given in (("/data/my-bert", "/moved/my-bert"), ("digits-cnn", "digits-cnn"), ("minilm", None), (None, "smollm2")):  # None: the default model
        _check_model("nightly", stored, given)
