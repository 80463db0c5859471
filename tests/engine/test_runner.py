"""End-to-end search on the built-in digits CNN through the Python API, with real MLflow and Optuna stores."""

from __future__ import annotations

import dataclasses
import json
import pickle
import subprocess
import sys

import optuna
import pytest
import torch
from helpers import child_runs, with_uncalled_layer
from mlflow.tracking import MlflowClient

import autoq
from autoq.builtin import load_workload
from autoq.choice import Assignment
from autoq.cost import CostModel
from autoq.errors import AutoqError
from autoq.model import find_layers


@pytest.fixture(scope="module")
def digits():
    return load_workload("digits-cnn")


@pytest.fixture(scope="module")
def result(digits, tmp_path_factory, _mlflow_template):
    import shutil

    folder = tmp_path_factory.mktemp("digits-search")
    shutil.copy(_mlflow_template, folder / "mlflow.db")
    return autoq.search(
        "digits-cnn",
        budget="4.5bits",
        n_trials=25,
        seed=0,
        tracking_uri=f"sqlite:///{folder / 'mlflow.db'}",
        progress=False,
    )


def test_frontier_points_are_within_budget_recomputed_from_mlflow(result, digits, tmp_path):
    client = MlflowClient(result.tracking_uri)
    cost_model = CostModel.for_model(digits.model, find_layers(digits.model))
    runs = {r.info.run_id: r for r in child_runs(client, result.parent_run_id)}
    front_runs = [r for r in runs.values() if r.data.tags.get("pareto") == "true"]
    assert {p.run_id for p in result.frontier} == {r.info.run_id for r in front_runs}
    for run in front_runs:
        path = client.download_artifacts(run.info.run_id, "assignment.json", str(tmp_path))
        assignment = Assignment.from_json(open(path).read())
        bits = cost_model.cost(assignment).effective_bits
        assert bits <= 4.5
        assert bits == pytest.approx(run.data.metrics["effective_bits"], abs=1e-9)


def test_mlflow_holds_parent_children_and_artifacts(result, tmp_path):
    client = MlflowClient(result.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["budget"] == "4.5bits"
    assert parent.data.params["model"] == "digits-cnn"
    assert parent.data.params["seed"] == "0"
    names = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"frontier.csv", "frontier.json", "frontier.png", "search_space.json"} <= names
    children = child_runs(client, result.parent_run_id)
    assert len(children) == len(result.points) == 25
    assert all({"quality", "effective_bits", "size_bytes"} <= set(r.data.metrics) for r in children)
    # MB as budgets read it ("20MB" is 20 * 10**6 bytes), not MiB
    assert all(r.data.metrics["size_mb"] == pytest.approx(r.data.metrics["size_bytes"] / 1e6, rel=1e-12) for r in children)
    by_trial = {int(r.data.params["trial"]): r for r in children}
    for p in result.points:
        assert by_trial[p.trial].data.params["choices"] == p.assignment.summary()
        assert by_trial[p.trial].data.tags["uniform"] == str(p.uniform).lower()  # the UI's filter for the baselines
    assert {p.uniform for p in result.points} == {True, False}
    csv_path = client.download_artifacts(result.parent_run_id, "frontier.csv", str(tmp_path))
    assert len(open(csv_path).read().strip().splitlines()) == len(result.frontier) + 1
    front = json.load(open(client.download_artifacts(result.parent_run_id, "frontier.json", str(tmp_path))))
    assert len(result.frontier) < len(result.points)  # so that logging every point would be seen
    assert sorted(row["trial"] for row in front) == sorted(p.trial for p in result.frontier)


def test_best_is_the_best_point_and_frontier_is_nondominated(result):
    uniform = result.best_uniform
    assert uniform is not None and uniform.uniform and uniform.quality == max(p.quality for p in result.uniform_points)
    assert result.best.quality == max(p.quality for p in result.points)
    front = result.frontier
    assert all(a.effective_bits < b.effective_bits and a.quality < b.quality for a, b in zip(front, front[1:]))
    for p in result.points:  # every point is weakly dominated by a frontier point
        assert any(q.effective_bits <= p.effective_bits and q.quality >= p.quality for q in front)


