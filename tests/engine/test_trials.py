"""Failures: a trial that raises or returns NaN is recorded with its error, retried, and never stops the search."""

from __future__ import annotations

import math

import optuna
import pytest
import torch
from helpers import child_runs
from mlflow.tracking import MlflowClient
from torch import nn

import autoq
from autoq.errors import AutoqError, AutoqWarning


def tiny_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 8)).eval()


class FaultyMetric:
    """Negative output MSE to the unquantized model; call number k in ``raises`` raises, in ``nans`` gives NaN."""

    def __init__(self, model: nn.Module, raises=(), nans=(), sticky: bool = False) -> None:
        self.x = torch.randn(64, 32, generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            self.target = model(self.x)
        self.calls, self.raises, self.nans = 0, set(raises), set(nans)
        self.sticky, self.doomed = sticky, set()  # sticky: an assignment that failed once always fails

    def __call__(self, model: nn.Module) -> float:
        self.calls += 1
        weights = tuple(float(m.weight.detach().sum()) for m in model if isinstance(m, nn.Linear))
        if self.calls in self.raises or weights in self.doomed:
            if self.sticky:
                self.doomed.add(weights)
            raise RuntimeError(f"injected fault in call {self.calls}")
        if self.calls in self.nans:
            return math.nan
        with torch.no_grad():
            return -float(((model(self.x) - self.target) ** 2).mean())


def _batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(16, 32, generator=g) for _ in range(4)]


