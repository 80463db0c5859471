"""The strategy registry (optuna, ilp, greedy, random) and sensitivity seeds, end to end on the digits CNN."""

from __future__ import annotations

import copy

import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient

from autoq.builtin import load_workload
from autoq.engine import SearchConfig, run_search
from autoq.engine.ilp import solve_ilp
from autoq.engine.knapsack import Knapsack
from autoq.engine.runner import prepare
from autoq.engine.seeding import seed_table, space_scores
from autoq.engine.seeds import fill_seeds, uniform_seeds
from autoq.engine.strategies import strategy_names
from autoq.engine.strategy import OptunaStrategy
from autoq.errors import AutoqError, AutoqWarning

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    return load_workload("digits-cnn")


@pytest.fixture(scope="module")
def problem(digits):
    """digits-cnn at 3.5 bits, checked once: Prepared and everything in it are frozen, so the tests share it."""
    return prepare(digits, SearchConfig(budget="3.5bits", tracking_uri=None))


def search(workload, **options):
    return run_search(workload, SearchConfig(**{"budget": "3.5bits", "n_trials": 8, "tracking_uri": None, "storage": None, "progress": False, **options}))


def ilp_optimum(workload, budget="3.5bits", metric="kl"):
    problem = prepare(workload, SearchConfig(budget=budget, tracking_uri=None))
    table = seed_table(workload, problem.space, metric, progress=False)
    knapsack = Knapsack.build(problem.space, problem.cost_model, problem.budget, space_scores(table, problem.space))
    return knapsack.assignment(solve_ilp(knapsack))


def test_registry_names():
    assert set(strategy_names()) == {"optuna", "ilp", "greedy", "random"}


@pytest.mark.parametrize("strategy", ["ilp", "greedy", "random"])
def test_each_strategy_runs_alone_within_budget(digits, strategy):
    """Greedy's walk may run out of new assignments first: after 7 of the 8 in one process of two threads, none in
    pytest-xdist's workers of one (the scores round apart), so it is held to distinct points, not to eight."""
    result = search(digits, strategy=strategy, seed_from=None if strategy == "random" else "kl")
    assert len(result.points) == 8 if strategy != "greedy" else 6 <= len(result.points) <= 8
    if strategy != "random":
        assert len({p.assignment for p in result.points}) == len(result.points)
    assert all(p.effective_bits <= 3.5 for p in result.points)
    assert not any(p.uniform for p in result.points)  # run alone: no uniform baselines
    if strategy == "ilp":
        assert result.points[0].assignment == ilp_optimum(digits)
    if strategy == "random":
        assert len({p.assignment for p in result.points}) >= 6


@pytest.mark.parametrize("strategy", ["ilp", "greedy"])
def test_a_strategy_out_of_new_assignments_ends_the_search_instead_of_repeating(digits, strategy, capsys):
    """30 ILP trials held 7 distinct assignments: the other 23 were repeats, each an MLflow run and a trial counted."""
    result = search(digits, strategy=strategy, seed_from="kl", n_trials=60)
    assert 0 < len(result.points) < 60
    assert len({p.assignment for p in result.points}) == len(result.points)  # no repeats
    assert f"the {strategy!r} strategy has no more distinct assignments to propose; the search ends after {len(result.points)} of its 60" in capsys.readouterr().err


@pytest.mark.parametrize("strategy", ["ilp", "greedy"])
def test_a_strategy_proposes_as_trials_ask_so_a_timeout_covers_it(digits, strategy):
    """Every proposal was made up front: --n-trials 1000 solved 6,000 ILPs (a minute) before the first trial, and a
    --timeout of 5 s ended it with 'no trial was evaluated'. Now they are made as the trials ask, and a small space's
    ILP runs dry after a few dozen solves that find nothing new."""
    search(digits, strategy=strategy, seed_from="kl", n_trials=2)  # the table, cached: not the timed part
    result = search(digits, strategy=strategy, seed_from="kl", n_trials=5000, timeout=30)
    assert 0 < len(result.points) < 5000 and len({p.assignment for p in result.points}) == len(result.points)