def test_optuna_storage_keeps_every_trial(result):
    study = optuna.load_study(study_name=result.study_name, storage=result.storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 25
    assert all(t.constraints["budget"] <= 0 for t in complete)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert len(pruned) == result.n_infeasible
    assert all(t.constraints["budget"] > 0 for t in pruned)


def test_result_pickles_and_applies(result, digits):
    clone = pickle.loads(pickle.dumps(result))
    assert clone == result
    import copy

    model = copy.deepcopy(digits.model)
    result.apply(model)
    assert digits.evaluate(model) == pytest.approx(result.best.quality, abs=1e-9)


def test_apply_puts_a_point_on_the_searched_weights_only(result, digits):
    """As autoq.export refuses a point on other weights, so does apply: it quantized them without a word, and the
    point's quality was not theirs. Its assignment still quantizes any weights by the same choices."""
    import copy

    other = copy.deepcopy(digits.model)
    with torch.no_grad():
        other[0].weight.mul_(1.5)
    before = other[0].weight.clone()
    with pytest.raises(AutoqError, match=r"weights are not the ones the search scored \(hash \w+, the search's \w+\).*point.assignment"):
        result.apply(other)
    assert torch.equal(other[0].weight, before)  # refused before any layer changed
    result.apply(other, result.best.assignment)
    assert not torch.equal(other[0].weight, before)


def test_the_logged_best_is_result_best_of_equal_qualities_the_cheapest(result):
    top = max(p.quality for p in result.points)
    assert sum(p.quality == top for p in result.points) > 1  # accuracy on 450 images: several trials tie
    metrics = MlflowClient(result.tracking_uri).get_run(result.parent_run_id).data.metrics
    assert result.best.effective_bits == min(p.effective_bits for p in result.points if p.quality == top)
    assert metrics["best_effective_bits"] == result.best.effective_bits and metrics["best_quality"] == top


def test_data_driven_points_apply_with_the_calibration_batches(digits):
    import copy

    result = autoq.search("digits-cnn", budget="6bits", n_trials=3, pins={".*": "int4-ch-asym:gptq"}, seed_from="none",
                          tracking_uri=None, storage=None, progress=False)
    model = copy.deepcopy(digits.model)
    with pytest.raises(AutoqError, match=r"data-driven methods \['gptq'\]: pass the search's calibration batches"):
        result.apply(model)
    result.apply(model, calibration=digits.calibration)
    assert digits.evaluate(model) == pytest.approx(result.best.quality, abs=1e-9)


def test_apply_refuses_activation_formats_before_it_changes_a_layer(digits):
    import copy

    from autoq.choice import LayerChoice

    model = copy.deepcopy(digits.model)
    before = [p.clone() for p in model.parameters()]
    point = Assignment((("0", LayerChoice.from_name("int4-ch-asym:rtn-mse")), ("8", LayerChoice.from_name("int8-ch-sym:rtn-minmax+a8-token"))))
    result = autoq.search("digits-cnn", budget="6bits", n_trials=1, seed_from="none", tracking_uri=None, storage=None, progress=False)
    with pytest.raises(AutoqError, match=r"quantizes activations \(8 \(int8-ch-sym:rtn-minmax\+a8-token\)\), which needs forward hooks"):
        result.apply(model, point)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # layer 0 came first: it used to be changed


def test_sequential_over_a_space_that_calibrates_on_nothing_is_said_to_change_nothing(capsys):
    """It ran without a word: the default space's rtn-mse options take no calibration data, so no trial differed."""
    autoq.search("digits-cnn", budget="4.5bits", n_trials=1, seed_from="none", sequential=True, tracking_uri=None, storage=None, progress=False)
    assert "sequential=True (--sequential) changes nothing here: no option of the search space calibrates on data" in capsys.readouterr().err
    autoq.search("digits-cnn", budget="6bits", n_trials=1, pins={".*": "int3-ch-asym:gptq"}, seed_from="none", sequential=True,
                 tracking_uri=None, storage=None, progress=False)
    assert "changes nothing here" not in capsys.readouterr().err  # gptq calibrates: said only where it changes nothing


def test_apply_reproduces_a_sequential_search(digits, mlflow_uri):
    """A sequential search calibrates each layer on the outputs of the quantized layers before it; apply used to
    calibrate on float inputs, so the model it gave back was not the one the search scored."""
    import copy

    result = autoq.search("digits-cnn", budget="6bits", n_trials=2, pins={".*": "int3-ch-asym:gptq"}, seed_from="none", sequential=True,
                          tracking_uri=mlflow_uri, storage=None, progress=False)
    assert result.sequential and autoq.SearchResult.from_mlflow(result.parent_run_id, mlflow_uri).sequential
    model = result.apply(copy.deepcopy(digits.model), calibration=digits.calibration)
    assert digits.evaluate(model) == pytest.approx(result.best.quality, abs=1e-9)
    plain = dataclasses.replace(result, sequential=False).apply(copy.deepcopy(digits.model), calibration=digits.calibration)
    assert not torch.equal(plain[-1].weight, model[-1].weight)  # the later layers' statistics differ


def test_a_skip_string_is_one_pattern_and_a_search_with_no_point_says_why(capsys):
    assert autoq.SearchConfig(skip="conv").skip == ("conv",)  # was ('c', 'o', 'n', 'v')
    with pytest.raises(AutoqError, match=r"no trial was evaluated: the timeout \(1e-06 s\) ended the search before its first trial"):
        autoq.search("digits-cnn", budget="4.5bits", n_trials=3, timeout=1e-6, tracking_uri=None, storage=None, progress=False, seed_from="none")
    assert "ended the search after 0" not in capsys.readouterr().err  # a note that 0 trials were "kept", then the error
    import dataclasses

    empty = dataclasses.replace(autoq.search("digits-cnn", budget="4.5bits", n_trials=1, tracking_uri=None, storage=None, progress=False,
                                             seed_from="none"), points=(), frontier=())
    with pytest.raises(AutoqError, match="has no evaluated point"):
        _ = empty.best


def _each_evaluation_takes_100_s(monkeypatch) -> None:
    """Move ``time.perf_counter`` on by 100 s at each evaluation: a timeout of 150 s ends a search after its second trial."""
    import time

    from autoq.engine import runner

    clock, real_clock, real_evaluate = {"offset": 0.0}, time.perf_counter, runner._evaluate

    def evaluate(*args, **kwargs):
        clock["offset"] += 100.0
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(runner, "_evaluate", evaluate)
    monkeypatch.setattr(time, "perf_counter", lambda: real_clock() + clock["offset"])


def test_a_timeout_that_ends_the_search_says_so_and_how_to_go_on(digits, tmp_path, monkeypatch, capsys):
    """A search stopped by --timeout printed only "N trials in S s", as if it had done what was asked."""
    _each_evaluation_takes_100_s(monkeypatch)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=10, timeout=150, tracking_uri=None, storage=storage, study_name="t",
                          seed_from="none", progress=False)
    assert len(result.points) == 2
    err = capsys.readouterr().err
    assert ("--timeout 150 s ended the search after 2 of its 10 trials, kept in the Optuna study; continue with: autoq search --resume t "
            f"--tracking-uri none --storage {storage}") in err
    # the printed command works from any folder, without MLflow as the search ran (it made a new mlflow.db, or found no storage)
    command = err.split("continue with: ", 1)[1].split("   (Python:", 1)[0].split()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run([sys.executable, "-m", "autoq", *command[1:], "--no-progress"], cwd=elsewhere, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "10 trials in " in done.stdout and not list(elsewhere.iterdir())


def test_the_timeout_line_is_not_glued_to_the_progress_bar(digits, monkeypatch, capsys):
    """The line was printed while the bar was still open, so it went on the end of the bar's last drawing."""
    import re

    _each_evaluation_takes_100_s(monkeypatch)
    autoq.search("digits-cnn", budget="4.5bits", n_trials=10, timeout=150, tracking_uri=None, storage=None, seed_from="none", progress=True)
    err = capsys.readouterr().err
    assert re.search(r"(^|[\r\n])autoq: --timeout 150 s ended the search", err), err[-1500:]


def test_same_seed_same_frontier(digits, mlflow_uri):
    """Unseeded (no queued seeds), so every trial is the sampler's: the seed must reach it, not only the seed list."""

    def run(seed):
        r = autoq.search("digits-cnn", budget="3.5bits", n_trials=8, seed=seed, seed_from="none", tracking_uri=None, storage=None, progress=False)
        return [(p.assignment, p.quality) for p in r.points]

    first = run(3)
    assert len(first) >= 4
    assert run(3) == first
    assert [a for a, _ in run(4)] != [a for a, _ in first]


def test_size_budget(mlflow_uri):
    r = autoq.search("digits-cnn", budget="0.03MB", n_trials=10, tracking_uri=None, storage=None, progress=False)
    assert all(p.size_bytes <= 30_000 for p in r.points)
    assert r.budget.kind == "bytes"


def test_existing_study_name_is_refused(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    kwargs = dict(budget="4.5bits", n_trials=2, tracking_uri=None, storage=storage, study_name="same", progress=False)
    autoq.search("digits-cnn", **kwargs)
    with pytest.raises(AutoqError, match=r"already exists .*; choose another name \(--study-name, or study_name= in Python\)"):
        autoq.search("digits-cnn", **kwargs)


def test_default_study_names_stay_unique_within_a_second(tmp_path, monkeypatch):
    """A pipeline looping over seeds started searches within one second: the second failed on the first's name."""
    from datetime import datetime as real

    from autoq.engine import study_names

    class Frozen(real):
        @classmethod
        def now(cls, tz=None):
            return real(2026, 12, 1, 12, 0, 0, tzinfo=tz)

    monkeypatch.setattr(study_names, "datetime", Frozen)
    kwargs = dict(budget="4.5bits", n_trials=1, seed_from="none", tracking_uri=None, storage=f"sqlite:///{tmp_path / 'optuna.db'}", progress=False)
    names = [autoq.search("digits-cnn", seed=seed, **kwargs).study_name for seed in range(3)]
    base = "autoq-digits-cnn-4.5bits-20261201-120000"
    assert names == [base, f"{base}-2", f"{base}-3"]


def test_a_study_cut_short_while_seeding_is_removed_so_its_name_can_be_used(tmp_path, monkeypatch):
    """Ctrl-C between the study's creation and its stored settings left a study that could be neither resumed ("not
    started by autoq search") nor reused ("already exists")."""
    import optuna

    from autoq.engine import strategy

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    kwargs = dict(budget="4.5bits", n_trials=1, seed_from="none", tracking_uri=None, storage=storage, study_name="nightly", progress=False)

    def interrupted(self, assignments):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(strategy.OptunaStrategy, "seed", interrupted)
        with pytest.raises(KeyboardInterrupt):
            autoq.search("digits-cnn", **kwargs)
    assert "nightly" not in optuna.get_all_study_names(storage)
    assert len(autoq.search("digits-cnn", **kwargs).points) == 1


def test_a_result_finds_its_study_from_any_folder(tmp_path, monkeypatch):
    """The storage was kept as the relative sqlite:///optuna.db: from another folder, study() raised a bare KeyError
    and left an empty optuna.db there."""
    (tmp_path / "run").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "run")
    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=2, seed_from="none", tracking_uri=None, storage="sqlite:///optuna.db",
                          progress=False)
    assert result.storage == f"sqlite:///{tmp_path / 'run' / 'optuna.db'}"
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert len(result.study().trials) >= 2
    gone = dataclasses.replace(result, storage="sqlite:///optuna.db")  # as a result pickled before
    with pytest.raises(AutoqError, match="no Optuna storage at optuna.db"):
        gone.study()
    assert not (tmp_path / "elsewhere" / "optuna.db").exists()


