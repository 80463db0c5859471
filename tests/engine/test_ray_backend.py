"""The Ray backend on a real local Ray (2 CPUs): same frontier as the Optuna backend, faults survived.

How Ray's ordering matters: the driver asks the Optuna study for proposals in the
same order under both backends, so seeded trials and the proposals of a sampler
that ignores history (random, and TPE before ``n_startup_trials``) are identical.
With 2 workers the results come back out of order, and TPE's later proposals
depend on which trials it has already been told: a longer TPE search can take a
different path. The tests check equality where it must hold (1 worker; the random
sampler with 2 workers) and the invariants that must hold anyway (2 workers, TPE).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter

import optuna
import pytest
from helpers import artifacts_beside, child_runs, with_uncalled_layer
from mlflow.tracking import MlflowClient

import autoq
from autoq.api import make_workload
from autoq.builtin import load_workload
from autoq.engine import SearchConfig, run_search
from autoq.errors import AutoqError, AutoqWarning

pytestmark = pytest.mark.slow

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (starting one costs ~5 s); the searches use it and leave it running."""
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024**2, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def digits():  # function scope: after conftest points AUTOQ_CACHE_DIR at the session cache
    return load_workload("digits-cnn")


def _frontier(result) -> list[tuple]:
    return [(p.assignment, round(p.quality, 6), p.effective_bits) for p in result.frontier]


def _search(workload, **options):
    return run_search(workload, SearchConfig(**{"budget": "4.5bits", "seed": 0, "storage": None, "tracking_uri": None, "progress": False, **options}))


def test_import_autoq_does_not_import_ray():
    code = "import sys, autoq; assert 'ray' not in sys.modules, 'ray imported'"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_one_worker_finds_the_same_frontier_as_optuna(local_ray, digits):
    optuna_result = _search(digits, n_trials=16)
    ray_result = _search(digits, n_trials=16, backend="ray", workers=1)
    assert _frontier(ray_result) == _frontier(optuna_result)
    assert [p.assignment for p in ray_result.points] == [p.assignment for p in optuna_result.points]


@pytest.mark.parametrize("sequential", [False, True])
def test_a_model_with_an_uncalled_layer_scores_alike_on_ray_and_in_process(local_ray, tmp_path, monkeypatch, sequential):
    """The in-process cache samples each layer's rows by its place among the searched layers (an uncalled one marked, as
    a sensitivity table's own statistics do); a worker's counted the uncalled layer too, and saw other rows."""
    import torch

    from autoq.plugins import import_plugin
    from autoq.ptq import registry

    monkeypatch.setattr(registry, "_METHODS", registry._METHODS.copy())
    (tmp_path / "rowplug.py").write_text(  # a method whose weights follow the rows sampled: other rows, another quality
        "from autoq.ptq import get_method, register_method\n\n"
        "@register_method('rtn-rows', needs_stats=True)\ndef rtn_rows(weight, spec, stats=None):\n"
        "    return get_method('rtn-minmax')(weight * (1 + stats.samples[0, 0].abs()), spec, stats)\n")
    import_plugin(str(tmp_path / "rowplug.py"))
    calibration = [torch.randn(300, 32, generator=torch.Generator().manual_seed(i)) for i in range(4)]  # more rows than sampled
    workload = make_workload(with_uncalled_layer(32, 8), calibration, None)
    options = dict(n_trials=4, seed_from="none", sampler="random", max_retries=0, sequential=sequential,
                   pins=(("^b$", "int4-ch-asym:rtn-rows"),))  # b, after the uncalled layer
    in_process, on_ray = _search(workload, **options), _search(workload, backend="ray", workers=1, **options)
    assert on_ray.n_failed == 0 and [(p.assignment, p.quality) for p in on_ray.points] == [(p.assignment, p.quality) for p in in_process.points]


def test_two_workers_random_sampler_same_frontier(local_ray, digits):
    optuna_result = _search(digits, n_trials=16, sampler="random")
    ray_result = _search(digits, n_trials=16, sampler="random", backend="ray", workers=2)
    assert _frontier(ray_result) == _frontier(optuna_result)
    assert sorted(p.trial for p in ray_result.points) == sorted(p.trial for p in optuna_result.points)