def test_raising_and_nan_trials_are_retried_and_visible_in_mlflow(tmp_path, mlflow_uri):
    model = tiny_mlp()
    metric = FaultyMetric(model, raises={3}, nans={5})  # call 1 is the unquantized reference
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    # the first failure is said as it happens, even without a progress bar (it was silent in Python without MLflow)
    with pytest.warns(AutoqWarning, match=r"trial \d+ failed \(RuntimeError: injected fault in call 3\); the search goes on: it "
                      r"retries its assignment up to 1 time\(s\), then counts it failed .*; each failed trial's error is its MLflow run's 'error' tag") as said:
        result = autoq.search(model, _batches(), metric, budget="5bits", n_trials=10, max_retries=1, tracking_uri=mlflow_uri, storage=storage,
                              study_name="faulty", progress=False)
    assert len([w for w in said if "failed (" in str(w.message)]) == 1  # once: the NaN trial after it is counted, not said

    assert len(result.points) == 10 and result.n_failed == 0  # both failures succeeded on their retry
    study = optuna.load_study(study_name="faulty", storage=storage)
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert sorted(t.user_attrs["error"] for t in failed) == ["RuntimeError: injected fault in call 3", "quality is nan"]
    retried = {tuple(sorted(t.params.items())) for t in failed}
    complete = [tuple(sorted(t.params.items())) for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert retried <= set(complete)  # the same assignments were evaluated again and finished
    for t in failed:  # each retry names the trial it retries, and is a seed only where that trial was one
        (retry,) = [r for r in study.trials if r.user_attrs.get("autoq.retry_of") == t.number]
        assert retry.params == t.params and bool(retry.user_attrs.get("seeded")) == bool(t.user_attrs.get("seeded"))

    client = MlflowClient(mlflow_uri)
    runs = child_runs(client, result.parent_run_id)
    failed_runs = [r for r in runs if r.info.status == "FAILED"]
    assert sorted(r.data.tags["error"] for r in failed_runs) == ["RuntimeError: injected fault in call 3", "quality is nan"]
    assert all("quality" not in r.data.metrics for r in failed_runs)
    assert all(r.data.tags["pareto"] == "false" for r in failed_runs)  # tags.pareto = 'false' finds them too
    assert sum(r.info.status == "FINISHED" for r in runs) == 10
    assert client.get_run(result.parent_run_id).info.status == "FINISHED"


def test_a_trial_failing_past_its_retries_counts_as_evaluated(capsys):
    model = tiny_mlp()
    metric = FaultyMetric(model, raises={2}, sticky=True)  # the first trial fails, and so does its one retry
    with pytest.warns(AutoqWarning, match=r"trial 0 failed \(RuntimeError: injected fault in call 2\)") as said:
        result = autoq.search(model, _batches(), metric, budget="5bits", n_trials=6, max_retries=1, tracking_uri=None, storage=None)
    assert "MLflow" not in str(said[0].message)  # no store: no tag to point to
    assert result.n_failed == 1 and len(result.points) == 5
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert "failed=1" in [line for line in bar if "6/6" in line][-1]  # as the summary counts: it said failed=2 (with the retry)


def test_every_trial_failing_is_an_error_not_a_hang():
    model = tiny_mlp()
    metric = FaultyMetric(model, raises=set(range(2, 100)))
    with pytest.raises(AutoqError, match="every trial failed") as info, pytest.warns(AutoqWarning, match="trial 0 failed"):
        autoq.search(model, _batches(), metric, budget="5bits", n_trials=3, max_retries=1, tracking_uri=None, storage=None, progress=False)
    # the cause, said here: with storage=None the study it pointed to was gone
    assert str(info.value) == "every trial failed (3); the first error: RuntimeError: injected fault in call 2"


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"backend": "spark"}, "unknown backend 'spark'"),
        ({"workers": 2}, "need the ray backend"),
        ({"workers": 0, "backend": "ray"}, r"workers \(--workers\) must be at least 1"),
        ({"max_retries": -1}, r"max_retries \(--max-retries\) must be 0 or more"),
        ({"backend": "ray", "cpus_per_trial": 0}, r"cpus_per_trial \(--cpus-per-trial\) must be at least 0.0001"),
        ({"backend": "ray", "cpus_per_trial": float("nan")}, r"cpus_per_trial \(--cpus-per-trial\) must be at least 0.0001 .* got nan"),
        ({"backend": "ray", "cpus_per_trial": 1e-9}, "Ray's smallest share of a resource"),
        ({"backend": "ray", "gpus_per_trial": 1e-5}, r"gpus_per_trial \(--gpus-per-trial\) 0 or at least 0.0001"),
        ({"address": "auto"}, r"--address \(address=\) set how Ray runs trials and the optuna backend would ignore them"),
        ({"cpus_per_trial": 2, "gpus_per_trial": 1}, r"--cpus-per-trial \(cpus_per_trial=\), --gpus-per-trial \(gpus_per_trial=\) set how"),
        ({"storage": "optuna.db"}, "Optuna storage 'optuna.db' is not a database URL; use one such as sqlite:///optuna.db"),
        # a journal file by its path, as optuna's CLI takes one: told what autoq takes, and the file as SQLite's URL
        ({"storage": "runs/j.log"}, r"\(in memory\); a SQLite file is named sqlite:///runs/j.log \(Optuna's journal files are not taken"),
        ({"storage": optuna.storages.InMemoryStorage()}, "storage must be a database URL .* got an object of type InMemoryStorage"),
        pytest.param({"backend": "ray", "gpus_per_trial": 0.5}, "needs a GPU", marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has a GPU")),
    ],
)
def test_bad_execution_options(options, needle):
    with pytest.raises(AutoqError, match=needle):
        autoq.SearchConfig(**options)


def test_ctrl_c_during_an_ask_lets_the_ask_finish_then_stops(tmp_path, monkeypatch):
    """Optuna's ask reads the study and writes a trial: a signal inside it is delivered once it returns."""
    import os
    import signal

    real_ask = optuna.Study.ask
    log: list[str] = []

    def ask(self, *args, **kwargs):
        if len(log) == 4:  # the fifth ask of the search
            os.kill(os.getpid(), signal.SIGINT)
        trial = real_ask(self, *args, **kwargs)
        log.append(f"asked {trial.number}")
        return trial

    monkeypatch.setattr(optuna.Study, "ask", ask)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    try:
        with pytest.raises(KeyboardInterrupt):
            autoq.search(tiny_mlp(), _batches(), budget="5bits", n_trials=10, tracking_uri=None, storage=storage, study_name="cut",
                         progress=False)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert log == [f"asked {i}" for i in range(5)]  # the fifth ask ran to its end before the interrupt
    trials = optuna.load_study(study_name="cut", storage=storage).trials
    # the asked trial is stored, and failed as interrupted with its picks queued again: it stayed RUNNING (in flight
    # only after the ask, it was not among the trials the stopped search released), as a notebook's study showed it
    assert [t.state.name for t in trials[:5]] == ["COMPLETE"] * 4 + ["FAIL"] and "RUNNING" not in {t.state.name for t in trials}
    assert trials[4].user_attrs.get("error", "").startswith("interrupted")
    retry = [t.system_attrs.get("fixed_params") for t in trials if t.user_attrs.get("autoq.retry_of") == 4 and t.state.name == "WAITING"]
    assert retry == [trials[4].params]