def test_an_interrupted_python_search_names_the_storage_auto_found(tmp_path, monkeypatch):
    """With storage='auto' the hint said "the same call with resume=True": from another folder that call looks for
    optuna.db there, and finds no study to resume. The hint names the database, which resumes from anywhere."""
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    model = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    data = [torch.randn(8, 32, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    calls = []

    def evaluate(m):
        calls.append(1)
        if len(calls) == 3:  # the reference, then a trial
            raise KeyboardInterrupt
        return 1.0 / len(calls)

    with pytest.raises(autoq.SearchInterrupted) as info:
        autoq.search(model, data, evaluate, budget="6bits", n_trials=3, seed_from="none", tracking_uri="sqlite:///mlflow.db",
                     study_name="cut", progress=False)
    stored = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert f"resume=True, study_name='cut', storage='{stored}', n_trials=3" in str(info.value)
    monkeypatch.chdir(tmp_path / "elsewhere")
    result = autoq.search(model, data, evaluate, budget="6bits", n_trials=3, seed_from="none", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                          study_name="cut", storage=stored, resume=True, progress=False)
    assert len(result.points) == 3 and not (tmp_path / "elsewhere" / "optuna.db").exists()


def test_none_as_a_string_is_none_as_on_the_command_line():
    """storage='none' was refused by a message that recommended 'none'; tracking_uri='none' reached MLflow."""
    config = autoq.SearchConfig(storage="none", tracking_uri="None")
    assert config.storage is None and config.tracking_uri is None and config.resolved_storage() is None


@pytest.mark.parametrize("stored", [True, False])
def test_an_interrupted_search_says_what_it_kept_and_how_to_continue(tmp_path, stored, capsys):
    """The message said trials were kept in the Optuna storage and MLflow even where nothing kept them, and never
    gave the study name a resume needs."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    data = [torch.randn(8, 32, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    calls = []

    def evaluate(m):
        calls.append(1)
        if len(calls) == 4:  # the reference, then 2 trials
            raise KeyboardInterrupt
        return float(len(calls))  # any quality

    storage = f"sqlite:///{tmp_path / 'optuna.db'}" if stored else None
    with pytest.raises(autoq.SearchInterrupted) as info:
        autoq.search(model, data, evaluate, budget="6bits", n_trials=10, seed_from="none", tracking_uri=None, storage=storage,
                     study_name="cut", progress=False)
    if stored:  # a model passed from Python: no command line can name it (one would load the default model to be refused)
        assert str(info.value) == ("interrupted after 2 finished trial(s), kept in the Optuna study; continue with the same call with "
                                   "resume=True, study_name='cut', n_trials=10 (and the same model and data)")
        from autoq.cli import main

        assert main(["search", "--resume", "cut", "--storage", storage, "--tracking-uri", "none"]) == 2
        assert "searched a model passed from Python (Sequential), which a command line cannot name" in capsys.readouterr().err
    else:
        assert str(info.value) == "interrupted after 2 finished trial(s); nothing keeps them (--storage none, --tracking-uri none)"
    assert isinstance(info.value, KeyboardInterrupt)


def test_ctrl_c_as_the_search_stores_its_end_leaves_it_whole(mlflow_uri, tmp_path, monkeypatch, capsys):
    """Ctrl-C just after the last trial, while the wall time was being stored, escaped the clean-up: the MLflow parent run
    stayed RUNNING without its metrics, frontier.csv and pareto tags, as after a kill -9."""
    import signal

    from autoq.engine import runner

    stored = runner.add_wall_seconds

    def pressed_now(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)  # the user's Ctrl-C, as the end is being stored
        return stored(*args, **kwargs)

    monkeypatch.setattr(runner, "add_wall_seconds", pressed_now)
    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=3, seed_from="none", tracking_uri=mlflow_uri, progress=False,
                          storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert "interrupted after the last trial; the search and its results were stored in full" in capsys.readouterr().err
    client = MlflowClient(mlflow_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["wall_seconds"] == pytest.approx(result.wall_seconds)
    assert "frontier.csv" in {a.path for a in client.list_artifacts(result.parent_run_id)}


def test_calibration_data_driven_methods_cannot_use_is_refused_before_the_search():
    """Every GPTQ/AWQ trial failed one by one, after the search began: 17 of 30 without data, 7 of 12 on (x, y) pairs."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    options = dict(budget="6bits", n_trials=2, seed_from="none", tracking_uri=None, storage=None, progress=False, pins={".*": "int4-ch-asym:gptq"})
    # the pins' choices, named as theirs: it said the space 'default' had them, and to use a space without them, 'default'
    with pytest.raises(AutoqError, match=r"^the pins give data-driven choices \(gptq\), which calibrate on the calibration batches, and "
                                         r"none were given; pass calibration=\[batches\], or pins of a data-free method \(rtn-mse, say\)$"):
        autoq.search(model, [], lambda m: 1.0, **options)
    static = {**options, "pins": {".*": "int8-ch-sym:rtn-minmax+a8-tensor"}}  # a static activation range is calibrated too
    with pytest.raises(AutoqError, match=r"pins give data-driven choices \(static a8-tensor activations\), which calibrate"):
        autoq.search(model, [], lambda m: 1.0, **static)
    spaced = {**options, "pins": {"^0$": "int4-ch-asym:gptq"}, "space": "full"}
    with pytest.raises(AutoqError, match=r"^the search space 'full' has data-driven options \(.*gptq.*\) and the pins give data-driven "
                                         r"choices \(gptq\).*or a space without them \('default'\) and pins of a data-free method"):
        autoq.search(model, [], lambda m: 1.0, **spaced)
    pairs = [(torch.randn(8, 16), torch.randint(0, 4, (8,))) for _ in range(3)]
    with pytest.raises(AutoqError, match=r"the model fails on calibration batch 0 of 3 \(for gptq\).*pass the inputs alone"):
        autoq.search(model, pairs, lambda m: 1.0, **options)
    assert autoq.search(model, [x for x, _ in pairs], lambda m: 1.0, **options).best.quality == 1.0


def test_a_refused_budget_also_says_which_layers_were_left_out():
    """The note on tied layers left out was printed only for a search that ran, not with the feasible range it shaped."""
    from autoq.api import make_workload
    from autoq.engine import SearchConfig, prepare

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(10, 16), torch.nn.Linear(16, 16), torch.nn.Linear(16, 10))
    model[2].weight = model[0].weight  # tied, as a language model's head is
    workload = make_workload(model, [torch.randint(0, 10, (4, 5)) for _ in range(3)], lambda m: 1.0)
    with pytest.raises(AutoqError, match=r"below the cheapest assignment; the feasible range .*; 1 layer\(s\) with tied weights left unquantized.*'2'"):
        prepare(workload, SearchConfig(budget="2.01bits", tracking_uri=None, storage=None))


class _WithUnusedHead(torch.nn.Module):
    """Two layers the forward runs, and a head it never calls (an unused classifier, a branch the data does not take)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.unused = torch.nn.Linear(32, 32), torch.nn.Linear(32, 8), torch.nn.Linear(32, 32)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def test_a_layer_the_calibration_data_never_reaches_takes_data_free_methods(capsys):
    """Every trial giving it GPTQ, AWQ, ... failed ("the layer saw no input"): 6 of 12 in the 'full' space."""
    from autoq.api import make_workload
    from autoq.engine import SearchConfig, prepare
    from autoq.evaluate.cache import needs_stats

    model = _WithUnusedHead().eval()
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(8, 32, generator=gen) for _ in range(4)]
    problem = prepare(make_workload(model, batches, lambda m: 1.0), SearchConfig(budget="4.5bits", space="full", tracking_uri=None, storage=None))
    options = dict(zip((layer.name for layer in problem.space.layers), problem.space.options))
    assert not any(needs_stats(c) for c in options["unused"]) and any(c.method == "rtn-mse" for c in options["unused"])
    assert any(c.method == "gptq" for c in options["a"])
    w8a8 = prepare(make_workload(model, batches, lambda m: 1.0), SearchConfig(budget="9bits", space="w8a8", tracking_uri=None, storage=None))
    acts = {layer.name: {c.activation.name for c in opts if c.activation} for layer, opts in zip(w8a8.space.layers, w8a8.space.options)}
    assert acts == {"a": {"a8-tensor", "a8-token"}, "b": {"a8-tensor", "a8-token"}, "unused": {"a8-token"}}  # a static range is calibrated
    assert "1 layer(s) the model never calls on the calibration batches ('unused') take data-free methods only" in problem.unreached
    result = autoq.search(model, batches, budget="4.5bits", space="full", n_trials=12, seed_from="none", tracking_uri=None, storage=None,
                          progress=False)
    assert result.n_failed == 0 and len(result.points) == 12
    assert any(needs_stats(p.assignment[name]) for p in result.points for name in "ab")  # the layers it reaches still take them
    assert "autoq: note: 1 layer(s) the model never calls" in capsys.readouterr().err


def test_a_layer_the_calibration_data_never_reaches_is_named_in_a_data_free_space_too():
    """The note came only with data-driven options in the space: in 'default' the unused head went to int2 unsaid, which
    lowered the point's bits at no quality cost."""
    from autoq.api import make_workload
    from autoq.engine import SearchConfig, prepare

    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(8, 32, generator=gen) for _ in range(4)]
    problem = prepare(make_workload(_WithUnusedHead().eval(), batches, lambda m: 1.0),
                      SearchConfig(budget="4.5bits", space="default", tracking_uri=None, storage=None))
    assert problem.unreached is not None and "('unused')" in problem.unreached