@pytest.mark.parametrize("options", [{"sampler": "nsga2"}, {"strategy": "random", "seed_from": "none"}])
def test_a_sampler_or_strategy_that_does_not_pickle_runs_on_ray_as_in_process(local_ray, digits, options):
    """Tune pickles its searcher for Tuner.restore: NSGA-II's lock and the random strategy's generator failed the search
    ('cannot pickle') before its first trial, with its run and study written."""
    optuna_result = _search(digits, n_trials=8, **options)
    ray_result = _search(digits, n_trials=8, backend="ray", workers=1, **options)
    assert [p.assignment for p in ray_result.points] == [p.assignment for p in optuna_result.points]


def test_two_workers_tpe_invariants_and_mlflow(local_ray, digits, mlflow_uri):
    client = MlflowClient(mlflow_uri)
    outer = client.create_run(client.create_experiment("pipeline", artifact_location=artifacts_beside(mlflow_uri))).info  # nested in a pipeline's run: its experiment
    result = _search(digits, n_trials=20, backend="ray", workers=2, tracking_uri=mlflow_uri, storage="auto", mlflow_parent_run_id=outer.run_id)
    optuna_result = _search(digits, n_trials=20)
    assert len(result.points) == 20 and len({p.trial for p in result.points}) == 20
    assert all(p.effective_bits <= 4.5 for p in result.points)
    seeds = {p.assignment for p in optuna_result.points if p.trial < 8}  # 6 uniform + 2 budget-filling seeds
    assert seeds <= {p.assignment for p in result.points}  # same seeds
    assert result.best.quality == max(p.quality for p in result.points) and result.best_uniform.uniform
    front = result.frontier
    assert all(a.effective_bits < b.effective_bits and a.quality < b.quality for a, b in zip(front, front[1:]))
    # every worker logged its trial as a child of the one parent run, in the outer run's experiment
    runs = child_runs(client, result.parent_run_id)
    assert {r.info.experiment_id for r in runs} == {outer.experiment_id} and client.get_experiment_by_name("autoq") is None
    assert sorted(int(r.data.tags["autoq.trial"]) for r in runs) == sorted(p.trial for p in result.points)
    assert all(r.data.tags.get("backend") == "ray" and r.info.status == "FINISHED" for r in runs)
    linked = {t.number: t.user_attrs.get("mlflow_run_id") for t in result.study().trials if t.state.is_finished()}
    assert {int(r.data.tags["autoq.trial"]): r.info.run_id for r in runs}.items() <= linked.items()  # a worker's run too
    assert client.get_run(result.parent_run_id).data.params["backend"] == "ray"