def test_a_trial_runs_mlflow_duration_is_its_evaluation(mlflow_uri):
    """Each trial's run was created after its evaluation: the MLflow UI showed ~70 ms for a 1 s trial."""
    import time

    model = tiny_mlp()

    def slow(m):
        time.sleep(0.3)
        return 1.0

    result = autoq.search(model, _batches(), slow, budget="5bits", n_trials=2, seed_from="none", tracking_uri=mlflow_uri, storage=None, progress=False)
    runs = child_runs(MlflowClient(mlflow_uri), result.parent_run_id)
    assert len(runs) == 2 and all(r.info.end_time - r.info.start_time >= 300 for r in runs)


def test_a_repeated_proposal_names_the_trial_it_repeats(mlflow_uri):
    """A sampler that proposes an evaluated assignment again gets its quality without an evaluation; the trial is
    told (the sampler learns from it) and logged like any, and names the first (autoq.repeat_of in Optuna, repeat_of in
    MLflow): Optuna's best_trials, less these repeats, is the frontier."""
    pins = {"^[026]$": "int4-ch-asym:rtn-mse"}  # one free layer: TPE repeats itself soon
    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=16, pins=pins, seed_from="none", tracking_uri=mlflow_uri, progress=False)
    first: dict = {}
    for p in result.points:
        first.setdefault(p.assignment, p.trial)
    repeats = {p.trial: first[p.assignment] for p in result.points if first[p.assignment] != p.trial}
    assert repeats  # measured: 9 of 16
    study = result.study()
    assert {t.number: t.user_attrs["autoq.repeat_of"] for t in study.trials if "autoq.repeat_of" in t.user_attrs} == repeats
    runs = child_runs(MlflowClient(mlflow_uri), result.parent_run_id)
    assert {int(r.data.tags["autoq.trial"]): int(r.data.tags["repeat_of"]) for r in runs if "repeat_of" in r.data.tags} == repeats
    # each told trial names its MLflow run, as the run names its trial (autoq.trial)
    assert {t.number: t.user_attrs["mlflow_run_id"] for t in study.trials if t.state.is_finished() and "mlflow_run_id" in t.user_attrs} == {
        int(r.data.tags["autoq.trial"]): r.info.run_id for r in runs}
    assert sorted(t.number for t in study.best_trials if t.number not in repeats) == sorted(p.trial for p in result.frontier)


def test_a_retry_queued_after_the_strategy_ran_out_is_still_run():
    """Two trials in flight (Ray workers) as the ILP's list ran out; the last one failed and was queued again, but the
    book had already called the search done: the retry stayed WAITING, neither run nor counted as failed."""
    from autoq.builtin import load_workload
    from autoq.engine.runner import SearchConfig, prepare
    from autoq.engine.seeds import uniform_seeds
    from autoq.engine.strategy import QueueStrategy
    from autoq.engine.trials import TrialBook

    problem = prepare(load_workload("digits-cnn"), SearchConfig(budget="8bits", tracking_uri=None))
    two = uniform_seeds(problem.space, problem.cost_model, problem.budget)[-2:]
    strategy = QueueStrategy(problem.space, iter(two), "s", None)
    book = TrialBook(strategy, problem.cost_model, problem.budget, set(), n_trials=10, max_retries=2, tracker=None)
    first, second = book.next(), book.next()
    assert book.next() is None and book.exhausted  # nothing new: the two in flight are the last
    book.record(first.proposal.number, 0.99, None)
    with pytest.warns(AutoqWarning, match=r"trial 1 failed \(RuntimeError: worker died\); .* up to 2 time\(s\)"):
        book.record(second.proposal.number, math.nan, "RuntimeError: worker died")  # queued again for its retry
    assert not book.done()
    retry = book.next()
    assert retry is not None and retry.proposal.assignment == second.proposal.assignment
    book.record(retry.proposal.number, 0.98, None)
    assert book.next() is None and book.done() and len(book.points) == 2