def test_a_data_free_search_takes_batches_only_its_evaluate_reads():
    """The reach check ran the model on the calibration batches in every space: (inputs, labels) pairs, which a
    data-free space with the user's own evaluate never feeds to the model, were refused."""
    model = _linear_model()
    pairs = [(torch.randn(8, 16), torch.zeros(8, dtype=torch.long)) for _ in range(3)]
    result = autoq.search(model, pairs, lambda m: 1.0, budget="6bits", n_trials=2, seed_from="none", tracking_uri=None, storage=None,
                          progress=False)
    assert len(result.points) == 2
    assert result.calibration_digest == ""  # nothing calibrates on them: not hashed, and no export checks them


def _linear_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()


@pytest.mark.parametrize("reference", [float("nan"), float("inf")])
def test_a_quality_metric_not_finite_on_the_unquantized_model_is_refused_before_any_trial(reference):
    """Every trial is compared with the unquantized model's quality (the gain over it, the 'above reference' checks):
    a NaN or infinite one would make each comparison meaningless, so the search stops before its first trial."""
    calls = []

    def evaluate(m: torch.nn.Module) -> float:
        calls.append(1)
        return reference if len(calls) == 1 else 0.5

    with pytest.raises(AutoqError, match=rf"^the quality metric of the unquantized model is {reference}; check the evaluation data$"):
        autoq.search(_linear_model(), [torch.randn(8, 16) for _ in range(3)], evaluate, budget="6bits", n_trials=2, seed_from="none",
                     tracking_uri=None, storage=None, progress=False)
    assert len(calls) == 1


