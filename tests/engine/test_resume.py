"""Resume: a search killed with SIGKILL continues from its Optuna storage and MLflow parent run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import warnings
from collections import Counter

import optuna
import pytest
from helpers import child_runs
from mlflow.tracking import MlflowClient

import autoq
from autoq.builtin import load_workload
from autoq.errors import AutoqError, AutoqWarning
from autoq.sensitivity import SensitivityTable
from autoq.tracking import STUDY_TAG

N_TRIALS = 30


@pytest.fixture
def digits():  # function scope: after conftest points AUTOQ_CACHE_DIR at the session cache
    return load_workload("digits-cnn")  # trains and caches the CNN once per session, before any subprocess needs it


def _cli(*args: str, cwd) -> list[str]:
    return [sys.executable, "-m", "autoq", "search", *args, "--no-progress"]


def _states(storage: str, name: str) -> Counter:
    study = optuna.load_study(study_name=name, storage=storage)
    return Counter(t.state.name for t in study.trials)


def _parents(client: MlflowClient, name: str) -> list:
    experiment = client.get_experiment_by_name("autoq")
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.`{STUDY_TAG}` = '{name}'")


@pytest.mark.slow
def test_sigkill_then_resume_keeps_finished_trials_without_duplicates(digits, tmp_path, mlflow_uri):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    args = ["--model", "digits-cnn", "--budget", "4.5bits", "--n-trials", str(N_TRIALS), "--tracking-uri", mlflow_uri, "--study-name", "killed"]
    proc = subprocess.Popen(_cli(*args, cwd=tmp_path), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline, complete = time.time() + 120, 0
        while time.time() < deadline and complete < 6 and proc.poll() is None:
            time.sleep(0.1)
            try:
                complete = _states(storage, "killed")["COMPLETE"]
            except KeyError:  # the study does not exist yet
                continue
        # a resume while it runs is refused, and leaves it running (it failed the live trial, and the search died)
        with pytest.raises(AutoqError, match=f"search 'killed' is still running \\(process {proc.pid} on this machine\\)"):
            autoq.search("digits-cnn", budget="4.5bits", n_trials=N_TRIALS, tracking_uri=mlflow_uri, storage=storage, study_name="killed",
                         resume=True, progress=False)
        assert proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL, "the search finished before it could be killed"
    before = {t.number: t.values for t in optuna.load_study(study_name="killed", storage=storage).trials if t.state.name == "COMPLETE"}
    assert 6 <= len(before) < N_TRIALS
    # what 'autoq pareto' reads of it now: the unquantized quality was logged at the end only ('not recorded'), and its
    # time was 0 s (the parent run has no end)
    cut = autoq.SearchResult.from_mlflow(_parents(MlflowClient(mlflow_uri), "killed")[0].info.run_id, mlflow_uri)
    assert cut.reference_quality > 0.9 and cut.wall_seconds > 0  # its trials take well under a second on digits-cnn
    assert cut.n_uniform is not None and cut.n_uniform > 0  # logged at the start: read back, every baseline was taken as evaluated

    # resume from the stored settings: only the name and the stores are given
    done = subprocess.run(_cli("--resume", "killed", "--tracking-uri", mlflow_uri, cwd=tmp_path), cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Pareto frontier" in done.stdout

    study = optuna.load_study(study_name="killed", storage=storage)
    after = {t.number: t.values for t in study.trials if t.state.name == "COMPLETE"}
    assert len(after) == N_TRIALS  # the count asked for, no more
    assert all(after[n] == v for n, v in before.items())  # every trial finished before the kill is kept as it was
    assert not any(t.state.name == "RUNNING" for t in study.trials)

    client = MlflowClient(mlflow_uri)
    parents = _parents(client, "killed")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # continued, not duplicated
    assert parents[0].data.tags["autoq.resumed"] == "1"
    children = child_runs(client, parents[0].info.run_id)
    numbers = [int(r.data.tags["autoq.trial"]) for r in children]
    assert len(numbers) == len(set(numbers)) == N_TRIALS  # no trial is logged twice
    assert set(numbers) == set(after)
    assert all(r.info.status == "FINISHED" for r in children)


def test_resume_drops_half_logged_trial_and_retries_it(digits, tmp_path, mlflow_uri):
    """A kill between logging a trial to MLflow and telling Optuna leaves a RUNNING trial with a child run."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    kwargs = dict(budget="4.5bits", seed=1, tracking_uri=mlflow_uri, storage=storage, study_name="half", progress=False)
    first = autoq.search("digits-cnn", n_trials=10, **kwargs)
    study = optuna.load_study(study_name="half", storage=storage)
    stuck = study.ask(study.trials[0].distributions)  # what a dead process leaves: a RUNNING trial with parameters
    client = MlflowClient(mlflow_uri)
    orphan = client.create_run(client.get_run(first.parent_run_id).info.experiment_id, tags={"mlflow.parentRunId": first.parent_run_id, "autoq.trial": str(stuck.number)})

    resumed = autoq.search("digits-cnn", n_trials=14, resume=True, **kwargs)
    assert len(resumed.points) == 14 and resumed.parent_run_id == first.parent_run_id
    assert {p.trial for p in first.points} <= {p.trial for p in resumed.points}
    assert client.get_run(orphan.info.run_id).info.lifecycle_stage == "deleted"
    stuck_now = optuna.load_study(study_name="half", storage=storage).trials[stuck.number]
    assert stuck_now.state.name == "FAIL" and "interrupted" in stuck_now.user_attrs["error"]
    children = child_runs(client, first.parent_run_id)
    assert len(children) == 14 and len({r.data.tags["autoq.trial"] for r in children}) == 14


def test_a_resume_takes_the_same_pins_and_skips_in_another_order(digits, tmp_path):
    """Skips are a set and pins that match one layer must agree: the same ones in another order were "other settings"."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    kwargs = dict(budget="8bits", tracking_uri=None, storage=storage, study_name="order", progress=False, seed_from="none")
    autoq.search("digits-cnn", n_trials=2, pins={"^0$": "int8-ch-asym:rtn-mse", "^2$": "int4-ch-asym:rtn-mse"}, skip=("^6$", "^8$"), **kwargs)
    resumed = autoq.search("digits-cnn", n_trials=3, pins={"^2$": "int4-ch-asym:rtn-mse", "^0$": "int8-ch-asym:rtn-mse"}, skip=("^8$", "^6$"),
                           resume=True, **kwargs)
    assert len(resumed.points) == 3
    with pytest.raises(AutoqError, match=r"other settings: skip \['\^8\$'\] \(stored: \['\^6\$', '\^8\$'\]\)"):  # a set, not a subset
        autoq.search("digits-cnn", n_trials=4, pins={"^2$": "int4-ch-asym:rtn-mse", "^0$": "int8-ch-asym:rtn-mse"}, skip=("^8$",),
                     resume=True, **kwargs)


def test_resume_refuses_other_settings_and_unknown_names(digits, tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    autoq.search("digits-cnn", budget="4.5bits", n_trials=3, tracking_uri=None, storage=storage, study_name="s", progress=False)
    with pytest.raises(AutoqError, match=r"other settings: budget '3.5bits' \(stored: '4.5bits'\)"):
        autoq.search("digits-cnn", budget="3.5bits", n_trials=5, tracking_uri=None, storage=storage, study_name="s", resume=True, progress=False)
    with pytest.raises(AutoqError, match=r"other settings: experiment 'other' \(stored: 'autoq'\)"):  # a second parent run
        autoq.search("digits-cnn", budget="4.5bits", experiment="other", n_trials=5, tracking_uri=None, storage=storage, study_name="s",
                     resume=True, progress=False)
    with pytest.raises(AutoqError, match=r"other settings: space 'per-channel' \(stored: 'default'\)"):
        autoq.search("digits-cnn", budget="4.5bits", space="per-channel", n_trials=5, tracking_uri=None, storage=storage, study_name="s",
                     resume=True, progress=False)
    # a pin that puts the budget out of reach: the pin is the error, not the budget (said infeasible, which the stored search is not)
    with pytest.raises(AutoqError, match=r"other settings: pins \[\['6', 'fp16'\]\] \(stored: \[\]\)"):
        autoq.search("digits-cnn", budget="4.5bits", pins={"6": "fp16"}, n_trials=5, tracking_uri=None, storage=storage, study_name="s",
                     resume=True, progress=False)
    with pytest.raises(AutoqError, match="no search named 'other'") as refused:
        autoq.search("digits-cnn", budget="4.5bits", n_trials=5, tracking_uri=None, storage=storage, study_name="other", resume=True, progress=False)
    assert "looks like an MLflow run id" not in str(refused.value)  # a study name is not taken for one
    run_id = "0123456789abcdef0123456789abcdef"  # a parent run id where the study name belongs: said so
    with pytest.raises(AutoqError, match="that looks like an MLflow run id: a resume takes the search's study name"):
        autoq.search("digits-cnn", budget="4.5bits", n_trials=5, tracking_uri=None, storage=storage, study_name=run_id, resume=True, progress=False)
    missing = tmp_path / "elsewhere" / "optuna.db"
    with pytest.raises(AutoqError, match="no Optuna storage at .*elsewhere.*optuna.db"):
        autoq.search("digits-cnn", budget="4.5bits", n_trials=5, tracking_uri=None, storage=f"sqlite:///{missing}", study_name="s",
                     resume=True, progress=False)
    assert not missing.exists()
    with pytest.raises(AutoqError, match="resume needs the study name.*study_name= and storage= in Python"):
        autoq.SearchConfig(resume=True)
    # a resume that asks for no more trials than are finished evaluates nothing new; the budget may be spelled
    # otherwise ('4.5' was refused against a stored '4.5bits')
    capsys.readouterr()
    again = autoq.search("digits-cnn", budget="4.5", n_trials=3, tracking_uri=None, storage=storage, study_name="s", resume=True)
    assert len(again.points) == 3
    assert "resuming 's': 3 finished trial(s) kept, 0 interrupted one(s) to retry; --n-trials 3 are all done" in capsys.readouterr().err
    autoq.search("digits-cnn", budget="4.5", n_trials=2, tracking_uri=None, storage=storage, study_name="s", resume=True, progress=False)
    assert "--n-trials 2 are all done: nothing to evaluate" in capsys.readouterr().err  # fewer than are done: not '-1 more to evaluate'
    autoq.search("digits-cnn", budget="4.5", n_trials=3, tracking_uri=None, storage=storage, study_name="s", resume=True, progress=False)
    assert "resuming 's': 3 finished trial(s) kept" in capsys.readouterr().err  # without a bar too (a batch job's log said nothing)


@pytest.mark.parametrize("strategy", ["random", "greedy"])
def test_a_resumed_queue_strategy_goes_on_where_it_stopped(digits, tmp_path, strategy):
    """ILP, greedy and random replay their proposals from the start: the stored ones used to come back as repeats,
    each taking one of the trials asked for."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    options = dict(budget="4.5bits", strategy=strategy, tracking_uri=None, storage=storage, study_name="q", progress=False)
    first = autoq.search("digits-cnn", n_trials=4, **options)
    resumed = autoq.search("digits-cnn", n_trials=9, resume=True, **options)
    assert [p.assignment for p in resumed.points[:4]] == [p.assignment for p in first.points]
    assert len(resumed.points) == 9 and len({p.assignment for p in resumed.points}) == 9