def test_a_repeat_of_an_assignment_that_failed_for_good_is_counted_without_a_warning():
    """A resume's sampler proposing an assignment that failed for good in the first session: it is not run, nor
    retried, and the warning said it would be retried."""
    import warnings
    from collections import Counter

    from autoq.builtin import load_workload
    from autoq.engine.runner import SearchConfig, prepare
    from autoq.engine.seeds import uniform_seeds
    from autoq.engine.strategy import QueueStrategy
    from autoq.engine.trials import TrialBook

    problem = prepare(load_workload("digits-cnn"), SearchConfig(budget="8bits", tracking_uri=None))
    doomed = uniform_seeds(problem.space, problem.cost_model, problem.budget)[-1]
    book = TrialBook(QueueStrategy(problem.space, iter([doomed]), "s", None), problem.cost_model, problem.budget, set(), n_trials=5,
                     max_retries=2, tracker=None)
    book.restore([], Counter({doomed: 3}), 0, 1)  # its 3 evaluations: 2 retries, then it failed for good
    with warnings.catch_warnings():
        warnings.simplefilter("error", AutoqWarning)
        assert book.next() is None
    assert book.n_failed == 2 and book.first_error.startswith("not evaluated again")  # restored 1, and this one


def test_the_timeout_ends_a_search_whose_sampler_proposes_only_repeats():
    """Every layer pinned: each proposal repeats the first trial, takes no evaluation, and the loop handing them out
    never looked at the clock (10**12 trials with a 5 s timeout ran until killed)."""
    import time

    from autoq.engine.trials import TrialBook

    class Endless:
        exhausted = False

        def ask(self):
            raise AssertionError("asked past the deadline")

    book = TrialBook(Endless(), None, None, (), n_trials=10, max_retries=0, tracker=None)
    assert book.next(deadline=time.perf_counter() - 1) is None
    pinned = {"budget": "16bits", "pins": {".": "int8-ch-asym:rtn-minmax"}, "tracking_uri": None, "storage": None, "progress": False,
              "seed_from": "none"}
    # the timeout counts the set-up, and a process's first search imports scipy, transformers, ... (1-1.4 s on a busy
    # 2-core machine): run first in its process, the search below ended before its first trial
    autoq.search(tiny_mlp(), _batches(), n_trials=1, **pinned)
    result = autoq.search(tiny_mlp(), _batches(), n_trials=10**5, timeout=2, **pinned)
    assert len({p.assignment for p in result.points}) == 1 and len(result.points) < 10**5  # all 10**5 took ~100 s


def test_the_closed_bar_counts_the_over_budget_proposals_after_the_last_finished_trial():
    """The bar's ``over_budget`` was set only when a trial finished: proposals over the budget after the last one
    left the closed bar a count short of the summary's."""
    import io

    from tqdm import tqdm

    from autoq.builtin import load_workload
    from autoq.engine.runner import SearchConfig, prepare
    from autoq.engine.strategy import QueueStrategy
    from autoq.engine.trials import TrialBook

    problem = prepare(load_workload("digits-cnn"), SearchConfig(budget="4.5bits", tracking_uri=None))
    uniform = problem.space.uniform_assignments()
    costs = {a: problem.budget.violation(problem.cost_model.cost(a)) for a in uniform}
    fits, over = next(a for a in uniform if costs[a] <= 0), [a for a in uniform if costs[a] > 0][:2]
    out = io.StringIO()
    bar = tqdm(total=10, file=out, desc="autoq search")
    book = TrialBook(QueueStrategy(problem.space, iter([fits, *over]), "s", None), problem.cost_model, problem.budget, set(),
                     n_trials=10, max_retries=0, tracker=None)
    book.show_on(bar)
    pending = book.next()
    book.record(pending.proposal.number, 0.9, None)
    assert book.next() is None and book.n_infeasible == 2
    bar.close()
    last = out.getvalue().rstrip().split("\r")[-1]
    assert last.endswith("best=0.9000, over_budget=2]") and "failed" not in last  # no count of none: it cut the bar at 80 columns


class _Clock:
    """``time`` for autoq.engine.trials, whose perf_counter a test moves on (``jump``): the timeout passes at an exact
    point of the search, whatever the machine's speed."""

    def __init__(self) -> None:
        import time

        self.real, self.shift = time, 0.0

    def __getattr__(self, name: str):
        return getattr(self.real, name)

    def perf_counter(self) -> float:
        return self.real.perf_counter() + self.shift


