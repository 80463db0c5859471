"""Reading a search back from MLflow: the result by parent run id, the parent by study name."""

from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

import autoq
from autoq.errors import AutoqError
from autoq.tracking.runs import find_search, reconcile_children, trial_runs


@pytest.fixture
def searched(mlflow_uri):
    return autoq.search("digits-cnn", budget="4.5bits", n_trials=12, seed=2, tracking_uri=mlflow_uri, study_name="reload-me", progress=False)


def test_result_reloads_from_mlflow_by_run_id(searched, mlflow_uri):
    loaded = autoq.SearchResult.from_mlflow(searched.parent_run_id, mlflow_uri)
    assert loaded == searched  # points, frontier, budget, names and counts; timings are not compared
    assert loaded.best == searched.best and loaded.best_uniform == searched.best_uniform
    assert pickle.loads(pickle.dumps(loaded)) == loaded
    assert loaded.covers(searched) and searched.covers(loaded)
    assert loaded.wall_seconds == pytest.approx(searched.wall_seconds)  # the time the search printed, set-up included


def test_a_local_store_is_read_in_place_and_another_downloaded(searched, mlflow_uri, monkeypatch, tmp_path):
    """One download (a copy) a trial: 'autoq pareto' of 2,100 trials took 15 s, 4 s read in place, the same table."""
    from mlflow.tracking import MlflowClient

    from autoq.tracking.runs import artifact_text

    def refuse(*args, **kwargs):
        raise AssertionError("downloaded")

    monkeypatch.setattr(MlflowClient, "download_artifacts", refuse)
    assert autoq.SearchResult.from_mlflow(searched.parent_run_id, mlflow_uri) == searched
    monkeypatch.undo()
    client = MlflowClient(mlflow_uri)
    run = trial_runs(client, searched.parent_run_id)[0]
    in_place = artifact_text(client, run, "assignment.json", str(tmp_path))
    (tmp_path / "d").mkdir()
    assert in_place == Path(client.download_artifacts(run.info.run_id, "assignment.json", str(tmp_path / "d"))).read_text()
    assert not list(tmp_path.glob("*.json"))  # nothing copied
    calls = []
    download = MlflowClient.download_artifacts
    monkeypatch.setattr(MlflowClient, "download_artifacts", lambda self, *args: calls.append(args) or download(self, *args))
    served = SimpleNamespace(info=SimpleNamespace(run_id=run.info.run_id, artifact_uri="mlflow-artifacts:/0/x/artifacts"))  # not a path here
    (tmp_path / "e").mkdir()
    assert artifact_text(client, served, "assignment.json", str(tmp_path / "e")) == in_place and len(calls) == 1


def test_find_search_and_reconcile(searched, mlflow_uri):
    client = MlflowClient(mlflow_uri)
    experiment_id = client.get_run(searched.parent_run_id).info.experiment_id
    assert find_search(client, experiment_id, "reload-me").info.run_id == searched.parent_run_id
    assert find_search(client, experiment_id, "nothing") is None
    # keep the first 10 evaluated trials: the children of the last 2 are deleted, the rest map to their runs
    first = sorted(p.trial for p in searched.points)[:10]
    kept = reconcile_children(client, searched.parent_run_id, first)
    assert sorted(kept) == first
    assert {p.run_id for p in searched.points if p.trial in first} == set(kept.values())
    assert len(trial_runs(client, searched.parent_run_id)) == 10


def test_unknown_run_is_a_clear_error(mlflow_uri):
    """A study name where a run id belongs is said to be one; a well-formed run id that is not there is not."""
    with pytest.raises(AutoqError, match=r"no MLflow run 'abc' in .* \(a run id is 32 hex digits, not a search's study name.*; `autoq runs --tracking-uri"):
        autoq.SearchResult.from_mlflow("abc", mlflow_uri)
    with pytest.raises(AutoqError, match="no MLflow run '0123456789abcdef0123456789abcdef' in [^(]*; `autoq runs"):
        autoq.SearchResult.from_mlflow("0123456789abcdef0123456789abcdef", mlflow_uri)