def test_a_random_search_stopped_and_resumed_proposes_what_one_that_ran_through_does(digits, tmp_path):
    """The resumed source skipped every stored assignment, its later repeats too, which a search that ran through counts
    as trials: from the first such repeat on the two proposed other assignments (one seed, two searches)."""
    options = dict(budget="2.5bits", strategy="random", tracking_uri=None, study_name="r", progress=False)
    through = autoq.search("digits-cnn", n_trials=20, storage=f"sqlite:///{tmp_path / 'through.db'}", **options)
    stopped = f"sqlite:///{tmp_path / 'stopped.db'}"
    autoq.search("digits-cnn", n_trials=8, storage=stopped, **options)
    autoq.search("digits-cnn", n_trials=13, storage=stopped, resume=True, **options)
    import sqlite3  # the places an older autoq did not keep: every resume still skips its trials (a second one re-proposed them)

    with sqlite3.connect(tmp_path / "stopped.db") as db:
        db.execute("DELETE FROM trial_user_attributes WHERE key = 'autoq.source_index' AND trial_id IN "
                   "(SELECT trial_id FROM trials WHERE number < 8)")
    db.close()
    resumed = autoq.search("digits-cnn", n_trials=20, storage=stopped, resume=True, **options)
    assignments = [p.assignment for p in through.points]
    assert len(set(assignments[8:])) < len(assignments[8:]) or set(assignments[8:]) & set(assignments[:8])  # it repeats after trial 8
    assert [p.assignment for p in resumed.points] == assignments


@pytest.mark.parametrize("sampler", ["random", "nsga2"])
def test_a_resumed_sampler_does_not_propose_its_first_sessions_trials_again(digits, tmp_path, sampler):
    """Seeded with the search's seed alone, a resumed random sampler (NSGA-II's first generation too) proposed again, in
    order, what it had proposed before the interruption: repeats that took trials. The same stored study still resumes
    the same way (two copies of it continue alike)."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    options = dict(budget="3bits", sampler=sampler, seed_from="none", max_uniform_seeds=1, tracking_uri=None, study_name="s",
                   progress=False)
    autoq.search("digits-cnn", n_trials=7, storage=storage, **options)
    copy = tmp_path / "copy.db"
    copy.write_bytes((tmp_path / "optuna.db").read_bytes())
    n_first = len(optuna.load_study(study_name="s", storage=storage).trials)  # over-budget proposals (pruned) included

    def proposals(url: str, session: int) -> list[dict]:
        trials = optuna.load_study(study_name="s", storage=url).get_trials(deepcopy=False)
        sampled = [t for t in trials if not t.user_attrs.get("seeded")]  # the sampler's own, not enqueued baselines
        return [t.params for t in sampled if (t.number < n_first) == (session == 1)][:5]

    autoq.search("digits-cnn", n_trials=14, storage=storage, resume=True, **options)
    first, second = proposals(storage, 1), proposals(storage, 2)
    assert len(first) == len(second) == 5 and first != second
    autoq.search("digits-cnn", n_trials=14, storage=f"sqlite:///{copy}", resume=True, **options)
    assert proposals(f"sqlite:///{copy}", 2) == second


def _failing_at_few_bits():
    """A small MLP, its data, and an evaluate that counts its calls (``calls``) and gives NaN (a failed trial) on every
    try where the output's cosine to the unquantized model is 0.98 or less: int2, and int3 on both layers."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    data = [torch.randn(8, 16) for _ in range(4)]
    reference = model(torch.cat(data)).detach()
    calls = []

    def evaluate(m):
        calls.append(1)
        with torch.no_grad():
            quality = float(torch.nn.functional.cosine_similarity(m(torch.cat(data)), reference).mean())
        return quality if quality > 0.98 else float("nan")

    return model, data, evaluate, calls


def test_an_assignment_that_failed_for_good_is_not_evaluated_again_nor_counted_otherwise_on_resume(tmp_path):
    model, data, evaluate, calls = _failing_at_few_bits()
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    options = dict(budget="6bits", n_trials=14, max_retries=0, seed_from="none", tracking_uri=None, storage=storage, study_name="f", progress=False)
    with pytest.warns(AutoqWarning, match=r"trial 0 failed \(quality is nan\)"):
        first = autoq.search(model, data, evaluate, **options)
    fails = Counter(tuple(sorted(t.params.items())) for t in first.study().trials if t.state.name == "FAIL")
    assert len(first.points) + first.n_failed == 14 and first.n_failed == sum(fails.values())
    assert len(calls) == 1 + len({p.assignment for p in first.points}) + len(fails)  # the reference, then each assignment once
    calls.clear()
    again = autoq.search(model, data, evaluate, resume=True, **options)
    assert (len(again.points), again.n_failed, len(calls)) == (len(first.points), first.n_failed, 1)  # finished: nothing more


def test_a_resume_with_other_max_retries_counts_the_failed_trials_as_they_were(tmp_path):
    """The failures were counted again under the resume's max_retries: lowered from 2 to 0, one assignment that failed
    for good (3 evaluations) became 3 failed trials, and a larger --n-trials evaluated fewer new ones than asked;
    raised, a failure for good counted as none."""
    model, data, evaluate, calls = _failing_at_few_bits()
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    options = dict(budget="6bits", n_trials=8, max_retries=2, seed_from="none", tracking_uri=None, storage=storage, study_name="r", progress=False)
    with pytest.warns(AutoqWarning, match=r"failed \(quality is nan\)"):
        first = autoq.search(model, data, evaluate, **options)
    assert first.n_failed >= 1 and len(first.points) + first.n_failed == 8
    for retries in (0, 5, 1):  # each resume stores its max_retries: the next one reads the failures under its own
        calls.clear()
        again = autoq.search(model, data, evaluate, resume=True, **{**options, "max_retries": retries})
        assert (len(again.points), again.n_failed, len(calls)) == (len(first.points), first.n_failed, 1)  # nothing more to do
    calls.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AutoqWarning)
        more = autoq.search(model, data, evaluate, resume=True, **{**options, "n_trials": 11, "max_retries": 0})
    assert len(more.points) + more.n_failed == 11 and more.n_failed >= first.n_failed  # the 3 asked for, not fewer