class CountingSampler(optuna.samplers.RandomSampler):
    """A sampler of the caller's own (Optuna's random one, counting the parameters it draws into ``counter``, a list
    shared with the copy a search samples with, as the caller built it)."""

    def __init__(self, seed: int, counter: list[int] | None = None) -> None:
        super().__init__(seed=seed)
        self.counter = counter if counter is not None else [0]

    def __deepcopy__(self, memo):  # the search's copy counts into the caller's list
        copied = CountingSampler.__new__(CountingSampler)
        copied.__dict__.update({k: (v if k == "counter" else copy.deepcopy(v, memo)) for k, v in self.__dict__.items()})
        return copied

    @property
    def draws(self) -> int:
        return self.counter[0]

    def sample_independent(self, study, trial, param_name, param_distribution):
        self.counter[0] += 1
        return super().sample_independent(study, trial, param_name, param_distribution)


def test_an_optuna_sampler_instance_drives_the_study_and_is_recorded_by_class(digits, mlflow_uri, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    sampler = CountingSampler(seed=3)
    result = search(digits, sampler=sampler, n_trials=24, seed_from="none", storage=storage, study_name="mine", tracking_uri=mlflow_uri)
    study = optuna.load_study(study_name="mine", storage=storage)
    sampled = [t for t in study.trials if not t.user_attrs.get("seeded")]
    assert sampled and sampler.draws == 4 * len(sampled)  # every non-seeded trial's 4 layers came from it
    assert len(result.points) == 24 and all(p.effective_bits <= 3.5 for p in result.points)
    assert MlflowClient(mlflow_uri).get_run(result.parent_run_id).data.params["sampler"] == "CountingSampler"
    resumed = search(digits, sampler=CountingSampler(seed=3), n_trials=26, seed_from="none", storage=storage, study_name="mine",
                     tracking_uri=None, resume=True)
    assert len(resumed.points) == 26
    with pytest.raises(AutoqError, match="sampler 'tpe' \\(stored: 'CountingSampler'\\)"):
        search(digits, n_trials=28, seed_from="none", storage=storage, study_name="mine", tracking_uri=None, resume=True)


def test_nsga2_breeds_from_the_seeds_too(digits, tmp_path):
    """An enqueued trial is never sampled, so NSGA-II gave the seeds (baselines, the sensitivity table's picks) no
    generation: they were in no population and never parents, and ``--sampler nsga2`` ran as if unseeded."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    search(digits, sampler="nsga2", n_trials=12, storage=storage, study_name="ga")
    study = optuna.load_study(study_name="ga", storage=storage)
    seeded = {t.number for t in study.trials if t.user_attrs.get("seeded") and t.state == optuna.trial.TrialState.COMPLETE}
    population = {t.number for t in optuna.samplers.NSGAIISampler().get_population(study, 0)}
    assert seeded and seeded <= population


def test_a_study_stored_before_latency_was_an_objective_resumes_with_its_two(problem, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    space = problem.space
    optuna.create_study(study_name="old", storage=storage, directions=["maximize", "minimize"])
    strategy = OptunaStrategy(space, optuna.samplers.RandomSampler(seed=0), "old", storage, resume=True, with_latency=True)
    proposal = strategy.ask()
    strategy.tell(proposal, (0.9, 4.0, 0.25), violation=-1.0)
    assert strategy.study.trials[0].values == [0.9, 4.0]
    assert strategy.study.metric_names == ["quality", "effective_bits"]


@pytest.mark.parametrize("direction", ["minimize", "maximize"])  # a user's single-objective study maximizing its own metric too
def test_a_study_with_other_objectives_is_refused_on_resume(problem, tmp_path, direction):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    space = problem.space
    optuna.create_study(study_name="foreign", storage=storage, directions=[direction])
    with pytest.raises(AutoqError, match=rf"optimises 1 objective\(s\) \['{direction}'\], not quality \(maximize\), effective_bits \(minimize\)"):
        OptunaStrategy(space, optuna.samplers.RandomSampler(seed=0), "foreign", storage, resume=True)


def test_ilp_seeds_from_fisher_by_default_and_refuses_none(digits):
    assert search(digits, strategy="ilp", seed_from="auto", n_trials=1).points[0].assignment == ilp_optimum(digits, metric="fisher")
    for strategy, seed_from in (("ilp", "none"), ("greedy", None)):  # none used to compute fisher anyway, unasked
        with pytest.raises(AutoqError, match=f"--strategy {strategy} solves on a sensitivity table, and --seed-from none gives it none"):
            SearchConfig(strategy=strategy, seed_from=seed_from)


def test_seeded_optuna_enqueues_uniform_then_raise_then_ilp_seeds(digits, problem):
    uniform = uniform_seeds(problem.space, problem.cost_model, problem.budget)
    n_fill = 9
    result = search(digits, seed_from="kl", n_trials=len(uniform) + n_fill, n_fill_seeds=n_fill)
    seeded = [p.assignment for p in result.points]
    assert seeded[: len(uniform)] == uniform
    # up to a third of the fill seeds only raise layers above the dearest uniform baseline (fewer when the
    # budget leaves room for fewer distinct raises: 2 here with scipy 1.17.1) ...
    top, bits = uniform[-1], problem.cost_model.layer_bits
    raises = [all(bits(layer, a[layer.name]) >= bits(layer, top[layer.name]) for layer in problem.space.layers)
              for a in seeded[len(uniform) : len(uniform) + n_fill // 3]]
    assert raises[0] and raises == sorted(raises, reverse=True), raises
    # ... then the ILP sweep, the optimum at the budget first unless a raise seed already is it
    assert ilp_optimum(digits) in seeded
    assert len(set(seeded)) == len(seeded)
    assert result.best.quality == max(p.quality for p in result.points)  # (>= the best uniform: so, whatever the search)


def test_unseeded_search_keeps_the_random_fill_seeds(digits, problem):
    uniform = uniform_seeds(problem.space, problem.cost_model, problem.budget)
    fills = fill_seeds(problem.space, problem.cost_model, problem.budget, 2, 0)
    for seed_from in ("none", None):
        result = search(digits, n_trials=len(uniform) + 2, n_fill_seeds=2, seed_from=seed_from)
        assert [p.assignment for p in result.points] == uniform + fills


def test_default_search_seeds_from_fisher(digits, mlflow_uri):
    assert SearchConfig().seed_from == "auto"
    default = search(digits, n_trials=10, tracking_uri=mlflow_uri)
    fisher = search(digits, n_trials=10, seed_from="fisher")
    assert [p.assignment for p in default.points] == [p.assignment for p in fisher.points]
    assert MlflowClient(mlflow_uri).get_run(default.parent_run_id).data.params["seed_from"] == "fisher"


class NoGradient(torch.nn.Module):
    """A model whose forward runs without autograd (as a wrapped inference module may): no Fisher table."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))

    def forward(self, x):
        with torch.no_grad():
            return self.body(x)


def test_default_seeding_falls_back_with_a_warning_where_a_named_metric_fails(capsys):
    import autoq

    batches = [torch.randn(32, 16, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    options = {"budget": "4.5bits", "n_trials": 6, "tracking_uri": None, "storage": None, "progress": False}
    with pytest.warns(AutoqWarning, match="starting from random budget-filling mixes instead"):
        fallback = autoq.search(NoGradient(), batches, **options)
    unseeded = autoq.search(NoGradient(), batches, seed_from="none", **options)
    assert [p.assignment for p in fallback.points] == [p.assignment for p in unseeded.points]
    with pytest.raises(AutoqError, match="fisher metric needs gradients"):
        autoq.search(NoGradient(), batches, seed_from="fisher", **options)


def test_strategy_and_seed_from_are_logged(digits, mlflow_uri):
    result = search(digits, strategy="greedy", seed_from="kl", n_trials=3, tracking_uri=mlflow_uri)
    params = MlflowClient(mlflow_uri).get_run(result.parent_run_id).data.params
    assert (params["strategy"], params["seed_from"]) == ("greedy", "kl")


def test_a_seed_greedy_would_ignore_is_refused_and_not_compared_on_resume(digits, tmp_path):
    """greedy proposed the same trials whatever --seed (two studies of seeds 0 and 5 held identical trials), said
    nothing of it, and a resume with another seed was refused for a setting that changed nothing."""
    with pytest.raises(AutoqError, match=r"--strategy greedy proposes the same assignments whatever the seed, so --seed 5 \(seed=5\) would be ignored"):
        SearchConfig(strategy="greedy", seed=5)
    assert SearchConfig(strategy="random", seed=5).seed == 5 and SearchConfig(strategy="ilp", seed=5).seed == 5  # they use it
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    search(digits, strategy="greedy", seed_from="sqnr", n_trials=2, storage=storage, study_name="g")
    again = search(digits, strategy="greedy", seed_from="sqnr", n_trials=3, storage=storage, study_name="g", resume=True, seed=7)
    assert len(again.points) == 3


def test_bad_strategy_and_seed_from_fail_before_loading():
    with pytest.raises(AutoqError, match="unknown --strategy 'anneal'; choose one of optuna, ilp, greedy, random"):
        SearchConfig(strategy="anneal")
    with pytest.raises(AutoqError, match="unknown sensitivity metric 'hesse'"):
        SearchConfig(seed_from="hesse")


def test_auto_skips_tables_that_would_run_data_driven_ptq_on_too_many_pairs(digits, problem, tmp_path):
    from autoq.engine.seeding import data_driven_pairs, seed_metric

    space_file = tmp_path / "gptq.yaml"
    space_file.write_text('name: gptq\nrules:\n  - layers: ".*"\n    bits: [2, 3, 4]\n    granularity: [channel]\n    methods: [rtn-mse, gptq]\n')
    space = prepare(digits, SearchConfig(budget="3.5bits", space=str(space_file), tracking_uri=None)).space
    pairs = data_driven_pairs(space)
    assert pairs == 3 * len(space.layers)  # the gptq options only
    assert seed_metric("auto", "optuna", space, limit=pairs) == "fisher"
    assert seed_metric("auto", "optuna", space, limit=pairs - 1) is None
    assert seed_metric("fisher", "optuna", space, limit=0) == "fisher"  # a named metric is always computed
    assert seed_metric("auto", "ilp", space, limit=0) == "fisher"  # ilp cannot run without one
    default = problem.space
    assert data_driven_pairs(default) == 0 and seed_metric("auto", "optuna", default) == "fisher"


def test_a_many_method_space_enqueues_at_most_max_uniform_seeds_baselines(digits):
    """``full`` has a uniform baseline per (format, method); the default keeps 16 of them, ``None`` all."""
    from autoq.engine.seeding import start_strategy

    counts = {}
    for limit in (16, None):
        config = SearchConfig(budget="4.5bits", space="full", seed_from="none", tracking_uri=None, storage=None, max_uniform_seeds=limit)
        problem = prepare(digits, config)
        _, seeds, uniform, _, _ = start_strategy(digits, config, problem, f"limit-{limit}", None)
        assert seeds[: len(uniform)] == uniform
        counts[limit] = len(uniform)
    assert counts[16] == 16 < counts[None]
    assert SearchConfig().max_uniform_seeds == 16


def test_a_capped_search_tags_every_uniform_assignment_it_evaluates_as_a_baseline(digits, tmp_path):
    """Capped at 1, the sampler's own uniform trials were tagged 'uniform: false', and a better one among them was not
    the best uniform. The cap still sets the baselines counted (1 of 1: compared with, as before)."""
    space = tmp_path / "two.yaml"  # 16 assignments, 2 of them uniform: the sampler meets the one not enqueued
    space.write_text("rules:\n  - layers: '.*'\n    bits: [3, 8]\n    granularity: [channel]\n    methods: [rtn-mse]\n")
    config = SearchConfig(budget="8.5bits", space=str(space), seed_from="none", tracking_uri=None, storage=None, max_uniform_seeds=1,
                          n_fill_seeds=0, n_trials=30, progress=False)
    result = run_search(digits, config)
    problem = prepare(digits, config)
    fitting = set(uniform_seeds(problem.space, problem.cost_model, problem.budget))
    assert len(fitting) > 1 and result.n_uniform == 1
    assert all(p.uniform == (p.assignment in fitting) for p in result.points)
    uniform = [p for p in result.points if p.uniform]
    assert len({p.assignment for p in uniform}) > 1  # the sampler's own, beside the one enqueued
    assert result.best_uniform.quality == max(p.quality for p in uniform)


@pytest.mark.parametrize("sequential", [False, True])
def test_a_w8a8_search_on_a_cnn_runs_every_trial_and_seeds_from_kl(digits, sequential):
    """``w8a8`` on a model with convolutions: they take its options weight-only (autoq.space), so no trial fails
    on an activation format a convolution cannot take, and a kl table (which sees activation formats) seeds it."""
    result = search(digits, space="w8a8", budget="8.5bits", n_trials=10, seed_from="kl", sequential=sequential)
    assert result.n_failed == 0 and len(result.points) == 10
    convs = {"0", "2"}
    assert all(p.assignment[name].activation is None for p in result.points for name in convs)
    assert any(p.assignment["6"].activation is not None for p in result.points)


def test_a_registered_strategy_says_whether_it_needs_scores_whatever_was_imported_first(monkeypatch):
    """``NEEDS_SCORES`` was copied into the seeding module at import: a user's strategy added later was not seen there."""
    from autoq.engine import strategies
    from autoq.engine.seeding import check_seed_from
    from autoq.engine.strategies import register_strategy, strategy_factory, strategy_needs_scores

    monkeypatch.setattr(strategies, "_STRATEGIES", strategies._STRATEGIES.copy())
    register_strategy("my-ilp", needs_scores=True)(strategy_factory("ilp"))
    register_strategy("my-random")(strategy_factory("random"))
    assert strategy_needs_scores("my-ilp") and not strategy_needs_scores("my-random") and not strategy_needs_scores("nope")
    with pytest.raises(AutoqError, match="--strategy my-ilp solves on a sensitivity table, and --seed-from none gives it none"):
        check_seed_from("none", "my-ilp")
    check_seed_from("none", "my-random")
    with pytest.raises(ValueError, match="already registered"):
        register_strategy("ilp")(strategy_factory("random"))
    with pytest.raises(ValueError, match="cannot register strategy 'a b'"):
        register_strategy("a b")(strategy_factory("random"))
    with pytest.raises(ValueError, match="strategy 'blind': needs_scores=True with reads_scores=False"):  # contradictory
        register_strategy("blind", needs_scores=True, reads_scores=False)


def test_fewer_trials_than_baselines_evaluate_the_dearest_ones(digits, problem):
    """Baselines are queued cheapest first: with 3 trials on digits-cnn at 3.5 bits the 3.29-bit one, the best, never ran."""
    fitting = uniform_seeds(problem.space, problem.cost_model, problem.budget, 16)
    assert len(fitting) > 3
    result = search(digits, n_trials=3, seed_from=None)
    assert [p.assignment for p in result.points] == fitting[-3:]  # the dearest three, still cheapest first


def test_with_fewer_trials_than_baselines_a_latency_budget_keeps_those_of_the_most_bits(digits, tmp_path):
    """Under a latency budget the dearest baselines are the slowest, not the best: with 2 trials the two int3 formats
    (slower kernels than int4 on the H200 table) were evaluated and int4, within the budget and better, was dropped."""
    space = tmp_path / "s6.yaml"
    space.write_text("name: s6\nrules:\n  - layers: '.*'\n    bits: [2, 3, 4]\n    granularity: [channel, tensor]\n"
                     "    symmetric: false\n    methods: [rtn-mse]\n    half: false\n")
    options = dict(budget="12.5us", device="h200", space=str(space), seed_from="none")
    result = search(digits, n_trials=2, **options)
    problem = prepare(digits, SearchConfig(tracking_uri=None, **options))
    fitting = uniform_seeds(problem.space, problem.cost_model, problem.budget)
    assert len(fitting) > 2 and result.n_uniform == len(fitting)
    most_bits = sorted(problem.cost_model.cost(a).effective_bits for a in fitting)[-2:]
    assert sorted(p.effective_bits for p in result.points if p.uniform) == most_bits


def test_options_a_strategy_would_ignore_are_refused_and_auto_computes_no_table_it_would_not_read(digits, problem, tmp_path, monkeypatch):
    """--strategy random computed the default (fisher) table by --seed-from auto, and took --seed-from kl and --sampler
    nsga2, logging them as if they had been used; ilp and greedy took any --sampler."""
    from autoq.engine.seeding import seed_metric

    with pytest.raises(AutoqError, match="--strategy random reads no sensitivity table, so --seed-from kl would be computed for nothing"):
        SearchConfig(strategy="random", seed_from="kl")
    for strategy in ("ilp", "greedy", "random"):
        with pytest.raises(AutoqError, match=f"--strategy {strategy} proposes by itself, with no Optuna sampler, so --sampler nsga2"):
            SearchConfig(strategy=strategy, sampler="nsga2")
        for counts, said in (({"max_uniform_seeds": None}, "max_uniform_seeds=None"), ({"n_fill_seeds": 0}, "n_fill_seeds=0"),
                             ({"max_uniform_seeds": 3, "n_fill_seeds": 4}, "max_uniform_seeds=3, n_fill_seeds=4")):
            with pytest.raises(AutoqError, match=f"{said} set the seeds the optuna strategy enqueues before its sampler, and "
                                                 f"strategy='{strategy}' proposes by itself, with no seeds"):  # no uniform trial ran
                SearchConfig(strategy=strategy, seed_from="none" if strategy == "random" else "auto", **counts)
    assert SearchConfig(strategy="optuna", max_uniform_seeds=None, n_fill_seeds=0).max_uniform_seeds is None
    # a resume of a study an older autoq stored with them goes on; a plug-in that proposes alone may still enqueue seeds
    resumed = SearchConfig(strategy="ilp", n_fill_seeds=4, resume=True, study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert resumed.n_fill_seeds == 4
    from autoq.engine import strategies
    from autoq.engine.strategies import register_strategy, strategy_factory

    monkeypatch.setattr(strategies, "_STRATEGIES", strategies._STRATEGIES.copy())
    register_strategy("fills-then-ilp", needs_scores=True, uses_sampler=False)(strategy_factory("ilp"))
    assert SearchConfig(strategy="fills-then-ilp", n_fill_seeds=4).n_fill_seeds == 4
    space = problem.space
    assert seed_metric("auto", "random", space) is None and seed_metric("auto", "optuna", space) is not None
    assert search(digits, strategy="random", n_trials=3).points  # the default sampler and --seed-from auto still run it


def test_metric_names_are_set_without_an_experimental_warning_in_any_thread():
    """Off the main thread the warning showed (in the Ray session and threaded searches), as quieting it there swapped the
    process's warning filters; Optuna's undecorated method sets the names with no warning and no filter touched."""
    import threading
    import warnings

    from autoq.engine.strategy import set_metric_names

    study = optuna.create_study(directions=["maximize", "minimize"])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        worker = threading.Thread(target=set_metric_names, args=(study, ["quality", "effective_bits"]))
        worker.start()
        worker.join(30)
        set_metric_names(study, ["quality", "effective_bits"])
    assert study.metric_names == ["quality", "effective_bits"]
    assert not [w for w in seen if issubclass(w.category, optuna.exceptions.ExperimentalWarning)], [str(w.message) for w in seen]


def test_table_seeds_are_a_third_raises_then_the_ilp_sweep_then_an_eighth_greedy(digits, problem):
    """Of 12 table seeds the first 4 only raise layers above the best uniform baseline (raise_seeds is asked for one
    more than are kept, as a uniform baseline among them is left out), and the last eighth are greedy allocations the
    ILP list does not hold (without the greedy share the ILP sweep took every place)."""
    from autoq.engine.greedy import greedy_seeds
    from autoq.engine.ilp import ilp_seeds
    from autoq.engine.seeds import best_uniform
    from autoq.engine.strategies import StrategyContext, _table_seeds

    scores = space_scores(seed_table(digits, problem.space, "kl", progress=False), problem.space)
    ctx = StrategyContext(problem.space, problem.cost_model, problem.budget, "tpe", 0, "s", None, 40, 12, scores)
    uniform = uniform_seeds(problem.space, problem.cost_model, problem.budget)
    seeds = _table_seeds(ctx, uniform, 12)
    assert len(set(seeds)) == 12 and not set(seeds) & set(uniform)
    base, bits = best_uniform(uniform, problem.cost_model), problem.cost_model.layer_bits
    assert all(bits(layer, a[layer.name]) >= bits(layer, base[layer.name]) for a in seeds[:4] for layer in problem.space.layers)
    knapsack = ctx.knapsack()
    assert seeds[-1] in greedy_seeds(knapsack, 12) and seeds[-1] not in ilp_seeds(knapsack, 12, 0)


def test_a_retry_is_seeded_only_where_the_trial_it_retries_was(problem):
    """A failed seed's retry is a seed too, and a sampler's own proposal retried is not one (it looked like a seed)."""
    space = problem.space
    uniform = space.uniform_assignments()
    strategy = OptunaStrategy(space, optuna.samplers.RandomSampler(seed=0), "retries", None)
    strategy.seed([uniform[0]])
    seeded = strategy.ask()
    assert seeded.assignment == uniform[0] and seeded.handle.user_attrs.get("seeded")
    strategy.tell(seeded, None, 0.0, error="RuntimeError: boom")
    strategy.retry(seeded)
    retry = strategy.ask()
    assert retry.assignment == uniform[0] and retry.handle.user_attrs == {"autoq.retry_of": seeded.number, "seeded": True}
    strategy.tell(retry, (0.9, 4.0), -1.0)
    sampled = strategy.ask()  # the sampler's own
    strategy.tell(sampled, None, 0.0, error="RuntimeError: boom")
    strategy.retry(sampled)
    assert strategy.ask().handle.user_attrs == {"autoq.retry_of": sampled.number}


def test_a_queue_asked_after_it_ran_dry_repeats_its_first_proposal(problem):
    """Asked again after its source ran dry, a queue proposes its first assignment again, as its docstring says: the
    one surely evaluated by then, which the search loop records as a repeat without evaluating it."""
    from autoq.engine.strategy import QueueStrategy

    space = problem.space
    first, second = space.uniform_assignments()[:2]
    queue = QueueStrategy(space, iter([first, second]), "dry", None)
    assert [queue.ask().assignment for _ in range(2)] == [first, second]
    assert queue.exhausted and queue.ask().assignment == first


def test_a_new_search_seeds_its_sampler_with_the_seed_itself(problem):
    """--seed is the sampler's seed, as Optuna's (TPESampler(seed=7)); only a resume mixes in the stored trial count."""
    from autoq.engine.strategy import make_strategy

    space = problem.space
    made = make_strategy("random", space, 7, "fresh", None)
    plain = OptunaStrategy(space, optuna.samplers.RandomSampler(seed=7), "plain", None)
    assert [made.ask().assignment for _ in range(3)] == [plain.ask().assignment for _ in range(3)]