def test_a_search_that_evaluated_nothing_ends_its_mlflow_run_failed(mlflow_uri):
    """A timeout before the first trial raises 'no trial was evaluated': the parent run said FINISHED in the MLflow UI,
    a search with nothing to show taken for a finished one."""
    with pytest.raises(AutoqError, match="no trial was evaluated"):
        autoq.search(_linear_model(), [torch.randn(8, 16) for _ in range(3)], lambda m: 1.0, budget="6bits", n_trials=2, timeout=1e-6,
                     seed_from="none", tracking_uri=mlflow_uri, experiment="nothing", storage=None, progress=False)
    client = MlflowClient(mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("nothing").experiment_id])
    assert run.data.tags["autoq.kind"] == "search" and run.info.status == "FAILED"


def test_a_layer_inside_a_compiled_submodule_is_not_taken_for_never_called(capsys):
    """Compiled code runs no forward pre-hooks: the layers of a torch.compile'd block read as never called."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(32, 4))).eval()
    model[2] = torch.compile(model[2], backend="eager")
    batches = [torch.randn(8, 16) for _ in range(4)]  # the output-fidelity proxy runs the compiled block first, without hooks
    options = dict(budget="6bits", n_trials=1, seed_from="none", tracking_uri=None, storage=None, progress=False)
    autoq.search(model, batches, **options)
    assert "never calls" not in capsys.readouterr().err
    class WithUnused(torch.nn.Module):  # the control: a layer truly never called is still said to be
        def __init__(self) -> None:
            super().__init__()
            self.body, self.unused = model, torch.nn.Linear(16, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    autoq.search(WithUnused().eval(), batches, **options)
    assert "1 layer(s) the model never calls on the calibration batches ('unused')" in capsys.readouterr().err


def test_an_evaluate_that_writes_into_the_weights_on_the_reference_pass_is_warned_of():
    """A trial's evaluate writing into the model was warned of; the reference pass, outside any trial, was not: the
    change stayed unsaid, and the recorded weights' hash was the one before it, so result.apply refused the model."""
    from autoq.errors import AutoqWarning

    model = _linear_model()
    batches = [torch.randn(8, 16) for _ in range(4)]
    calls = []

    def evaluate(m: torch.nn.Module) -> float:
        calls.append(1)
        if len(calls) == 1:
            with torch.no_grad():
                m[0].weight.mul_(1.5)
        with torch.no_grad():
            return -float(m(batches[0]).pow(2).mean())

    with pytest.warns(AutoqWarning, match=r"evaluate changed the model's parameters or buffers \['0.weight'\] in place on the unquantized model's "
                      r"reference pass: the change stays in your model"):
        result = autoq.search(model, batches, evaluate, budget="6bits", n_trials=2, seed_from="none", tracking_uri=None, storage=None,
                              progress=False)
    result.apply(model)  # the hash recorded is of the weights the trials scored