def test_a_resume_of_a_search_whose_trials_all_failed_says_they_count(tmp_path, capsys):
    """A notebook's metric had a bug, every trial failed; resumed with the metric fixed, it said '4 more to evaluate',
    evaluated none (the failed trials count toward --n-trials) and ended in 'every trial failed' with no error."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    data = [torch.randn(8, 16) for _ in range(2)]
    calls = []

    def buggy(m):
        calls.append(1)
        if len(calls) > 1:  # the unquantized reference passes
            raise ValueError("bug in my metric")
        return 1.0

    def fixed(m):
        with torch.no_grad():
            return float(m(data[0]).abs().mean())

    options = dict(budget="6bits", n_trials=3, max_retries=0, seed_from="none", tracking_uri=None, storage=f"sqlite:///{tmp_path / 'o.db'}",
                   study_name="fixme", progress=False)
    with pytest.raises(AutoqError, match=r"every trial failed \(3\); the first error: ValueError: bug in my metric"), \
            pytest.warns(AutoqWarning, match=r"trial 0 failed \(ValueError: bug in my metric\)"):
        autoq.search(model, data, buggy, **options)
    capsys.readouterr()
    with pytest.raises(AutoqError, match=r"every trial failed \(3\) in an earlier session"):
        autoq.search(model, data, fixed, resume=True, **options)
    assert ("0 finished trial(s) kept, 3 failed for good, 0 interrupted one(s) to retry; --n-trials 3 are all done: nothing to "
            "evaluate; failed trials count too: a larger --n-trials evaluates more") in capsys.readouterr().err
    from autoq.engine.resume import read_settings

    with pytest.raises(AutoqError, match=r"every trial failed \(3\) in an earlier session"):
        autoq.search(model, data, fixed, resume=True, **{**options, "n_trials": 2})
    assert read_settings(options["storage"], "fixme")["n_trials"] == 3  # 3 failed for good are done: asking 2 keeps the target
    capsys.readouterr()
    again = autoq.search(model, data, fixed, resume=True, **{**options, "n_trials": 6})
    assert (len(again.points), again.n_failed) == (3, 3)
    assert "0 finished trial(s) kept, 3 failed for good, 0 interrupted one(s) to retry; 3 more to evaluate" in capsys.readouterr().err


def test_a_resume_on_other_data_is_refused(digits, tmp_path):
    import dataclasses

    from autoq.engine import SearchConfig, run_search

    config = SearchConfig(budget="4.5bits", n_trials=3, tracking_uri=None, storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="d",
                          progress=False, seed_from="none")
    run_search(dataclasses.replace(digits, data_fingerprint="data-v1"), config)
    with pytest.raises(AutoqError, match=r"other settings: data_fingerprint 'data-v2' \(stored: 'data-v1'\)"):
        run_search(dataclasses.replace(digits, data_fingerprint="data-v2"), dataclasses.replace(config, n_trials=5, resume=True))


def test_a_resume_of_the_callers_own_model_with_other_weights_or_data_is_refused(tmp_path):
    """Only the class name was compared for a model passed from Python: a resume on other weights, or other data, went on
    and mixed both models' trials into one frontier."""
    import torch

    def model(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))

    def data(seed: int) -> list:
        gen = torch.Generator().manual_seed(seed)
        return [torch.randn(8, 16, generator=gen) for _ in range(4)]

    options = dict(budget="6bits", seed_from="none", tracking_uri=None, storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="own",
                   progress=False)
    autoq.search(model(0), data(0), n_trials=3, **options)
    for other_model, other_data in ((model(1), data(0)), (model(0), data(1))):  # other weights, other data
        with pytest.raises(AutoqError, match="other settings: data_fingerprint 'weights .*, data .*' \\(stored: 'weights "):
            autoq.search(other_model, other_data, n_trials=4, resume=True, **options)
    with pytest.raises(AutoqError, match=r"other settings: model name \(name=\) 'nm' \(stored: 'Sequential'\)"):  # said as set
        autoq.search(model(0), data(0), n_trials=4, resume=True, name="nm", **options)
    assert len(autoq.search(model(0), data(0), n_trials=4, resume=True, **options).points) == 4  # the same ones resume
    study = optuna.load_study(study_name="own", storage=options["storage"])
    study.set_user_attr("autoq.settings", {**study.user_attrs["autoq.settings"], "data_fingerprint": ""})  # stored before
    assert len(autoq.search(model(1), data(0), n_trials=5, resume=True, **options).points) == 5  # nothing to compare: it goes on


def test_a_resume_of_a_changed_model_is_refused_before_the_study_or_its_run_change(tmp_path, mlflow_uri):
    """Layers renamed under the same model name: the stored trials no longer fit. This used to be found only after the
    MLflow parent run was reopened (left RUNNING, its resume counter raised) and the interrupted trials re-enqueued."""
    from collections import OrderedDict

    import torch

    def model(second: str) -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(OrderedDict([("first", torch.nn.Linear(16, 32)), ("act", torch.nn.ReLU()), (second, torch.nn.Linear(32, 4))]))

    import dataclasses

    from autoq.api import make_workload
    from autoq.engine import SearchConfig, run_search

    data = [torch.randn(8, 16) for _ in range(2)]

    def workload(second: str):  # one fingerprint for both (a renamed checkpoint's weights hash otherwise): the layers must tell
        return dataclasses.replace(make_workload(model(second), data, None), data_fingerprint="same")

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    config = SearchConfig(budget="6bits", n_trials=3, seed_from="none", tracking_uri=mlflow_uri, storage=storage, study_name="c", progress=False)
    first = run_search(workload("second"), config)
    study = optuna.load_study(study_name="c", storage=storage)
    interrupted = study.ask()  # as a kill mid-trial leaves it
    interrupted.suggest_categorical("first", list(study.trials[0].distributions["first"].choices))
    before = Counter(t.state.name for t in study.trials)
    resume = dataclasses.replace(config, resume=True)
    with pytest.raises(AutoqError, match=r"does not fit this model.s search space \(stored layer .second. is not in it\)"):
        run_search(workload("renamed"), resume)
    parent = MlflowClient(mlflow_uri).get_run(first.parent_run_id)
    assert parent.info.status == "FINISHED" and "autoq.resumed" not in parent.data.tags
    assert Counter(t.state.name for t in optuna.load_study(study_name="c", storage=storage).trials) == before
    again = run_search(workload("second"), dataclasses.replace(resume, n_trials=4))  # the original still resumes
    assert len(again.points) == 4