def test_a_missing_store_is_refused_and_not_created(tmp_path):
    db = tmp_path / "typo.db"
    with pytest.raises(AutoqError, match="no MLflow store at .*typo.db"):
        autoq.SearchResult.from_mlflow("abc", f"sqlite:///{db}")
    assert not db.exists()


def test_covers_compares_frontiers_and_of_equal_uniforms_the_fewer_bits_is_best(searched):
    from dataclasses import replace

    worse = replace(searched, frontier=tuple(replace(p, quality=p.quality - 0.1) for p in searched.frontier))
    assert searched.covers(worse) and not worse.covers(searched)
    # with a device, latency is the third objective: a frontier slower at every point did cover a faster one
    fast = replace(searched, frontier=tuple(replace(p, latency_us=100.0) for p in searched.frontier))
    slow = replace(searched, frontier=tuple(replace(p, latency_us=200.0) for p in searched.frontier))
    assert fast.covers(slow) and not slow.covers(fast)
    assert fast.covers(fast)  # equal latency matches, as equal quality and bits do
    # of uniform baselines of equal quality, the best is the one of fewer bits
    by_bits = {p.effective_bits: p for p in searched.points if p.uniform}
    first, other = by_bits[max(by_bits)], by_bits[min(by_bits)]  # the dearer first
    tied = replace(searched, points=(replace(first, quality=1.0), replace(other, quality=1.0)))
    assert tied.best_uniform.effective_bits == min(first.effective_bits, other.effective_bits)


def test_a_store_whose_artifacts_are_gone_is_one_line(searched, mlflow_uri, tmp_path, capsys):
    """'autoq pareto' raised MLflow's 'Failed to download artifacts' with a traceback, exit 1; an export blamed the run
    ('is it an autoq trial or search run?') for the store's missing folder."""
    from autoq.cli import main

    (tmp_path / "mlartifacts").rename(tmp_path / "elsewhere")
    gone = "has no artifact (assignment|frontier).json .*; every such run logs it, so this store's artifact folder was moved or deleted"
    with pytest.raises(AutoqError, match=gone):
        autoq.SearchResult.from_mlflow(searched.parent_run_id, mlflow_uri)
    for run_id in (searched.parent_run_id, searched.points[0].run_id):
        with pytest.raises(AutoqError, match=gone):
            autoq.export(None, run_id, tmp_path / "out", tracking_uri=mlflow_uri)
    capsys.readouterr()
    assert main(["pareto", "reload-me", "--tracking-uri", mlflow_uri]) == 2
    err = capsys.readouterr().err
    assert "moved or deleted" in err and "Traceback" not in err


def test_reconcile_keeps_the_first_log_of_a_trial_logged_twice(mlflow_uri):
    """A trial logged twice (its run logged, then again by a session that did not see it): the first, oldest log is
    kept, the run id the study recorded and the point's; the later one is deleted."""
    import time

    from autoq.choice import Assignment, LayerChoice
    from autoq.tracking import MlflowTracker

    one_layer = Assignment((("0", LayerChoice.from_name("int4-ch-asym:rtn-mse")),))
    tracker = MlflowTracker.open(mlflow_uri, "autoq")
    parent = tracker.start("s", {}, {"autoq.kind": "search"})
    first = tracker.log_trial(0, {"quality": 1.0}, {}, one_layer)
    time.sleep(0.01)  # a later start time
    second = tracker.log_trial(0, {"quality": 0.5}, {}, one_layer)
    client = MlflowClient(mlflow_uri)
    assert reconcile_children(client, parent, [0]) == {0: first}
    assert [r.info.run_id for r in trial_runs(client, parent)] == [first] and client.get_run(second).info.lifecycle_stage == "deleted"


def test_a_reloaded_result_counts_the_proposals_over_the_budget(mlflow_uri):
    """``n_infeasible`` is read back from the parent run's ``n_over_budget`` metric: a random sampler past one baseline
    proposes assignments over 4.5 bits, and the reloaded result said none were."""
    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=3, n_fill_seeds=0, max_uniform_seeds=1, seed_from="none",
                          sampler="random", tracking_uri=mlflow_uri, progress=False)
    assert result.n_infeasible > 0
    assert autoq.SearchResult.from_mlflow(result.parent_run_id, mlflow_uri).n_infeasible == result.n_infeasible