def test_an_evaluate_that_updates_batchnorm_statistics_is_warned_of():
    """An evaluate that ran the model in train mode (BatchNorm re-estimation) changed its running statistics, in the
    user's model and between trials, without a word: only parameters were watched."""
    from autoq.errors import AutoqWarning

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()
    x = torch.randn(32, 16)

    def evaluate(m: torch.nn.Module) -> float:
        m.train()
        with torch.no_grad():
            out = m(x)
        m.eval()
        return -float(out.pow(2).mean())

    with pytest.warns(AutoqWarning) as said:
        autoq.search(model, [x[:8], x[8:16]], evaluate, budget="6bits", n_trials=2, seed_from="none", tracking_uri=None, storage=None,
                     progress=False)
    # (the native kernel updates the running mean and variance without a version bump: the counter beside them tells)
    bn = "['1.num_batches_tracked'] (BatchNorm statistics, with its running mean and variance: the model ran in train mode)"
    messages = [str(w.message) for w in said]
    assert f"evaluate changed the model's parameters or buffers {bn} in place on the unquantized model's reference pass" in messages[0]
    assert f"the model's parameters or buffers {bn} were changed in place while a quantized assignment was applied" in messages[1]
    assert len(messages) == 2  # each once


def test_a_latency_budget_refused_on_a_table_far_from_the_models_shapes_says_so(tmp_path):
    """The range read as measured: every digits-cnn layer's latency was stretched from LLaMA shapes 100x larger, and the
    note saying so came only on searches that got past the budget check."""
    import json

    from autoq.latency.resolve import TABLES_DIR

    table = json.loads((TABLES_DIR / "h200.json").read_text())
    table["rows"] = [row for row in table["rows"] if row["n"] * row["k"] >= 4096 * 4096]
    path = tmp_path / "llama_only.json"
    path.write_text(json.dumps(table))
    with pytest.raises(AutoqError, match=r"below the cheapest assignment; the feasible range .*; 4 of 4 layers \(.*\) lie far outside "
                                         r"the shapes the latency table '.*llama_only.json' measured"):
        autoq.search("digits-cnn", budget="1us", device=str(path), tracking_uri=None, storage=None, progress=False)