def test_a_kill_during_optunas_ask_leaves_a_study_that_resumes_again_and_again(tmp_path):
    """A kill while Optuna stores a trial's picks leaves it RUNNING with some of them. Its retry used to be enqueued with
    those few (a seeded trial lost its assignment), and the next resume refused the study as not fitting the model."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    data = [torch.randn(8, 16, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    options = dict(budget="6bits", seed_from="none", tracking_uri=None, storage=storage, study_name="k", progress=False)
    autoq.search(model, data, n_trials=2, **options)
    study = optuna.load_study(study_name="k", storage=storage)
    choices = {name: list(d.choices) for name, d in study.trials[0].distributions.items()}
    seeded = {"0": "int4-ch-asym:rtn-mse", "2": "int5-ch-asym:rtn-mse", "4": "int4-ch-asym:rtn-mse"}
    study.enqueue_trial(seeded, user_attrs={"seeded": True})
    waiting = len(study.get_trials(states=(optuna.trial.TrialState.WAITING,)))
    for _ in range(waiting + 1):  # the search's own seeds, then ours, then a sampled trial: each killed after its first pick
        study.ask().suggest_categorical("0", choices["0"])
    killed = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    assert sum("fixed_params" in t.system_attrs for t in killed) == waiting and all(len(t.params) == 1 for t in killed)
    resumed = autoq.search(model, data, n_trials=4 + waiting, resume=True, **options)
    retried = {t.user_attrs["autoq.retry_of"]: t for t in resumed.study().trials if "autoq.retry_of" in t.user_attrs}
    assert sorted(retried) == [t.number for t in killed[:-1]]  # the sampled one is proposed afresh, not with its one pick
    assert all(r.params == t.system_attrs["fixed_params"] and r.user_attrs.get("seeded") for t, r in zip(killed, retried.values()))
    assert any(dict((n, c.name) for n, c in p.assignment.items()) == seeded for p in resumed.points)
    again = autoq.search(model, data, n_trials=5 + waiting, resume=True, **options)
    assert len(again.points) == 5 + waiting


def test_a_resumed_search_reports_its_whole_wall_time_and_its_new_trial_count(digits, tmp_path, mlflow_uri):
    """After a resume, wall_seconds was the last session's alone ('170 trials in 7 s' when 163 took 14 s before), and
    nothing in MLflow said how many trials the search now asked for (a param cannot change)."""
    options = dict(budget="4.5bits", seed_from="none", tracking_uri=mlflow_uri, storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="w",
                   progress=False)
    first = autoq.search("digits-cnn", n_trials=3, **options)
    resumed = autoq.search("digits-cnn", n_trials=5, resume=True, **options)
    assert resumed.wall_seconds > first.wall_seconds
    run = MlflowClient(mlflow_uri).get_run(resumed.parent_run_id)
    assert run.data.params["n_trials"] == "3" and run.data.tags["autoq.n_trials"] == "5"
    assert run.data.metrics["wall_seconds"] == pytest.approx(resumed.wall_seconds)
    # one point a session on the run's charts (both sessions logged at step 0, two values at one step)
    history = MlflowClient(mlflow_uri).get_metric_history(resumed.parent_run_id, "n_evaluated")
    assert [(m.step, m.value) for m in history] == [(0, 3), (1, 5)]
    # what the next resume reads when --n-trials is left out (the command an interruption prints leaves it out): 5, not 3
    from autoq.engine.resume import read_settings

    stored = read_settings(options["storage"], "w")
    assert stored["n_trials"] == 5 and stored["tracking_uri"] == resumed.tracking_uri
    assert resumed.tracking_uri.startswith("sqlite:////")  # absolute: the same store from any folder


def test_a_resume_continues_its_own_run_not_a_namesakes_in_another_storage(digits, tmp_path, mlflow_uri, capsys):
    """Study names are unique in one Optuna storage only: the resume of 'nightly' in b.db reopened a.db's 'nightly'
    (the oldest of the name), logged its trials there and deleted that search's child runs."""
    common = dict(budget="4.5bits", seed_from="none", tracking_uri=mlflow_uri, study_name="nightly", progress=False)
    a = autoq.search("digits-cnn", n_trials=6, storage=f"sqlite:///{tmp_path / 'a.db'}", **common)
    b = autoq.search("digits-cnn", n_trials=3, storage=f"sqlite:///{tmp_path / 'b.db'}", **common)
    client = MlflowClient(mlflow_uri)
    assert len(child_runs(client, a.parent_run_id)) == 6
    again = autoq.search("digits-cnn", n_trials=4, storage=f"sqlite:///{tmp_path / 'b.db'}", resume=True, **common)
    assert again.parent_run_id == b.parent_run_id != a.parent_run_id
    assert len(child_runs(client, a.parent_run_id)) == 6 and len(child_runs(client, b.parent_run_id)) == 4
    # a name two searches hold is refused where no storage tells them apart, listing both runs
    from autoq.cli import main

    assert main(["pareto", "nightly", "--tracking-uri", mlflow_uri]) == 2
    err = capsys.readouterr().err
    assert "2 searches in this experiment are named 'nightly'" in err and a.parent_run_id in err and b.parent_run_id in err


def test_a_resume_does_not_compute_a_table_only_the_first_sessions_seeds_used(digits, tmp_path, monkeypatch):
    """The resumed study keeps its enqueued seeds: the table was computed again (minutes on MiniLM) and never read."""
    monkeypatch.setenv("AUTOQ_CACHE_DIR", str(tmp_path / "cache"))
    options = dict(budget="4.5bits", seed_from="sqnr", tracking_uri=None, storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="t",
                   progress=False)
    autoq.search("digits-cnn", n_trials=3, **options)
    tables = list((tmp_path / "cache" / "sensitivity").glob("sqnr-*.json"))
    assert len(tables) == 1
    tables[0].unlink()
    assert len(autoq.search("digits-cnn", n_trials=5, resume=True, **options).points) == 5
    assert not list((tmp_path / "cache" / "sensitivity").glob("sqnr-*.json"))
    autoq.search("digits-cnn", n_trials=3, **{**options, "study_name": "g", "strategy": "greedy"})
    autoq.search("digits-cnn", n_trials=4, resume=True, **{**options, "study_name": "g", "strategy": "greedy"})
    assert list((tmp_path / "cache" / "sensitivity").glob("sqnr-*.json"))  # greedy solves on it: read (here, cached) again


def test_a_resume_logs_the_unquantized_quality_a_run_lacks(digits, tmp_path, mlflow_uri):
    """It is logged when a search starts now; a run an earlier autoq started and that was killed before its end has
    none, and a resume (which does not start a run) left it 'not recorded' for good."""
    import sqlite3

    options = dict(budget="4.5bits", seed_from="none", tracking_uri=mlflow_uri, storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="r",
                   progress=False)
    first = autoq.search("digits-cnn", n_trials=2, **options)
    with sqlite3.connect(mlflow_uri.removeprefix("sqlite:///")) as db:  # as an earlier autoq, killed, left it
        for table in ("metrics", "latest_metrics"):
            db.execute(f"DELETE FROM {table} WHERE key = 'reference_quality'")
    assert "reference_quality" not in MlflowClient(mlflow_uri).get_run(first.parent_run_id).data.metrics
    autoq.search("digits-cnn", n_trials=3, resume=True, **options)
    history = MlflowClient(mlflow_uri).get_metric_history(first.parent_run_id, "reference_quality")
    assert [m.value for m in history] == [pytest.approx(first.reference_quality)]


def test_a_search_moved_with_its_stores_resumes_into_its_own_parent_run(digits, tmp_path):
    """After 'mv a b' the parent run's optuna_storage param named the old path: the resume started a second parent run of
    the same name, logged every finished trial again, and 'autoq pareto NAME' then refused the name as ambiguous. The
    study now records its parent run's id. MLflow keeps artifact locations absolute: until the old place is linked to
    the new, the resume is refused (it wrote the new artifacts to the old path, bringing back a folder of them alone)."""
    import shutil
    import subprocess

    from autoq.tracking.runs import trial_runs

    first = tmp_path / "a"
    options = dict(budget="4.5bits", study_name="moved", seed_from="none", progress=False)
    before = autoq.search("digits-cnn", n_trials=3, tracking_uri=f"sqlite:///{first / 'mlflow.db'}", **options)
    moved = tmp_path / "b"
    first.rename(moved)
    uri, storage = f"sqlite:///{moved / 'mlflow.db'}", f"sqlite:///{moved / 'optuna.db'}"
    with pytest.raises(AutoqError, match="this MLflow store was moved: .*where it reads them; .*ln -sfn"):  # autoq pareto, export
        autoq.SearchResult.from_mlflow(before.parent_run_id, uri)  # (an MlflowException traceback, or "has no assignment.json")
    with pytest.raises(AutoqError, match="this MLflow store was moved") as info:
        autoq.search("digits-cnn", n_trials=5, tracking_uri=uri, storage=storage, resume=True, **options)
    assert not first.exists()  # refused before anything was written there
    link = str(info.value).rsplit("link the old place to the new first: ", 1)[1]
    subprocess.run(link, shell=True, check=True)
    result = autoq.search("digits-cnn", n_trials=5, tracking_uri=uri, storage=storage, resume=True, **options)
    client = MlflowClient(uri)
    assert [r.info.run_id for r in _parents(client, "moved")] == [result.parent_run_id]
    numbers = [int(r.data.tags["autoq.trial"]) for r in trial_runs(client, result.parent_run_id)]
    assert len(numbers) == len(set(numbers)) == len(result.points) == 5  # none logged twice
    assert autoq.SearchResult.from_mlflow(result.parent_run_id, uri) == result  # every artifact found
    # a copy of the whole folder beside its original would write into the original's artifacts: refused
    shutil.copytree(moved, tmp_path / "d")
    with pytest.raises(AutoqError, match="this MLflow store is a copy of the one beside .*--experiment NAME"):
        autoq.search("digits-cnn", n_trials=6, tracking_uri=f"sqlite:///{tmp_path / 'd' / 'mlflow.db'}",
                     storage=f"sqlite:///{tmp_path / 'd' / 'optuna.db'}", resume=True, **options)
    # a copy of the storage, its original in place, is another search: its own parent run, the original's trials untouched
    copy = tmp_path / "c"
    copy.mkdir()
    shutil.copy(moved / "optuna.db", copy / "optuna.db")
    forked = autoq.search("digits-cnn", n_trials=6, tracking_uri=uri, storage=f"sqlite:///{copy / 'optuna.db'}", resume=True, **options)
    assert forked.parent_run_id != result.parent_run_id
    assert sorted(int(r.data.tags["autoq.trial"]) for r in trial_runs(client, result.parent_run_id)) == sorted(numbers)