def test_worker_killed_mid_trial_and_raising_trial(local_ray, digits, mlflow_uri, tmp_path):
    driver = os.getpid()

    def first_to_claim(path) -> bool:
        """True for exactly one caller across processes, whoever creates ``path``: two workers can start trials at once.
        (Defined here so that Ray ships it with ``evaluate``; workers cannot import this test module.)"""
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return False
        return True

    def evaluate(model):
        if os.getpid() != driver:  # only inside a Ray worker
            if first_to_claim(tmp_path / "killed-once"):
                os.kill(os.getpid(), signal.SIGKILL)  # the worker dies mid-trial
            if first_to_claim(tmp_path / "raised-once"):
                raise MemoryError("injected out of memory")
        return digits.evaluate(model)

    workload = make_workload(digits.model, digits.calibration, evaluate, name="digits-faulty")
    with pytest.warns(AutoqWarning, match=r"trial \d+ failed \("):  # the first of them, as it happened
        result = _search(workload, n_trials=10, backend="ray", workers=2, tracking_uri=mlflow_uri, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len(result.points) == 10 and result.n_failed == 0  # both failures were retried and finished

    client = MlflowClient(mlflow_uri)
    runs = child_runs(client, result.parent_run_id)
    failed = [r for r in runs if r.info.status == "FAILED"]
    errors = sorted(r.data.tags["error"] for r in failed)
    assert len(failed) == 2, errors
    assert any("MemoryError: injected out of memory" in e for e in errors)
    # Ray's own error text, not a placeholder (its storage copy, which the callback read, did not exist yet)
    assert any("The actor died unexpectedly" in e for e in errors), errors
    study_errors = [t.user_attrs["error"] for t in result.study().trials if t.state.name == "FAIL"]
    assert "the Ray worker failed: The actor died unexpectedly before finishing this task." in study_errors, study_errors
    assert sum(r.info.status == "FINISHED" for r in runs) == 10


def test_a_plugin_method_from_a_file_runs_on_the_workers(local_ray, digits, tmp_path, monkeypatch):
    """Workers import autoq alone: a method a plug-in file registered in the driver was unknown there, and every trial
    that used it failed while the search went on without it."""
    from autoq.plugins import import_plugin
    from autoq.ptq import registry

    monkeypatch.setattr(registry, "_METHODS", registry._METHODS.copy())
    (tmp_path / "wplug.py").write_text(
        "from autoq.ptq import get_method, register_method\n\n"
        "@register_method('rtn-worker')\ndef rtn_worker(weight, spec, stats=None):\n"
        "    return get_method('rtn-minmax')(weight, spec, stats)\n")
    import_plugin(str(tmp_path / "wplug.py"))  # a module no worker can import by name
    space = tmp_path / "space.yaml"
    space.write_text("name: w\ndescription: plug-in method only\nrules:\n  - layers: '.*'\n    bits: [4, 8]\n"
                     "    granularity: [channel]\n    symmetric: false\n    methods: [rtn-worker]\n    half: false\n")
    result = _search(digits, n_trials=4, backend="ray", workers=1, space=str(space), seed_from=None, max_retries=0)
    assert result.n_failed == 0 and len(result.points) == 4
    assert all(c.method == "rtn-worker" for p in result.points for c in p.assignment.values())


def test_only_the_users_own_modules_go_by_value_and_a_callers_registration_stays(tmp_path, monkeypatch):
    """Every module of a registered method went by value: functools for a partial (which then failed to pickle), and
    the caller's own by-value registration was undone after."""
    import functools
    import types

    from ray import cloudpickle

    from autoq.engine.ray_backend import _by_value
    from autoq.ptq.registry import MethodInfo

    mine = types.ModuleType("my_user_plugin")
    mine.__file__ = str(tmp_path / "my_user_plugin.py")
    exec("def q(weight, spec, stats=None):\n    return None\n", mine.__dict__)  # noqa: S102
    mine.q.__module__ = "my_user_plugin"
    theirs = types.ModuleType("their_plugin")
    theirs.__file__ = str(tmp_path / "their_plugin.py")
    exec("def q(weight, spec, stats=None):\n    return None\n", theirs.__dict__)  # noqa: S102
    theirs.q.__module__ = "their_plugin"
    monkeypatch.setitem(sys.modules, "my_user_plugin", mine)
    monkeypatch.setitem(sys.modules, "their_plugin", theirs)
    cloudpickle.register_pickle_by_value(theirs)
    try:
        methods = (MethodInfo("a", mine.q, False), MethodInfo("b", theirs.q, False), MethodInfo("c", functools.partial(mine.q), False))
        with _by_value([info.fn for info in methods]):
            assert cloudpickle.list_registry_pickle_by_value() >= {"my_user_plugin", "their_plugin"}
            assert "functools" not in cloudpickle.list_registry_pickle_by_value()
        assert "my_user_plugin" not in cloudpickle.list_registry_pickle_by_value()
        assert "their_plugin" in cloudpickle.list_registry_pickle_by_value()  # the caller's, left as it was
    finally:
        cloudpickle.unregister_pickle_by_value(theirs)


def test_a_package_installed_outside_the_interpreters_folders_goes_by_name(tmp_path, monkeypatch):
    """torch in the user site (pip install --user), a --target folder or dist-packages went by value: a worker's
    nn.Conv2d was another class, and bias correction took the convolution for a linear layer. A module beside no
    metadata (a script's folder), or away from its distribution's (an editable install), is the user's own."""
    import importlib
    import importlib.metadata
    import json

    import torch

    from autoq.engine.ray_backend import _users_own

    target, source = tmp_path / "target", tmp_path / "source"
    for folder, package in ((target, "tgt_pkg"), (target, "bare_mod_pkg"), (source, "edit_pkg")):
        (folder / package).mkdir(parents=True)
        (folder / package / "__init__.py").write_text("")
    for package, where in (("tgt_pkg", target), ("edit_pkg", target)):  # edit_pkg's metadata is away from its code
        info = where / f"{package}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n")
        (info / "top_level.txt").write_text(f"{package}\n")
    monkeypatch.syspath_prepend(str(source))
    monkeypatch.syspath_prepend(str(target))
    importlib.invalidate_caches()
    distributions = importlib.metadata.packages_distributions()
    try:
        assert not _users_own(importlib.import_module("tgt_pkg"), distributions)
        assert _users_own(importlib.import_module("edit_pkg"), distributions)
        assert _users_own(importlib.import_module("bare_mod_pkg"), distributions)  # no distribution holds it
    finally:
        for name in ("tgt_pkg", "edit_pkg", "bare_mod_pkg"):
            sys.modules.pop(name, None)
    assert not _users_own(torch.nn.modules.conv, distributions) and not _users_own(json, distributions)