def test_a_timeout_after_failed_evaluations_says_so_with_the_first_error_and_how_to_go_on(tmp_path, monkeypatch):
    """Every evaluation failing until the timeout, retries still to come, ended in 'the timeout ended the search before
    its first trial; give it more time': the failures and their cause unsaid, and no resume command, though the same
    call was then refused (its study existed)."""
    from autoq.engine import trials

    clock = _Clock()
    monkeypatch.setattr(trials, "time", clock)
    model = tiny_mlp()
    metric = FaultyMetric(model, raises=set(range(2, 100)))

    def failing_then_late(m: nn.Module) -> float:
        if metric.calls >= 1:  # after the unquantized reference: the timeout passes as this evaluation fails
            clock.shift = 1e6
        return metric(m)

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    options = dict(budget="5bits", n_trials=3, max_retries=5, tracking_uri=None, storage=storage, study_name="late", progress=False)
    with pytest.raises(AutoqError) as info, pytest.warns(AutoqWarning, match="trial 0 failed"):
        autoq.search(model, _batches(), failing_then_late, timeout=1000, **options)
    assert str(info.value).startswith("no trial was evaluated: the timeout (1000.0 s) ended the search after 1 failed evaluation(s), retries "
                                      "still to come; the first error: RuntimeError: injected fault in call 2; fix its cause: the search "
                                      "was set up, kept in the Optuna study; continue with the same call with resume=True, study_name='late'")
    clock.shift = 0.0
    result = autoq.search(model, _batches(), FaultyMetric(model), resume=True, **options)  # as it says: the retry, then the rest
    assert len(result.points) == 3 and result.n_failed == 0


def test_a_timeout_before_the_first_trial_says_how_to_go_on(tmp_path):
    """The same call was then refused ('a study named ... already exists'): the message gave no resume command."""
    model = tiny_mlp()
    with pytest.raises(AutoqError, match=r"^no trial was evaluated: the timeout \(1e-06 s\) ended the search before its first trial; give it "
                                         r"more time: the search was set up, kept in the Optuna study; continue with the same call with resume=True"):
        autoq.search(model, _batches(), FaultyMetric(model), budget="5bits", n_trials=2, timeout=1e-6, tracking_uri=None,
                     storage=f"sqlite:///{tmp_path / 'optuna.db'}", progress=False)


def test_an_exception_whose_text_cannot_be_made_fails_its_trial_alone():
    """An evaluate raising an exception whose __str__ raises stopped the whole search with a traceback from autoq."""

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no text")

    model = tiny_mlp()
    metric = FaultyMetric(model)

    def evaluate(m: nn.Module) -> float:
        if metric.calls == 2:
            metric.calls += 1
            raise Unprintable
        return metric(m)

    with pytest.warns(AutoqWarning, match=r"failed \(Unprintable: \(its message could not be read: its __str__ raised\)\)"):
        result = autoq.search(model, _batches(), evaluate, budget="5bits", n_trials=4, max_retries=1, tracking_uri=None, storage=None,
                              progress=False)
    assert len(result.points) == 4 and result.n_failed == 0


def test_an_assignment_that_costs_exactly_the_budget_is_within_it():
    """A budget typed as a point's exact cost (a baseline's bits, or the cheapest, which the feasibility check allows)
    takes that point: its trial is evaluated and on the frontier, not counted over the budget."""
    model = tiny_mlp()
    first = autoq.search(model, _batches(), FaultyMetric(model), budget="16bits", n_trials=4, seed=0, tracking_uri=None, storage=None,
                         progress=False)
    exact = sorted(p.effective_bits for p in first.points if p.uniform)[-2]  # a baseline below the dearest
    result = autoq.search(model, _batches(), FaultyMetric(model), budget=f"{exact!r}bits", n_trials=4, seed=0, tracking_uri=None,
                          storage=None, progress=False)
    assert result.n_infeasible == 0 and result.best_uniform.effective_bits == exact
    assert any(p.effective_bits == exact for p in result.frontier)