def test_a_resume_with_more_trials_evaluates_the_baselines_the_first_session_left_out(digits, tmp_path):
    """A first session with fewer trials than uniform baselines enqueued only some; a resume enqueues no seeds, so the
    others were never evaluated however far it went, and the summary kept saying "Only 2 of the 6"."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    options = dict(budget="4.5bits", tracking_uri=None, storage=storage, study_name="few", seed_from="none", progress=False)
    first = autoq.search("digits-cnn", n_trials=2, **options)
    evaluated, within = first.uniform_coverage
    assert evaluated == 2 < within
    again = autoq.search("digits-cnn", n_trials=within + 2, resume=True, **options)
    assert again.uniform_coverage == (within, within)


def test_a_resume_with_more_trials_enqueues_the_seeds_the_first_session_left_out(digits, tmp_path, monkeypatch):
    """A first session of no more trials than baselines enqueued no seeds (and computed no table); its resume to more
    trials enqueued none either, so the sampler ran unseeded where a fresh search of as many trials was seeded."""
    monkeypatch.setenv("AUTOQ_CACHE_DIR", str(tmp_path / "cache"))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    options = dict(budget="3.5bits", tracking_uri=None, storage=storage, progress=False)

    def seeded(name: str) -> tuple[int, int]:
        trials = optuna.load_study(study_name=name, storage=storage).trials
        return sum(bool(t.user_attrs.get("seeded")) for t in trials), sum(t.state.name == "COMPLETE" for t in trials)

    first = autoq.search("digits-cnn", n_trials=4, study_name="small", **options)
    _, within = first.uniform_coverage
    assert within == 4 and seeded("small") == (4, 4)  # every trial a baseline: no table, no seed
    autoq.search("digits-cnn", n_trials=12, study_name="small", resume=True, **options)
    autoq.search("digits-cnn", n_trials=12, study_name="fresh", **options)
    assert seeded("small") == seeded("fresh") == (12, 12)  # 4 baselines and 8 seeds from the table, as a fresh search has
    assert list((tmp_path / "cache" / "sensitivity").glob("fisher-*.json"))
    autoq.search("digits-cnn", n_trials=14, study_name="fresh", resume=True, **options)
    assert seeded("fresh") == (14, 14)  # 10 seeds now: the 8 held and 2 more, not a second 10


def test_a_space_file_edited_since_is_refused_and_a_relative_one_resumes_from_another_folder(digits, tmp_path, monkeypatch):
    """An edited YAML under the same name passed the path comparison: Optuna's 'CategoricalDistribution does not support
    dynamic value space' traceback, and baselines of the new space left WAITING broke every later resume. A relative path
    stored as given failed the printed resume command in any other folder."""
    (tmp_path / "run").mkdir()
    (tmp_path / "elsewhere").mkdir()
    text = _default_yaml()
    space = tmp_path / "run" / "myspace.yaml"
    space.write_text(text)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    kwargs = dict(budget="3.5bits", tracking_uri=None, storage=storage, study_name="sp", progress=False, seed_from="none")
    monkeypatch.chdir(tmp_path / "run")
    autoq.search("digits-cnn", space="myspace.yaml", n_trials=3, **kwargs)
    monkeypatch.chdir(tmp_path / "elsewhere")  # the stored path is absolute: from here, by that path, it resumes
    assert len(autoq.search("digits-cnn", space=str(space), n_trials=4, resume=True, **kwargs).points) == 4
    space.write_text(text.replace("methods: [rtn-mse]", "methods: [rtn-mse, rtn-minmax]", 1))  # every stored trial still fits
    before = _states(storage, "sp")
    with pytest.raises(AutoqError, match="cannot resume 'sp': the search space .*myspace.yaml' gives the layers other options"):
        autoq.search("digits-cnn", space=str(space), n_trials=6, resume=True, **kwargs)
    assert _states(storage, "sp") == before  # nothing enqueued, nothing marked
    space.write_text(text.replace("bits: [2, 3, 4, 5, 6, 8]", "bits: [8, 6, 5, 4, 3, 2]", 1))  # the same options, reordered
    with pytest.raises(AutoqError, match=r"other options than its trials were searched in, or the same ones in another order, which "
                                         r"Optuna's choices keep"):  # 'other options' alone read as a wrong refusal
        autoq.search("digits-cnn", space=str(space), n_trials=6, resume=True, **kwargs)
    space.write_text(text)
    assert len(autoq.search("digits-cnn", space=str(space), n_trials=5, resume=True, **kwargs).points) == 5


def test_a_resume_given_only_the_tracking_store_finds_the_storage_its_run_records(digits, tmp_path, mlflow_uri, monkeypatch):
    """A search run with ``--storage`` elsewhere, resumed from another folder with ``--tracking-uri`` alone: the resume
    looked beside the tracking store and said there was no such search, though the store's run records the storage."""
    from autoq.cli import main

    for folder in ("run", "elsewhere", "run/sub dir"):
        (tmp_path / folder).mkdir()
    storage = f"sqlite:///{tmp_path / 'run' / 'sub dir' / 'o.db'}"
    monkeypatch.chdir(tmp_path / "run")
    assert main(["search", "--model", "digits-cnn", "--n-trials", "2", "--tracking-uri", mlflow_uri, "--storage", storage,
                 "--study-name", "kept", "--seed-from", "none", "--no-progress"]) == 0
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["search", "--resume", "kept", "--n-trials", "3", "--tracking-uri", mlflow_uri, "--no-progress"]) == 0
    assert _states(storage, "kept") == Counter({"COMPLETE": 3})
    assert not (tmp_path / "optuna.db").exists()  # the default beside the tracking store: looked at, not made
    assert main(["search", "--resume", "other", "--tracking-uri", mlflow_uri, "--no-progress"]) == 2  # no run records it


def _default_yaml() -> str:
    from importlib import resources

    return resources.files("autoq.search_spaces").joinpath("default.yaml").read_text()


def test_ctrl_c_before_the_first_trial_marks_the_parent_run_killed(digits, tmp_path, mlflow_uri, monkeypatch):
    """Its parent run was left RUNNING ('autoq runs' showed RUNNING*) after 'interrupted before this session's first trial'."""
    from autoq.engine import runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "TrialBook", interrupted)  # the last step before the trials, after the parent run is made
    with pytest.raises(KeyboardInterrupt, match="interrupted before this session's first trial"):
        autoq.search("digits-cnn", budget="4.5bits", n_trials=3, tracking_uri=mlflow_uri, storage=f"sqlite:///{tmp_path / 'o.db'}",
                     study_name="early", progress=False, seed_from="none")
    (parent,) = _parents(MlflowClient(mlflow_uri), "early")
    assert parent.info.status == "KILLED"
    wall = optuna.load_study(study_name="early", storage=f"sqlite:///{tmp_path / 'o.db'}").user_attrs["autoq.wall_seconds"]
    assert wall > 0


def test_a_resume_that_makes_the_parent_run_logs_the_table_that_seeded_it(digits, tmp_path, mlflow_uri, monkeypatch):
    """A Ctrl-C after the seeds were stored and before the parent run was made: the resume made the run, with
    seed_from=sqnr among its params and no seed_table.json (the table was not read again on a resume)."""
    from autoq.engine import runner

    storage = f"sqlite:///{tmp_path / 'o.db'}"
    options = dict(budget="4.5bits", n_trials=3, tracking_uri=mlflow_uri, storage=storage, study_name="unlogged", progress=False,
                   seed_from="sqnr")
    with monkeypatch.context() as patch:
        patch.setattr(runner, "start_tracking", lambda *args, **kwargs: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt, match="interrupted before this session's first trial"):
            autoq.search("digits-cnn", **options)
    client = MlflowClient(mlflow_uri)
    autoq.search("digits-cnn", resume=True, **options)
    (parent,) = _parents(client, "unlogged")
    assert parent.data.params["seed_from"] == "sqnr"
    logged = SensitivityTable.load(client.download_artifacts(parent.info.run_id, "seed_table.json", str(tmp_path)))
    assert logged.metric == "sqnr" and len(logged.entries) > 0