def test_a_table_computed_for_the_search_quantizes_each_pair_once(digits, tmp_path, monkeypatch):
    """The seeding table quantized every (layer, option) pair and threw them away, then the trials quantized the ones
    they met again: 12% of a first MiniLM search. The table and the trials share the search's cache now."""
    import shutil
    from collections import Counter

    from autoq.builtin.digits import RECIPE
    from autoq.builtin.workload import cache_dir
    from autoq.evaluate import cache as cache_module
    from autoq.sensitivity import inputs as inputs_module

    fresh = tmp_path / "cache"
    fresh.mkdir()
    shutil.copy(cache_dir() / f"{RECIPE}.pt", fresh)  # the trained CNN, and no sensitivity table yet
    monkeypatch.setenv("AUTOQ_CACHE_DIR", str(fresh))
    calls: Counter = Counter()
    real = cache_module.quantize_layer_full

    def counted(module, choice, stats=None):
        calls[id(module), choice] += 1
        return real(module, choice, stats)

    monkeypatch.setattr(cache_module, "quantize_layer_full", counted)
    monkeypatch.setattr(inputs_module, "quantize_layer_full", counted)
    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=6, seed_from="sqnr", tracking_uri=None, storage=None, progress=False)
    assert len(result.points) == 6 and list((fresh / "sensitivity").glob("sqnr-*.json"))  # computed now (and cached)
    assert len(calls) > 6 * 4  # every pair the table scored: more than 6 trials of the CNN's 4 layers could meet
    assert max(calls.values()) == 1