def test_a_trial_a_worker_logged_as_tune_stopped_is_recorded_not_run_again(digits, mlflow_uri, tmp_path):
    """Ctrl-C while a worker finished a trial: its child run held the quality, Optuna kept it RUNNING, and the resume
    deleted the run and evaluated the assignment again."""
    from autoq.engine import SearchConfig, prepare
    from autoq.engine.ray_backend import record_logged
    from autoq.engine.strategy import make_strategy
    from autoq.engine.trials import TrialBook, trial_metrics, trial_tags
    from autoq.tracking import MlflowTracker

    config = SearchConfig(budget="4.5bits", tracking_uri=mlflow_uri, storage=f"sqlite:///{tmp_path / 'o.db'}", progress=False)
    problem = prepare(digits, config)
    strategy = make_strategy("random", problem.space, 0, "stopped", config.resolved_storage())
    tracker = MlflowTracker.open(mlflow_uri, "autoq")
    tracker.start("stopped", params={}, tags={})
    book = TrialBook(strategy, problem.cost_model, problem.budget, [], 5, 0, tracker, backend="ray")
    logged, waiting = book.next(), book.next()  # two in flight: one a worker logged, one it had not finished
    number = logged.proposal.number
    run_id = tracker.log_trial(number, {**trial_metrics(logged.cost), "quality": 0.5}, trial_tags(False, problem.cost_model, attempt="1"),
                               logged.proposal.assignment)
    assert record_logged(book) == 1
    assert list(book.in_flight) == [waiting.proposal.number]
    assert book.points[-1].quality == 0.5 and book.points[-1].run_id == run_id
    assert strategy.study.trials[number].state.name == "COMPLETE"


def test_python_api_with_relative_store_leaves_a_caller_ray_running(local_ray, mlflow_uri, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # mlflow_uri's database is tmp_path / "mlflow.db": name it relative, as the CLI default does
    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=3, backend="ray", tracking_uri="sqlite:///mlflow.db", progress=False)
    assert ray.is_initialized()
    runs = child_runs(MlflowClient(mlflow_uri), result.parent_run_id)
    assert len(runs) == 3 and all(r.data.tags.get("backend") == "ray" for r in runs)  # logged by the workers, into the same store