def test_ctrl_c_as_the_parent_run_is_made_marks_it_killed(digits, tmp_path, mlflow_uri, monkeypatch):
    """A Ctrl-C just after the parent run was created (here as its search space is logged) left it RUNNING: the caller
    had no tracker yet to mark it stopped ('autoq runs' then showed RUNNING*, its process gone)."""
    real = MlflowClient.log_text

    def interrupted(self, run_id, text, artifact_file, *args, **kwargs):
        if artifact_file == "search_space.json":
            raise KeyboardInterrupt
        return real(self, run_id, text, artifact_file, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_text", interrupted)
    with pytest.raises(KeyboardInterrupt, match="interrupted before this session's first trial"):
        autoq.search("digits-cnn", budget="4.5bits", n_trials=3, tracking_uri=mlflow_uri, storage=f"sqlite:///{tmp_path / 'o.db'}",
                     study_name="making", progress=False, seed_from="none")
    (parent,) = _parents(MlflowClient(mlflow_uri), "making")
    assert parent.info.status == "KILLED"


def test_an_error_before_the_first_trial_ends_a_new_run_failed_and_a_reopened_one_as_it_was(digits, tmp_path, mlflow_uri, monkeypatch):
    """An error other than Ctrl-C or a store gone, before the trials (a locked storage, a trial a resume cannot read),
    left the parent run RUNNING: a new search's for good, and a finished search's, reopened, RUNNING again."""
    from autoq.engine import runner

    storage = f"sqlite:///{tmp_path / 'o.db'}"
    kwargs = dict(budget="4.5bits", tracking_uri=mlflow_uri, storage=storage, progress=False, seed_from="none")
    real = runner.TrialBook

    def broken(*args, **kwargs):
        raise RuntimeError("database is locked")

    monkeypatch.setattr(runner, "TrialBook", broken)  # after the parent run is made or reopened
    with pytest.raises(RuntimeError, match="database is locked"):
        autoq.search("digits-cnn", n_trials=2, study_name="fails", **kwargs)
    (parent,) = _parents(MlflowClient(mlflow_uri), "fails")
    assert parent.info.status == "FAILED"

    monkeypatch.setattr(runner, "TrialBook", real)
    autoq.search("digits-cnn", n_trials=2, study_name="done", **kwargs)
    monkeypatch.setattr(runner, "TrialBook", broken)
    with pytest.raises(RuntimeError, match="database is locked"):
        autoq.search("digits-cnn", n_trials=3, study_name="done", resume=True, **kwargs)
    (parent,) = _parents(MlflowClient(mlflow_uri), "done")
    assert parent.info.status == "FINISHED"

    def broken_reopen(self, *args, **kwargs):
        raise RuntimeError("cannot read the run")

    from autoq.engine import parent_run

    monkeypatch.setattr(parent_run, "remember_run_id", broken_reopen)  # in start_tracking, after the run was reopened
    with pytest.raises(RuntimeError, match="cannot read the run"):
        autoq.search("digits-cnn", n_trials=3, study_name="done", resume=True, **kwargs)
    (parent,) = _parents(MlflowClient(mlflow_uri), "done")
    assert parent.info.status == "FINISHED"


def test_ctrl_c_before_the_parent_run_says_only_the_optuna_study_keeps_the_search(digits, tmp_path, mlflow_uri, monkeypatch):
    """Interrupted before MLflow held anything, the note said 'kept in the Optuna study and MLflow'; 'autoq runs' then
    did not list the search. It names the Optuna study alone, and its resume command."""
    from autoq.engine import runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_calibration_digest", interrupted)  # the first step after the study is stored
    with pytest.raises(KeyboardInterrupt, match=r"first trial, kept in the Optuna study; continue with: autoq search --resume before"):
        autoq.search("digits-cnn", budget="4.5bits", n_trials=3, tracking_uri=mlflow_uri, storage=f"sqlite:///{tmp_path / 'o.db'}",
                     study_name="before", progress=False, seed_from="none")
    experiment = MlflowClient(mlflow_uri).get_experiment_by_name("autoq")
    assert experiment is None or _parents(MlflowClient(mlflow_uri), "before") == []


def test_the_command_line_refuses_a_study_with_nothing_to_resume_before_loading_a_model(tmp_path):
    """A search killed while it set up stored no settings: the resume loaded the default model (MiniLM) before refusing."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="bare", storage=storage)
    proc = subprocess.run(_cli("--resume", "bare", "--storage", storage, "--tracking-uri", "none", cwd=tmp_path), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "study 'bare' in" in proc.stderr and "was not started by autoq search" in proc.stderr, proc.stderr
    assert "loading" not in proc.stderr


def test_ctrl_c_in_a_trial_fails_it_as_interrupted_and_the_resume_retries_it(digits, tmp_path, capsys):
    """The trial in flight stayed RUNNING in Optuna after the search stopped (optuna-dashboard, load_study); Optuna's own
    optimize fails an interrupted trial. Failed as interrupted, it is queued again, and the resume evaluates it."""
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    calls = []

    def evaluate(model):
        calls.append(True)
        if len(calls) == 4:  # the reference, two trials, then Ctrl-C in the third
            raise KeyboardInterrupt
        return digits.evaluate(model)

    options = dict(budget="4.5bits", n_trials=5, storage=storage, study_name="cut", tracking_uri=None, progress=False, seed_from="none")
    with pytest.raises(KeyboardInterrupt, match="2 finished trial"):
        autoq.search(digits.model, digits.calibration, evaluate, **options)
    trials = optuna.load_study(study_name="cut", storage=storage).trials
    assert _states(storage, "cut") == Counter({"COMPLETE": 2, "FAIL": 1, "WAITING": len(trials) - 3})
    [cut] = [t for t in trials if t.state.name == "FAIL"]
    assert cut.number == 2 and cut.user_attrs["autoq.interrupted"]
    assert any(t.state.name == "WAITING" and t.user_attrs.get("autoq.retry_of") == 2 and t.system_attrs.get("fixed_params") == cut.params
               for t in trials)
    capsys.readouterr()
    result = autoq.search(digits.model, digits.calibration, evaluate, resume=True, **options)
    assert "2 finished trial(s) kept, 1 interrupted one(s) to retry; 3 more to evaluate" in capsys.readouterr().err
    assert len(result.points) == 5 and cut.params in [{k: c.name for k, c in p.assignment.items()} for p in result.points]
    assert _states(storage, "cut")["RUNNING"] == 0


def test_a_base_exception_in_a_trial_fails_it_as_interrupted_too(digits, tmp_path):
    """A metric's sys.exit (or any BaseException other than Ctrl-C) left the trial in flight RUNNING in Optuna's storage
    for good (optuna-dashboard showed it running); it is failed and queued for a resume as a Ctrl-C's is."""
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    calls = []

    def evaluate(model):
        calls.append(True)
        if len(calls) == 4:  # the reference, two trials, then an exit in the third
            sys.exit(3)
        return digits.evaluate(model)

    options = dict(budget="4.5bits", n_trials=5, storage=storage, study_name="exit", tracking_uri=None, progress=False, seed_from="none")
    with pytest.raises(SystemExit):
        autoq.search(digits.model, digits.calibration, evaluate, **options)
    trials = optuna.load_study(study_name="exit", storage=storage).trials
    assert _states(storage, "exit") == Counter({"COMPLETE": 2, "FAIL": 1, "WAITING": len(trials) - 3})
    [cut] = [t for t in trials if t.state.name == "FAIL"]
    assert any(t.state.name == "WAITING" and t.user_attrs.get("autoq.retry_of") == cut.number for t in trials)


def test_a_resume_whose_run_was_deleted_is_refused_not_logged_twice(digits, tmp_path, mlflow_uri):
    """The search's run deleted in the UI: a resume started a second run and logged every finished trial again,
    beside the old trial runs, still active (a filter on tags.pareto listed each frontier point twice)."""
    options = dict(budget="4.5bits", seed_from="none", tracking_uri=mlflow_uri, storage=f"sqlite:///{tmp_path / 'optuna.db'}",
                   study_name="gone", progress=False)
    first = autoq.search("digits-cnn", n_trials=3, **options)
    client = MlflowClient(mlflow_uri)
    client.delete_run(first.parent_run_id)
    with pytest.raises(AutoqError, match=rf"the MLflow run of search 'gone', '{first.parent_run_id}', is deleted; restore it "
                                         rf"\(MLFLOW_TRACKING_URI={re.escape(mlflow_uri)} mlflow runs restore --run-id {first.parent_run_id}, or in the UI\)"):
        autoq.search("digits-cnn", n_trials=5, resume=True, **options)
    assert _parents(client, "gone") == []  # no second run
    client.restore_run(first.parent_run_id)
    again = autoq.search("digits-cnn", n_trials=5, resume=True, **options)
    assert again.parent_run_id == first.parent_run_id and len(child_runs(client, first.parent_run_id)) == 5


def test_a_killed_trials_retry_runs_before_the_seeds_still_waiting(tmp_path):
    """Optuna runs waiting trials by number: the retry of a baseline killed mid-trial waited behind every seed, and a
    resume with fewer trials never evaluated it ('only 3 of the 4 uniform assignments within the budget')."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    data = [torch.randn(8, 16, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    options = dict(budget="10bits", seed_from="none", tracking_uri=None, storage=storage, study_name="q", progress=False)
    autoq.search(model, data, n_trials=1, **options)
    study = optuna.load_study(study_name="q", storage=storage)
    assert not study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    queued = [{"0": f"int{b}-ch-asym:rtn-mse", "2": f"int{b}-ch-asym:rtn-mse"} for b in (5, 6, 8)]
    for params in queued:  # seeds as a first session enqueues them (its one trial was another)
        study.enqueue_trial(params, user_attrs={"seeded": True})
    study.ask()  # the first, killed as it ran: left RUNNING
    resumed = autoq.search(model, data, n_trials=2, resume=True, **options)
    second = [p for p in resumed.points if p.trial != 0]
    assert [dict((n, c.name) for n, c in p.assignment.items()) for p in second] == [queued[0]]  # the killed one, not the next seed
    trials = resumed.study().trials
    assert trials[second[0].trial].user_attrs.get("autoq.retry_of") == 1 and trials[second[0].trial].user_attrs.get("seeded")
    waiting = [t for t in trials if t.state.name == "WAITING"]
    assert [t.system_attrs["fixed_params"] for t in waiting][:2] == queued[1:]  # the rest keep their order, none lost or doubled
    assert not any(t.user_attrs.get("autoq.retry_of") for t in waiting) and all(t.user_attrs.get("seeded") for t in waiting)


def test_a_device_preset_resumes_in_any_case_and_a_table_file_by_its_path(tmp_path, monkeypatch):
    """--device H200 resuming a --device h200 search was refused as another setting, though both name one preset."""
    from autoq.engine.resume import _same

    monkeypatch.chdir(tmp_path)
    assert _same("device", "h200", "H200") and _same("device", "roofline:H100", "roofline:h100")
    assert not _same("device", "h200", "h100")
    (tmp_path / "t.json").write_text("{}")
    assert _same("device", str(tmp_path / "t.json"), "t.json")  # a relative path of the folder it ran in
    assert not _same("device", str(tmp_path / "t.json"), str(tmp_path / "T.json"))  # files: as the file system tells them


def test_a_resume_on_a_latency_table_that_prices_otherwise_is_refused(tmp_path):
    """The table re-measured between sessions: the resume went on, its new trials priced three times the kept ones'
    under one Pareto front, and the summary's best latency contradicted its trial's own."""
    import json

    from autoq.latency.resolve import TABLES_DIR

    table = json.loads((TABLES_DIR / "h200.json").read_text())
    path = tmp_path / "table.json"
    path.write_text(json.dumps(table))
    options = dict(budget="4.5bits", device=str(path), tracking_uri=None, storage=f"sqlite:///{tmp_path / 'optuna.db'}",
                   seed_from="none", progress=False, study_name="priced")
    autoq.search("digits-cnn", n_trials=2, **options)
    for row in table["rows"]:
        for key in ("median_us", "p20_us", "p80_us"):
            if key in row:
                row[key] *= 3
    path.write_text(json.dumps(table))
    with pytest.raises(AutoqError, match=r"^cannot resume 'priced': the latency source '.*table.json' prices the layers' options "
                                         r"otherwise than when its trials were scored \(its table re-measured or rewritten since"):
        autoq.search("digits-cnn", n_trials=3, resume=True, **options)
    path.write_text(json.dumps(json.loads((TABLES_DIR / "h200.json").read_text())))  # as it was: the resume goes on
    assert len(autoq.search("digits-cnn", n_trials=3, resume=True, **options).points) == 3


def test_a_resumed_searchs_bar_counts_its_own_trials_in_the_rate(tmp_path, capsys):
    """The kept trials were one update of the bar: its rate read hundreds of trials a second, and the ETA 00:00, for as
    many updates again (tqdm's dynamic miniters)."""
    import re

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    options = dict(budget="4.5bits", tracking_uri=None, storage=storage, seed_from="none")
    first = autoq.search("digits-cnn", n_trials=12, progress=False, **options)
    capsys.readouterr()
    autoq.search("digits-cnn", n_trials=16, study_name=first.study_name, resume=True, progress=True, **options)
    err = capsys.readouterr().err
    bars = re.findall(r"autoq search:.*?\| *(\d+)/16 \[[^<]*<[^,]*, *([\d.]+)(s/trial|trial/s)", err)
    assert "| 12/16 [00:00<?, ?trial/s" in err and bars and bars[-1][0] == "16"  # it starts at the kept 12, with no rate yet
    seconds_per_trial = [float(v) if unit == "s/trial" else 1 / float(v) for _, v, unit in bars]
    assert min(seconds_per_trial) > 0.02  # a digits trial takes about 0.07 s here; with the 12 kept counted, the bar read 0.002-0.009


def test_a_resume_given_only_its_storage_logs_where_the_search_logged(tmp_path, monkeypatch, capsys):
    """--resume NAME --storage URL from another folder opened the working folder's mlflow.db and a second parent run (and a
    search run with --tracking-uri none made one there): the stored tracking URI was never read."""
    from autoq.cli import main

    storage = f"sqlite:///{tmp_path / 'o.db'}"
    mlflow_uri = f"sqlite:///{tmp_path / 'ml' / 'mlflow.db'}"
    (tmp_path / "ml").mkdir()
    (tmp_path / "other").mkdir()
    base = ["search", "--model", "digits-cnn", "--budget", "4.5", "--seed-from", "none", "--no-progress", "--storage", storage]
    assert main([*base, "--tracking-uri", mlflow_uri, "--n-trials", "3", "--study-name", "logged"]) == 0
    assert main([*base, "--tracking-uri", "none", "--n-trials", "3", "--study-name", "unlogged"]) == 0
    first = capsys.readouterr().out
    monkeypatch.chdir(tmp_path / "other")
    for name in ("logged", "unlogged"):
        assert main(["search", "--resume", name, "--storage", storage, "--n-trials", "4", "--no-progress"]) == 0
    resumed = capsys.readouterr().out
    parent = first.split("MLflow: parent run ")[1].split()[0]
    assert resumed.count(f"MLflow: parent run {parent} in {mlflow_uri}") == 1 and resumed.count("MLflow:") == 1
    assert list((tmp_path / "other").iterdir()) == []  # no store made in the working folder
    assert len(MlflowClient(mlflow_uri).search_runs([MlflowClient(mlflow_uri).get_run(parent).info.experiment_id])) == 1 + 4


def test_a_resume_in_a_moved_folder_does_not_take_the_old_place_of_its_store(tmp_path, monkeypatch, capsys):
    """With the stored tracking URI taken on resume, 'mv a b; cd b; autoq search --resume NAME' looked for the storage
    beside the old path ('no Optuna storage at .../a/optuna.db ... run this in the folder where it ran', which it was),
    and with --storage given made a.../mlflow.db again and a second parent run. The store left where it is says it moved."""
    from autoq.cli import main

    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    assert main(["search", "--model", "digits-cnn", "--n-trials", "2", "--study-name", "s1", "--seed-from", "none", "--no-progress"]) == 0
    (tmp_path / "a").rename(tmp_path / "b")
    monkeypatch.chdir(tmp_path / "b")
    capsys.readouterr()
    for extra in ([], ["--storage", "sqlite:///optuna.db"]):
        assert main(["search", "--resume", "s1", "--n-trials", "3", "--no-progress", *extra]) == 2
        assert "this MLflow store was moved" in capsys.readouterr().err
        assert not (tmp_path / "a").exists()


def test_a_python_resume_that_names_no_tracking_uri_logs_where_the_search_logged(tmp_path, monkeypatch):
    """autoq.search(..., resume=True, study_name=..., storage=...) from another folder opened that folder's mlflow.db and
    a second parent run: the same call its interruption message advises."""
    storage = f"sqlite:///{tmp_path / 'a' / 'optuna.db'}"
    (tmp_path / "a").mkdir()
    (tmp_path / "elsewhere").mkdir()
    options = dict(budget="4.5bits", seed_from="none", progress=False, storage=storage)
    first = autoq.search("digits-cnn", n_trials=2, study_name="p1", tracking_uri=f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}", **options)
    unlogged = autoq.search("digits-cnn", n_trials=2, study_name="p2", tracking_uri=None, **options)
    monkeypatch.chdir(tmp_path / "elsewhere")
    again = autoq.search("digits-cnn", n_trials=3, study_name="p1", resume=True, **options)
    assert (again.parent_run_id, again.tracking_uri) == (first.parent_run_id, first.tracking_uri)
    assert autoq.search("digits-cnn", n_trials=3, study_name="p2", resume=True, **options).tracking_uri is None is unlogged.tracking_uri
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_a_resume_in_another_mlflow_store_is_refused_and_one_asking_fewer_trials_keeps_the_target(digits, tmp_path, mlflow_uri):
    """A resume given another store opened a second parent run there, logged the kept trials again, and the next plain
    resume went back to the first store. One asking for fewer trials than were complete stored that count: a later
    resume that left --n-trials out evaluated nothing ('--n-trials 2 are all done'), the search's target lost."""
    from autoq.engine.resume import read_settings, remember_counts

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    options = dict(budget="4.5bits", seed_from="none", storage=storage, study_name="one", progress=False)
    first = autoq.search("digits-cnn", n_trials=3, tracking_uri=mlflow_uri, **options)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    with pytest.raises(AutoqError, match=rf"cannot resume 'one' in another MLflow store: it logs to {mlflow_uri} \(its parent run "
                                         rf"{first.parent_run_id}\), and {other} would get a second parent run"):
        autoq.search("digits-cnn", n_trials=5, resume=True, tracking_uri=other, **options)
    assert not (tmp_path / "other.db").exists()
    copy = tmp_path / "copy.db"  # a copy of the store holds the search's run: it goes on there
    copy.write_bytes((tmp_path / "mlflow.db").read_bytes())
    assert autoq.search("digits-cnn", n_trials=2, resume=True, tracking_uri=f"sqlite:///{copy}", **options).parent_run_id == first.parent_run_id
    assert read_settings(storage, "one")["n_trials"] == 3  # 2 asked, 3 complete: nothing evaluated, the target kept
    # asking for exactly as many as are done (a search stopped at 2 of 3, resumed with --n-trials 2) keeps it too
    remember_counts(storage, "one", n_trials=2, max_retries=read_settings(storage, "one")["max_retries"], n_done=2)
    assert read_settings(storage, "one")["n_trials"] == 3
    resumed = autoq.search("digits-cnn", n_trials=4, resume=True, tracking_uri=mlflow_uri, **options)
    assert len(resumed.points) == 4 and read_settings(storage, "one")["n_trials"] == 4
    assert len(autoq.search("digits-cnn", n_trials=5, resume=True, tracking_uri=None, **options).points) == 5  # no MLflow: nothing twice


def test_a_python_resume_without_counts_takes_the_stored_ones(digits, tmp_path):
    """n_trials and max_retries left out ran to SearchConfig's 100 trials and stored 100 as the target (a 300-trial search
    stopped at 5 went to 100, and the command line's resume then said 'all done'); the command line takes the stored ones."""
    from autoq.engine.resume import started_settings

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    kwargs = dict(tracking_uri=None, storage=storage, study_name="counts", progress=False, seed_from="none")
    autoq.search("digits-cnn", budget="4.5bits", n_trials=6, max_retries=0, **kwargs)
    resumed = autoq.search("digits-cnn", resume=True, **kwargs)
    assert len(resumed.points) == 6  # its own target, met: nothing more evaluated
    stored = started_settings(storage, "counts")
    assert (stored["n_trials"], stored["max_retries"]) == (6, 0)
    more = autoq.search("digits-cnn", resume=True, n_trials=8, **kwargs)  # given: taken, as --n-trials is
    assert len(more.points) == 8 and started_settings(storage, "counts")["n_trials"] == 8


def test_a_resume_through_a_config_at_its_defaults_says_which_stored_settings_it_took(digits, tmp_path, capsys):
    """A config's field at SearchConfig's default cannot be told from one left unset: SearchConfig(resume=True,
    n_trials=100) ran to the stored target, nothing evaluated and nothing said, where n_trials=100 as a keyword ran on."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    kwargs = dict(tracking_uri=None, storage=storage, study_name="cfg", progress=False, seed_from="none")
    autoq.search("digits-cnn", budget="5bits", n_trials=2, **kwargs)
    capsys.readouterr()
    config = autoq.SearchConfig(resume=True, n_trials=100, **kwargs)
    assert len(autoq.search("digits-cnn", config=config).points) == 2
    err = capsys.readouterr().err
    assert ("autoq: note: resuming 'cfg': n_trials=2 from its stored settings; the config's n_trials=100 is SearchConfig's "
            "default, which a config cannot tell from unset: pass n_trials=100 as a keyword beside config= to use it") in err
    assert "max_retries" not in err  # stored as the config holds it: nothing to say
    assert "budget" not in err and "tracking_uri" not in err  # a resume cannot change these: taken over the defaults, unsaid
    assert len(autoq.search("digits-cnn", config=config, n_trials=3, budget="5bits").points) == 3
    assert "n_trials" not in capsys.readouterr().err  # given as a keyword: taken, so nothing to say


def test_a_study_stored_with_a_servers_login_resumes_against_the_same_server(tmp_path, monkeypatch):
    """An older autoq stored the tracking URL whole, password included; the URL given now (stored without it) was taken
    for another store, and the resume refused ('cannot resume ... in another MLflow store', the same URL on both sides).
    And the same server named otherwise, login given, was asked without the login: a server that needs one said 401."""
    from autoq.engine import resume
    from autoq.engine.resume import RUN_ATTR, SETTINGS_ATTR, check_same_settings

    asked = []  # whether a store holds the run: no server here to ask
    monkeypatch.setattr(resume, "_holds_run", lambda uri, run_id: asked.append(uri) or "alice:pw@" in uri)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="team", storage=storage)
    study.set_user_attr(SETTINGS_ATTR, {"tracking_uri": "http://alice:pw@127.0.0.1:9"})
    study.set_user_attr(RUN_ATTR, "0" * 32)
    check_same_settings(storage, "team", {"tracking_uri": "http://127.0.0.1:9"})  # the same one, by its URL: nothing asked
    assert asked == []
    with pytest.raises(AutoqError, match="cannot resume 'team' in another MLflow store"):
        check_same_settings(storage, "team", {"tracking_uri": "http://127.0.0.1:10"})
    check_same_settings(storage, "team", {"tracking_uri": "http://localhost:9"}, "http://alice:pw@localhost:9")
    assert asked == ["http://127.0.0.1:10", "http://alice:pw@localhost:9"]


def test_a_server_that_asks_for_a_login_is_told_apart_from_one_that_is_down():
    """A resume reads the store without the login it was given first: the 401 said 'start it, or pass another --tracking-uri'."""
    from mlflow.exceptions import MlflowException

    from autoq.tracking.mlflow_logger import store_failed

    said = str(store_failed("http://alice:pw@127.0.0.1:9", MlflowException("UNAUTHENTICATED: You are not authenticated.")))
    assert "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in said and "alice" not in said and "start it" not in said
    assert "start it, or pass another --tracking-uri" in str(store_failed("http://127.0.0.1:9", MlflowException("Connection refused")))


def test_a_resume_that_seeds_from_a_table_says_so_beside_the_first_sessions_seed_from(tmp_path, mlflow_uri):
    """A first session of uniform baselines alone logged seed_from 'none' (its table skipped); the resume seeded its
    new trials from the fisher table, and the parent run still said 'none' (a param is set once)."""
    from mlflow.tracking import MlflowClient

    import autoq
    from autoq.engine.parent_run import SEEDED_FROM_TAG

    options = dict(budget="4.5bits", study_name="seeded", tracking_uri=mlflow_uri, progress=False)
    first = autoq.search("digits-cnn", n_trials=4, max_uniform_seeds=4, **options)
    run = MlflowClient(mlflow_uri).get_run(first.parent_run_id)
    assert run.data.params["seed_from"] == "none" and SEEDED_FROM_TAG not in run.data.tags
    autoq.search("digits-cnn", n_trials=6, max_uniform_seeds=4, resume=True, **options)
    assert MlflowClient(mlflow_uri).get_run(first.parent_run_id).data.tags[SEEDED_FROM_TAG] == "fisher"


def test_an_assignment_a_sampler_trial_or_a_waiting_one_holds_is_stored(tmp_path):
    """A resume enqueues only the baselines and seeds no trial holds: one the sampler proposed (its params) or one
    waiting in the queue (its fixed params) is not evaluated again."""
    from autoq.choice import Assignment
    from autoq.engine.resume import not_stored

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=storage)
    proposed = study.ask()
    proposed.suggest_categorical("x", ["int4-ch-asym:rtn-mse", "int8-ch-asym:rtn-mse"])
    study.tell(proposed, 1.0)
    study.enqueue_trial({"x": "int3-ch-asym:rtn-mse"})
    held = [Assignment({"x": proposed.params["x"]}), Assignment({"x": "int3-ch-asym:rtn-mse"})]
    new = Assignment({"x": "int2-ch-asym:rtn-mse"})
    assert not_stored(storage, "s", [*held, new]) == [new]