def test_over_budget_proposals_are_pruned_in_the_optuna_storage_not_failed(tmp_path):
    """Told as FAIL, they read back on a resume as failed trials (28 of them here), and the resumed search stopped short
    of its target; the Optuna dashboard showed them as errors."""
    model = tiny_mlp()
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = autoq.search(model, _batches(), FaultyMetric(model), budget="3bits", n_trials=8, seed=0, tracking_uri=None, storage=storage,
                          progress=False)
    states = [t.state for t in optuna.load_study(study_name=result.study_name, storage=storage).trials]
    assert result.n_infeasible > 0 and states.count(optuna.trial.TrialState.PRUNED) == result.n_infeasible
    assert optuna.trial.TrialState.FAIL not in states and states.count(optuna.trial.TrialState.COMPLETE) == 8


class _Proposals:
    """A strategy proposing ``plan`` in order: True is an over-budget assignment, False one within it."""

    exhausted = False

    def __init__(self, plan: list[bool]) -> None:
        self.plan, self.n = plan, 0

    def ask(self):
        from autoq.engine.strategy import Proposal

        self.n += 1
        return Proposal(None, self.n, ("over" if self.plan[self.n - 1] else "fits", self.n))

    def tell(self, *args, **kwargs) -> None:
        pass


class _Bits:
    """A cost model pricing ``_Proposals``' assignments: 8 bits over the budget, 4 within it."""

    latency_source = None

    def cost(self, assignment):
        from autoq.cost import Cost

        return Cost(8.0 if assignment[0] == "over" else 4.0, 1000)


def _over_budget_book(plan: list[bool]):
    from autoq.budget import parse_budget
    from autoq.engine.trials import TrialBook

    return TrialBook(_Proposals(plan), _Bits(), parse_budget("5bits"), (), n_trials=10**6, max_retries=0, tracker=None)


def test_the_sampler_gets_2000_over_budget_proposals_in_a_row_and_no_more():
    """The limit that turns a sampler stuck over the budget into an error is 2000 in a row: the 2000th is still told and
    the next within-budget proposal evaluated, the 2001st is refused; a proposal within the budget starts the count again."""
    from autoq.engine.trials import MAX_OVER_BUDGET_IN_A_ROW

    assert MAX_OVER_BUDGET_IN_A_ROW == 2000
    book = _over_budget_book(([True] * 2000 + [False]) * 2)  # two runs of 2000, not 4000 in a row
    for k in (1, 2):
        pending = book.next()
        assert pending is not None and pending.proposal.assignment == ("fits", 2001 * k) and book.n_infeasible == 2000 * k
    with pytest.raises(AutoqError, match=r"the sampler proposed 2001 over-budget assignments in a row; try a larger budget or another --sampler"):
        _over_budget_book([True] * 2001 + [False]).next()


def test_a_failed_evaluation_of_an_assignment_in_flight_twice_is_no_repeat(mlflow_uri):
    """Two workers evaluating one assignment (proposed again while the first was in flight): the first finishes, the
    second fails. The failed run is no repeat of the first (it has no quality of its own to repeat): no repeat_of tag."""
    from autoq.builtin import load_workload
    from autoq.engine.runner import SearchConfig, prepare
    from autoq.engine.seeds import uniform_seeds
    from autoq.engine.strategy import QueueStrategy
    from autoq.engine.trials import TrialBook
    from autoq.tracking.mlflow_logger import MlflowTracker

    problem = prepare(load_workload("digits-cnn"), SearchConfig(budget="8bits", tracking_uri=None))
    twice = uniform_seeds(problem.space, problem.cost_model, problem.budget)[-1]
    tracker = MlflowTracker.open(mlflow_uri, "in-flight-twice")
    parent = tracker.start("s", params={}, tags={})
    book = TrialBook(QueueStrategy(problem.space, iter([twice, twice]), "s", None), problem.cost_model, problem.budget, set(),
                     n_trials=5, max_retries=0, tracker=tracker)
    first, second = book.next(), book.next()
    assert first.proposal.assignment == second.proposal.assignment and len(book.in_flight) == 2
    book.record(first.proposal.number, 0.97, None)
    with pytest.warns(AutoqWarning, match="worker died"):
        book.record(second.proposal.number, math.nan, "RuntimeError: worker died")
    runs = {r.info.status: r for r in child_runs(MlflowClient(mlflow_uri), parent)}
    assert sorted(runs) == ["FAILED", "FINISHED"]
    assert "repeat_of" not in runs["FAILED"].data.tags and runs["FAILED"].data.tags["error"] == "RuntimeError: worker died"