def test_resume_on_ray_continues_an_optuna_backend_search(local_ray, digits, mlflow_uri, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = _search(digits, n_trials=6, tracking_uri=mlflow_uri, storage=storage, study_name="mixed")
    resumed = _search(digits, n_trials=12, tracking_uri=mlflow_uri, storage=storage, study_name="mixed", resume=True, backend="ray", workers=2)
    assert resumed.parent_run_id == first.parent_run_id and len(resumed.points) == 12
    assert set(first.points) <= set(resumed.points)
    runs = child_runs(MlflowClient(mlflow_uri), first.parent_run_id)
    assert len(runs) == 12 and len({r.data.tags["autoq.trial"] for r in runs}) == 12


def test_signal_handlers_are_restored_after_a_ray_search(local_ray, digits):
    import signal

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    _search(digits, n_trials=4, backend="ray", workers=1)
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_the_error_a_failed_worker_records_is_the_line_that_says_what_happened():
    from autoq.engine.ray_backend import _error_summary

    raised = ("Failure # 1 (occurred at 2026-12-01_23-00-00)\nray::AutoqTrainable.__init__() (pid=1, ip=1.2.3.4)\n"
              "Traceback (most recent call last):\n  File \"x.py\", line 1, in f\nRuntimeError: secret-cause\n")
    assert _error_summary(raised) == "RuntimeError: secret-cause"
    died = "Failure # 1 (occurred at 2026-12-01_23-00-00)\nThe actor died unexpectedly before finishing this task.\n\tclass_name: X\n"
    assert _error_summary(died) == "The actor died unexpectedly before finishing this task."
    assert _error_summary("") == ""


def test_a_stop_after_the_deadline_with_trials_running_is_an_interruption():
    """After --timeout the searcher lets running trials end; a Ctrl-C then stopped Tune and the search ended FINISHED,
    exit 0, its trials left RUNNING in Optuna (the optuna backend ends KILLED with the resume command)."""
    import math

    from autoq.engine.ray_backend import stopped_early
    from autoq.engine.runner import prepare
    from autoq.engine.seeds import uniform_seeds
    from autoq.engine.strategy import QueueStrategy
    from autoq.engine.trials import TrialBook

    problem = prepare(load_workload("digits-cnn"), SearchConfig(budget="8bits", tracking_uri=None))
    seeds = uniform_seeds(problem.space, problem.cost_model, problem.budget)
    book = TrialBook(QueueStrategy(problem.space, iter(seeds), "s", None), problem.cost_model, problem.budget, set(), n_trials=3,
                     max_retries=0, tracker=None)
    running = book.next()
    assert stopped_early(book, timed_out=True)  # past the deadline, but a trial is still in flight: Tune was stopped
    book.record(running.proposal.number, 0.9, None)
    assert not stopped_early(book, timed_out=True)  # the deadline ended it, nothing left running
    assert stopped_early(book, timed_out=False)  # too few done, before any deadline
    with pytest.warns(AutoqWarning, match=r"trial 1 failed \(boom\)"):  # the first failure, said
        for _ in range(2):
            book.record(book.next().proposal.number, math.nan, "boom")
    assert book.done() and not stopped_early(book, timed_out=False)


def test_a_workload_that_cannot_reach_the_workers_is_one_short_error(local_ray, tmp_path):
    """Ray's message repeated the workload's repr, every calibration tensor in it: 133 kB, the culprit at its end."""
    import threading

    import torch

    lock = threading.Lock()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    data = [torch.randn(64, 16) for _ in range(8)]

    def evaluate(m):
        with lock:
            return float(-m(data[0]).detach().var())

    # the line that names the culprit: the first one alone ended in 'Could not serialize the put value Workload(...):'
    with pytest.raises(AutoqError, match=r"cannot be sent to Ray workers: cannot pickle '_thread.lock' object \(at .*lock\); .*must pickle") as info:
        autoq.search(model, data, evaluate, budget="6bits", n_trials=2, backend="ray", tracking_uri=None, storage=None, progress=False,
                     seed_from="none")
    assert len(str(info.value)) < 1000
    with open(tmp_path / "log.txt", "w") as log:  # cloudpickle's own refusal, a PicklingError: it was a raw traceback

        def logging_evaluate(m):
            log.write("scored\n")
            return float(-m(data[0]).detach().var())

        with pytest.raises(AutoqError, match="cannot be sent to Ray workers: Cannot pickle files that are not opened for reading: w; "):
            autoq.search(model, data, logging_evaluate, budget="6bits", n_trials=2, backend="ray", tracking_uri=None, storage=None,
                         progress=False, seed_from="none")
    # nothing left for Ray to put at its next init: tune.with_parameters kept the failed value and every later ray.init of
    # the process (the next test module's) failed on it
    pending = [h.__self__.to_flush for h in ray._private.worker._post_init_hooks if hasattr(getattr(h, "__self__", None), "to_flush")]
    assert not any(pending)
    assert "batches" in repr(load_workload("digits-cnn")) and len(repr(load_workload("digits-cnn"))) < 300


def test_a_ray_search_lists_its_points_in_trial_order_as_it_reloads(local_ray, digits, mlflow_uri, tmp_path):
    """Its points were in the order the workers finished them, so the result differed from `SearchResult.from_mlflow`
    of its own run (and from the optuna backend's, in trial order). The first trial a worker takes sleeps here, so that
    the other worker finishes later trials first."""
    import time

    driver = os.getpid()

    def evaluate(model):
        if os.getpid() != driver:
            try:
                os.close(os.open(tmp_path / "slept", os.O_CREAT | os.O_EXCL))
                time.sleep(4)
            except FileExistsError:
                pass
        return digits.evaluate(model)

    workload = make_workload(digits.model, digits.calibration, evaluate, name="digits-slow-first")
    result = _search(workload, n_trials=8, backend="ray", workers=2, tracking_uri=mlflow_uri, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [p.trial for p in result.points] == sorted(p.trial for p in result.points)
    assert autoq.SearchResult.from_mlflow(result.parent_run_id, mlflow_uri) == result


def test_an_evaluate_from_a_folder_the_workers_do_not_search_reaches_them_or_stops_the_search_at_once(local_ray, tmp_path, monkeypatch):
    """An ``evaluate`` imported from the caller's own folder failed every trial with ModuleNotFoundError on the
    workers (60 failed actors, 242 s) before 'every trial failed'. Its module now goes by value; one it imports in turn
    still cannot be imported there, and the first such failure stops the search with what to do."""
    import importlib

    import optuna
    import torch
    from torch import nn

    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "autoq_t_helper.py").write_text("def mse(a, b):\n    return float(((a - b) ** 2).mean())\n")
    (lib / "autoq_t_metric.py").write_text(
        "import torch\nimport autoq_t_helper\n\nX = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))\n\n"
        "def evaluate(model):\n    with torch.no_grad():\n        return -float(model(X).pow(2).mean())\n\n"
        "def evaluate_with_helper(model):\n    with torch.no_grad():\n        return -autoq_t_helper.mse(model(X), 0 * X[:, :8])\n")
    monkeypatch.syspath_prepend(str(lib))
    metric = importlib.import_module("autoq_t_metric")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)).eval()
    data = [torch.randn(4, 16) for _ in range(4)]
    common = dict(n_trials=4, seed_from="none", backend="ray", workers=1, tracking_uri=None, storage=None, progress=False)
    assert len(autoq.search(model, data, metric.evaluate, **common).points) == 4
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    with pytest.raises(AutoqError, match=r"the Ray workers cannot load .*\(ModuleNotFoundError: No module named 'autoq_t_helper'\).*stopped at once"), \
            pytest.warns(AutoqWarning, match="No module named 'autoq_t_helper'"):
        autoq.search(model, data, metric.evaluate_with_helper, **{**common, "storage": storage}, study_name="helper", max_retries=5)
    tried = optuna.load_study(study_name="helper", storage=storage).get_trials(deepcopy=False)
    failed = [t for t in tried if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1 and "No module named 'autoq_t_helper'" in failed[0].user_attrs["error"]  # not 4 trials x 6 attempts
    assert not any(t.state == optuna.trial.TrialState.COMPLETE for t in tried)


@pytest.mark.parametrize("backend", ["optuna", "ray"])
def test_a_store_that_fails_once_while_a_result_is_recorded_stops_the_search_on_either_backend(request, digits, mlflow_uri, tmp_path,
                                                                                               monkeypatch, backend):
    """On Ray the driver records a result inside Tune's searcher callback, whose exceptions Tune turns into that trial's
    failure: the search went on without the trial, returned as if whole, and left its MLflow run unfinished. The trial
    whose run failed to log was taken from those in flight first, and stayed RUNNING in Optuna's storage."""
    from mlflow.exceptions import MlflowException

    from autoq.engine.trials import TrialBook
    from autoq.tracking.mlflow_logger import MlflowTracker

    calls = []

    def log_failing_once(tracker, number, *args):  # in process, the third trial's run: the store drops the request
        calls.append(number)
        if len(calls) == 3:
            raise MlflowException("API request to http://tracking:5000 failed: Connection refused")
        return log(tracker, number, *args)

    def record_failing_once(book, number, quality, error, run_id=None):  # on Ray a worker logs the run: the driver's record
        calls.append(number)
        if len(calls) == 3:
            book.tracker.failure = exc = RuntimeError("API request to http://tracking:5000 failed: Connection refused")
            raise exc
        return record(book, number, quality, error, run_id)

    log, record = MlflowTracker._log_trial, TrialBook._record
    if backend == "ray":
        request.getfixturevalue("local_ray")
        monkeypatch.setattr(TrialBook, "_record", record_failing_once)
    else:
        monkeypatch.setattr(MlflowTracker, "_log_trial", log_failing_once)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    options = dict(n_trials=6, seed_from="none", tracking_uri=mlflow_uri, storage=storage, study_name="flaky", backend=backend)
    with pytest.raises(AutoqError, match=r"failed a request \(API request .*\); the search stopped after 2 finished trial\(s\)"):
        _search(digits, **options)
    states = Counter(t.state.name for t in optuna.load_study(study_name="flaky", storage=storage).trials)
    assert states["RUNNING"] == 0 and states["COMPLETE"] == 2 and states["FAIL"] == 1, states  # failed as interrupted, queued
    monkeypatch.setattr(MlflowTracker, "_log_trial", log)
    monkeypatch.setattr(TrialBook, "_record", record)
    resumed = _search(digits, **options, resume=True)
    assert len(resumed.points) == 6
    runs = child_runs(MlflowClient(mlflow_uri), resumed.parent_run_id)
    assert sorted(int(r.data.tags["autoq.trial"]) for r in runs if r.info.status == "FINISHED") == sorted(p.trial for p in resumed.points)


def test_a_workers_error_text_is_summed_up_by_its_last_exception_line():
    """The trial's error (and the warning) is the exception that ended the worker: the last of a chained traceback, a
    KeyboardInterrupt or SystemExit too; a report without a traceback gives its first line."""
    from autoq.engine.ray_backend import _culprit, _error_summary

    chained = ("Failure # 1 (occurred at 2026-12-07)\nray::ImplicitFunc.train()\nTraceback (most recent call last):\n  File \"x.py\", line 1\n"
               "ValueError: first\n\nDuring handling of the above exception, another exception occurred:\n\nRuntimeError: last\n")
    assert _error_summary(chained) == "RuntimeError: last"
    for raised in ("KeyboardInterrupt", "SystemExit: 3"):
        assert _error_summary(f"ray::ImplicitFunc.train()\nTraceback (most recent call last):\n  File \"x.py\", line 1\n{raised}\n") == raised
    assert _error_summary("The actor died unexpectedly before finishing this task.\n") == "The actor died unexpectedly before finishing this task."
    # a serialization report's first line, where it names no culprit, without the colon that introduced the rest
    assert _culprit("Could not serialize the put value Workload(x):\nmore") == "Could not serialize the put value Workload(x)"


def test_autoqs_own_modules_go_to_the_workers_by_name():
    """An editable install's modules are the user's own code (pickled by value), but autoq's are imported by name on
    the workers, whatever its install: the workers' autoq registries are then autoq's, not copies."""
    from importlib.metadata import packages_distributions

    import autoq.ptq.registry
    from autoq.engine.ray_backend import _users_own

    assert not _users_own(autoq.ptq.registry, packages_distributions()) and not _users_own(autoq, packages_distributions())


def test_a_worker_that_cannot_import_the_workloads_code_stops_the_search(mlflow_uri):
    """Tune's searcher, driven as Tune drives it (no Ray started): a worker failing with an ImportError (the workload's
    module missing there) stops the search, since every trial would fail alike; the failed run's error tag keeps the
    traceback's end (cut to 5000 characters from its start, the exception was lost), and a failure Tune gave no text for
    keeps the summary as its tag."""
    from ray.tune.search import Searcher

    from autoq.engine.ray_backend import BookSearcher
    from autoq.engine.runner import prepare
    from autoq.engine.seeds import uniform_seeds
    from autoq.engine.strategy import QueueStrategy
    from autoq.engine.trials import TrialBook
    from autoq.tracking import MlflowTracker

    problem = prepare(load_workload("digits-cnn"), SearchConfig(budget="8bits", tracking_uri=None))
    tracker = MlflowTracker.open(mlflow_uri, "import-error")
    parent = tracker.start("s", params={}, tags={})
    seeds = uniform_seeds(problem.space, problem.cost_model, problem.budget)[-3:]
    book = TrialBook(QueueStrategy(problem.space, iter(seeds), "s", None), problem.cost_model, problem.budget, set(), n_trials=3,
                     max_retries=0, tracker=tracker, backend="ray")
    searcher = BookSearcher(book, None)
    assert all(isinstance(searcher.suggest(t), dict) for t in ("a", "b"))
    searcher.on_trial_complete("b", error=True)
    with pytest.warns(AutoqWarning, match="the Ray worker failed: no error text"):
        searcher.record_error("b", "")
    searcher.on_trial_complete("a", error=True)
    traceback = "Failure # 1\n" + "  File \"worker.py\", line 1, in <module>\n" * 300 + "ImportError: cannot import name 'net' from 'mine'\n"
    searcher.record_error("a", traceback)
    assert searcher.fatal == "ImportError: cannot import name 'net' from 'mine'"
    assert searcher.suggest("c") == Searcher.FINISHED  # the third seed is never started
    errors = {r.data.tags["autoq.trial"]: r.data.tags["error"] for r in child_runs(MlflowClient(mlflow_uri), parent)}
    assert errors["1"] == "the Ray worker failed: no error text"
    assert len(errors["0"]) == 5000 and errors["0"].endswith("ImportError: cannot import name 'net' from 'mine'\n")