def test_a_table_computed_through_the_search_is_cached_with_a_layer_the_model_never_calls(tmp_path, monkeypatch):
    """The search's cache sampled each layer's rows by its place among all layers, the uncalled one included, and a
    table's own statistics among those with rows: the lists differed, so a data-driven space's table was never cached
    (every search computed it again)."""
    monkeypatch.setenv("AUTOQ_CACHE_DIR", str(tmp_path / "cache"))
    calibration = [torch.randn(16, 64, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    autoq.search(with_uncalled_layer(64, 10), calibration, budget="4.5bits", space="full", n_trials=4, seed_from="kl", tracking_uri=None,
                 storage=None, progress=False)
    assert [p.name.split("-")[0] for p in (tmp_path / "cache" / "sensitivity").glob("*.json")] == ["kl"]


def test_the_auto_storage_is_beside_a_sqlite_store_wherever_the_search_runs(tmp_path, monkeypatch):
    """storage='auto' keeps optuna.db in the MLflow store's folder (a resume from any folder finds it), else in the
    working folder; both as absolute URLs."""
    from autoq.engine.runner import auto_storage

    (tmp_path / "store").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert auto_storage(f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}") == f"sqlite:///{tmp_path / 'store' / 'optuna.db'}"
    assert auto_storage(None) == f"sqlite:///{tmp_path / 'elsewhere' / 'optuna.db'}"
