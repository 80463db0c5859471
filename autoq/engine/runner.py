"""The search loop: validate, seed with uniform baselines, ask/evaluate/tell, log, summarise.

Every proposal's cost is computed before evaluation; over-budget proposals are
told to the strategy as infeasible and never cost an evaluation pass. Finished
trials live in the Optuna storage and MLflow as they finish, so an interrupted
search loses nothing that was done.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import numbers
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from optuna.samplers import BaseSampler
from tqdm.auto import tqdm

from autoq.budget import DEFAULT_BUDGET, Budget, check_latency_config, parse_budget
from autoq.builtin.workload import Workload
from autoq.choice import Assignment, LayerChoice
from autoq.cost import CostModel, runs_w8a8
from autoq.engine.live import TrialStatus
from autoq.engine.options import checked_options, label
from autoq.engine.parent_run import start_tracking, summary_metrics
from autoq.engine.ray_session import ray_session
from autoq.engine.result import Point, SearchResult, pareto_front
from autoq.engine.resume import (
    add_wall_seconds,
    check_execution,
    check_resumable,
    check_same_settings,
    check_seed_table,
    end_session,
    finished_trials,
    not_stored,
    release_interrupted,
    remember_counts,
    remember_settings,
    stored_settings,
)
from autoq.engine.seeding import check_seed_from, data_driven_pairs, is_table_file, seed_room, start_strategy
from autoq.engine.seeds import uniform_seeds
from autoq.engine.stop_notes import (
    above_reference,
    interrupted_note,
    kept_and_how_to_continue,
    recorded_run,
    say,
    storage_stopped,
    store_stopped,
)
from autoq.engine.strategies import (
    strategy_factory,
    strategy_needs_scores,
    strategy_reads_seed_counts,
    strategy_uses_sampler,
    strategy_uses_seed,
)
from autoq.engine.strategy import OptunaStrategy, Strategy, sampler_factory, sampler_name, study_objectives
from autoq.engine.study_names import default_study_name, new_study
from autoq.engine.trials import TrialBook
from autoq.errors import AutoqError, SearchInterrupted, database_failed, error_text
from autoq.evaluate import QuantCache, check_finite_batches
from autoq.evaluate.cache import needs_stats, parameter_versions, uncalled_layers, written_names, written_parameters
from autoq.fingerprints import data_fingerprint, model_hash
from autoq.interrupts import ForcedInterrupt, deferred_interrupts, stops_as_interrupts
from autoq.latency import latency_model
from autoq.messages import note, warn
from autoq.model import (
    LayerInfo,
    check_finite_stored,
    find_layers,
    left_out_note,
    mark_unreached,
    searched_tied,
    skipped_names,
    unreached_note,
)
from autoq.progress import progress_bar
from autoq.ptq import method_info, plugin_code
from autoq.quiet import quiet_logs
from autoq.search_spaces import check_bits_reachable, load_preset
from autoq.space import SearchSpace
from autoq.tracking import (
    MlflowTracker,
    absolute_uri,
    check_experiment,
    default_experiment,
    default_tracking_uri,
    outer_run,
    sqlite_path,
    tracking_client,
)
from autoq.tracking.mlflow_logger import store_errors

if TYPE_CHECKING:
    from autoq.sensitivity import SensitivityTable


@dataclass(frozen=True)
class SearchConfig:
    """Everything about a search except the model and its data."""

    budget: str | float | Budget = DEFAULT_BUDGET
    space: str | os.PathLike[str] = "default"  # a preset's name or a YAML file
    n_trials: int = 100
    seed: int = 0
    sampler: str | BaseSampler = "tpe"  # tpe | nsga2 | random | a registered one (register_sampler), or an Optuna sampler instance
    n_fill_seeds: int = 16  # budget-filling mixes enqueued after the uniform baselines
    max_uniform_seeds: int | None = 16  # uniform baselines at most (each weight format once first; see seeds.uniform_seeds); None: all
    strategy: str = "optuna"  # optuna | ilp | greedy | random | a registered one (register_strategy)
    seed_from: str | os.PathLike[str] | None = "auto"  # sensitivity metric or table file seeding the search; "auto": fisher (kl for activation formats); None / "none": random fill seeds
    # given as a list, a tuple or one str (skip, plugins), pins as {pattern: choice} or 'pattern=choice' texts too; held
    # as tuples (checked_options): a type checker refused skip=[...], the form autoq's own messages show
    skip: Sequence[str] = ()
    pins: Mapping[str, str] | Sequence[tuple[str, str] | str] = ()
    tracking_uri: str | None = field(default_factory=default_tracking_uri)  # $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db; None (or "none"): no MLflow
    experiment: str | None = None  # None: $MLFLOW_EXPERIMENT_NAME, else the experiment $MLFLOW_EXPERIMENT_ID names in tracking_uri, else autoq
    mlflow_parent_run_id: str | None = None  # nest the search's run in this existing MLflow run (a pipeline step's); it joins that run's experiment
    study_name: str | None = None
    storage: str | None = "auto"  # "auto": optuna.db beside the MLflow store; None (or "none"): in memory
    timeout: float | None = None  # seconds; stop asking for new trials after this
    progress: bool = True
    device: str | os.PathLike[str] | None = None  # latency source: a preset ("h100": roofline estimate) or a measured table JSON
    batch: int = 1  # activation rows per forward for latency (tokens), a batch the table measured
    backend: str = "optuna"  # "optuna": evaluate in this process; "ray": Ray Tune workers (autoq.engine.ray_backend)
    workers: int = 1  # concurrent trials (ray)
    cpus_per_trial: float = 1.0  # ray resources per trial
    gpus_per_trial: float = 0.0  # ray resources per trial; fractions share a GPU
    address: str | None = None  # ray cluster to join ("auto", "ray://host:10001"); None: a local Ray, started and stopped here
    resume: bool = False  # continue the stored study ``study_name`` (finished trials kept, interrupted ones retried)
    max_retries: int = 2  # a failing trial is evaluated again up to this many times before it counts as failed
    sequential: bool = False  # data-driven PTQ methods see inputs from already-quantized earlier layers (autoq.model.capture)
    plugins: Sequence[str] = ()  # plug-ins (modules, .py files) whose names it uses: logged, and in the export commands it logs

    def __post_init__(self) -> None:
        for name in ("tracking_uri", "storage"):  # "none", as on the command line, is None
            value = getattr(self, name)
            if isinstance(value, str) and value.strip().lower() == "none":
                object.__setattr__(self, name, None)
        if self.experiment is None:  # a pipeline's os.environ.get(...): MLflow's default, as the field's own, in its store
            object.__setattr__(self, "experiment", default_experiment(self.tracking_uri if isinstance(self.tracking_uri, str) else None))
        for name, value in checked_options(self).items():  # kinds first: a string n_trials is one clear line, not a TypeError
            object.__setattr__(self, name, value)
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) or not 0 <= self.seed < 2**32:
            raise AutoqError(f"{label('seed')} must be an integer from 0 to 2**32 - 1 (as numpy and Optuna take it), got {self.seed!r}")
        object.__setattr__(self, "seed", int(self.seed))  # a numpy integer from a pipeline is stored and compared as an int
        if self.timeout is not None and not self.timeout > 0:
            raise AutoqError(f"{label('timeout')} must be a positive number of seconds (or None: no limit), got {self.timeout}")
        budget = parse_budget(self.budget)
        check_latency_config(budget, self.device)
        if self.device is None and self.batch != 1:  # it would be silently ignored: nothing estimates latency
            raise AutoqError(f"batch={self.batch} (--batch) is the batch a latency table's rows are read at, and there is no "
                             "device to read one for: add --device (device= in Python), or leave --batch out")
        latency_model(self.device, self.batch)  # an unknown device or unmeasured batch fails here, before any loading
        sampler_factory(self.sampler)  # an unknown name or type fails here, before any loading
        strategy_factory(self.strategy)
        check_seed_from(self.seed_from, self.strategy, self.resume)
        if not strategy_uses_sampler(self.strategy) and sampler_name(self.sampler) != "tpe":  # it was logged as if used
            raise AutoqError(f"--strategy {self.strategy} proposes by itself, with no Optuna sampler, so --sampler "
                             f"{sampler_name(self.sampler)} would be ignored; leave --sampler out, or use --strategy optuna")
        defaults = {f.name: f.default for f in fields(self)}
        seed_counts = [f"{name}={getattr(self, name)!r}" for name in ("max_uniform_seeds", "n_fill_seeds") if getattr(self, name) != defaults[name]]
        # as --sampler: ignored, unsaid (no uniform trial ran); not on a resume, whose study an older autoq may have stored them with
        if self.seed != defaults["seed"] and not strategy_uses_seed(self.strategy) and not self.resume:  # greedy: same trials
            raise AutoqError(f"--strategy {self.strategy} proposes the same assignments whatever the seed, so --seed {self.seed} "
                             f"(seed={self.seed}) would be ignored; leave --seed out, or use --strategy optuna, ilp or random")
        if seed_counts and not strategy_reads_seed_counts(self.strategy) and not self.resume:
            raise AutoqError(f"{', '.join(seed_counts)} set the seeds the optuna strategy enqueues before its sampler, and "
                             f"strategy={self.strategy!r} proposes by itself, with no seeds: leave them out, or use strategy='optuna'")
        for pattern, choice in self.pins:  # a typo in a pinned choice, too, before the model loads
            try:
                pinned = LayerChoice.from_name(choice)
                if not pinned.weight.is_half:
                    method_info(pinned.method)  # an unknown method, as the space would say it after the load
            except AutoqError as exc:
                raise AutoqError(f"--pin {pattern}={choice} (pins={{{pattern!r}: {choice!r}}} in Python): {exc}") from None
        # a typo in a space file, or a bits budget no option reaches, is said before a model loads (minutes for a large one)
        check_bits_reachable(budget, load_preset(self.space), self.pins, self.space)
        check_execution(self)
        if self.mlflow_parent_run_id is not None and not self.tracking_uri:
            raise AutoqError("mlflow_parent_run_id nests the search's MLflow run in another run, but MLflow logging is off (tracking_uri=None)")

    def resolved_storage(self) -> str | None:
        """The Optuna storage URL, a SQLite file's path made absolute: a result or MLflow param read from another
        folder (``result.study()``, a pickled result) must name the same database."""
        if self.storage != "auto":
            return absolute_uri(self.storage) if self.storage else self.storage
        return auto_storage(self.tracking_uri)


def auto_storage(tracking_uri: str | None) -> str:
    """``storage="auto"``'s Optuna storage: ``optuna.db`` beside a SQLite MLflow store, else in the current folder (an
    absolute URL)."""
    db = sqlite_path(tracking_uri) if tracking_uri else None
    folder = db.parent if db is not None else Path(".")
    return absolute_uri(f"sqlite:///{folder / 'optuna.db'}")


@dataclass(frozen=True)
class Prepared:
    """A validated search problem: the space, its costs and the budget (``slack``: why it does not bind, if so)."""

    space: SearchSpace
    cost_model: CostModel
    budget: Budget
    slack: str | None = None
    left_out: str | None = None  # the note on layers left unquantized: tied weights, or weights a parametrization computes
    unreached: str | None = None  # the note on layers the calibration batches never reach (data-free methods only)


def check_tracking(config: SearchConfig) -> None:
    """Refuse a tracking store MLflow refuses or that does not answer (a SQLite file is made later), an experiment it
    would refuse, or a parent run it lacks: before any evaluation, and before a model loads where the caller runs this
    first (the command line and a built-in by name: minutes for an LLM, to be told the server is down)."""
    if config.tracking_uri and config.mlflow_parent_run_id:
        outer_run(config.tracking_uri, config.mlflow_parent_run_id)
    elif config.tracking_uri:
        if sqlite_path(config.tracking_uri) is None:
            tracking_client(config.tracking_uri)
        check_experiment(config.tracking_uri, config.experiment)


def prepare(workload: Workload, config: SearchConfig) -> Prepared:
    """All the checks that need no evaluation, in the order a user would fix them."""
    budget = parse_budget(config.budget)
    skip = tuple(workload.skip) + tuple(config.skip)
    layers = find_layers(workload.model, skip)
    tied = searched_tied(workload.model, skip, dict(config.pins), layers)
    check_finite_stored(workload.model, layers)
    check_finite_batches(workload.calibration)
    check_tracking(config)
    unsearched = skipped_names(workload.model, skip, layers)
    space = SearchSpace.build(load_preset(config.space), layers, dict(config.pins), unsearched)
    check_calibration_usable(workload, space, config.space)
    uncalled = uncalled_layers(workload.model, space.layers, space.options, workload.calibration)
    if uncalled:  # trials giving them GPTQ, AWQ, ... all failed ("saw no input"): the space gives them data-free methods
        layers = mark_unreached(layers, uncalled)
        space = SearchSpace.build(load_preset(config.space), layers, dict(config.pins), unsearched)
    cost_model = CostModel.for_model(workload.model, layers, latency_model(config.device, config.batch))
    left_out = left_out_note(workload.model, skip, tied)
    try:
        slack = budget.check_feasible(*space.extremes(cost_model, budget.kind), cost_model.latency_source, any(space.pinned))
    except AutoqError as exc:  # the notes (a table without this batch or far from these shapes, layers left out) are
        # printed only later: say them now (a range read from shapes 100x larger read as measured)
        notes = [n for n in (*(latency_notes(cost_model, space) if budget.is_latency else ()), left_out) if n]
        if not notes:
            raise
        raise AutoqError("; ".join([str(exc), *notes])) from None
    return Prepared(space, cost_model, budget, slack, left_out, unreached_note(uncalled) if uncalled else None)


def check_calibration_usable(workload: Workload, space: SearchSpace, space_name: str) -> None:
    """Data-driven options (GPTQ, AWQ, ..., and static activation formats, whose ranges are calibrated) capture their
    statistics from the calibration batches: without any, or with batches the model refuses (``(inputs, labels)``
    pairs), every such trial failed, one by one, after the search began."""
    from autoq.evaluate.cache import needs_stats
    from autoq.evaluate.fidelity import call_on_user_batch
    from autoq.model.modes import eval_mode
    from autoq.ptq import method_needs_stats

    def named(choices: list) -> list[str]:
        return sorted({c.method if method_needs_stats(c.method) else f"static {c.activation.name} activations" for c in choices})

    by_pin = [c for opts, pin in zip(space.options, space.pinned) if pin for c in opts if needs_stats(c)]
    by_space = [c for opts, pin in zip(space.options, space.pinned) if not pin for c in opts if needs_stats(c)]
    methods = named(by_pin + by_space)
    if not methods:
        return
    if not workload.calibration:
        wants = [f"the search space {space_name!r} has data-driven options ({', '.join(named(by_space))})"] if by_space else []
        wants += [f"the pins give data-driven choices ({', '.join(named(by_pin))})"] if by_pin else []
        instead = ["a space without them ('default')"] if by_space else []
        instead += ["pins of a data-free method (rtn-mse, say)"] if by_pin else []
        raise AutoqError(f"{' and '.join(wants)}, which calibrate on the calibration batches, and none were given; pass "
                         f"calibration=[batches], or {' and '.join(instead)}")
    with torch.inference_mode(), eval_mode(workload.model):
        call_on_user_batch(workload.model, workload.calibration[0], f"calibration batch 0 of {len(workload.calibration)} (for {', '.join(methods)})")


def run_search(workload: Workload, config: SearchConfig) -> SearchResult:
    """Search ``workload`` under ``config`` and return the evaluated points and frontier."""
    start = time.perf_counter()  # --timeout and the wall time count Ray's start-up too (seconds on a cold machine)
    claimed: list[tuple[str | None, str]] = []  # the study this process runs, once it has it
    # Ray joined or started (and checked) before anything is stored; quieted inside it: a Ray search waiting for another
    # thread's saved that one's quiet levels, which the other put back when it ended (Optuna spoke for the rest)
    if config.tracking_uri:  # loaded before the quiet spell, which quiets only what is loaded (its INFO lines per store)
        importlib.import_module("mlflow")
    # SIGTERM and SIGHUP stop it as Ctrl-C does (where the caller has no handler of its own): stored, and said how to resume
    with stops_as_interrupts(), ray_session(config), quiet_logs():
        try:
            result = _run_search(workload, config, start, claimed)
        except BaseException:
            # however it ends: the process may live on (a notebook), no longer running the search. A store that failed (a
            # full disk under both databases) fails this write too, whose error then replaced the search's own: the
            # trials kept and the resume command went unsaid. The next search of the name takes a dead session over.
            for storage, study_name in claimed:
                with contextlib.suppress(Exception):
                    end_session(storage, study_name)
            raise
        for storage, study_name in claimed:
            end_session(storage, study_name)
        return result


@dataclass(frozen=True)
class _Reference:
    """The unquantized model's quality, the seconds one evaluation took, and the hash of the weights the trials score."""

    quality: float
    seconds: float
    weights: str


@dataclass(frozen=True)
class _Study:
    """The Optuna study a session runs, with its strategy seeded, and what seeded it."""

    name: str
    storage: str | None
    strategy: Strategy
    uniform: frozenset[Assignment]  # the uniform baselines among the seeds: what a search counts and compares with
    # those and every other uniform assignment within the budget, tagged 'uniform' where evaluated: the sampler's own
    # uniform int8 was tagged 'uniform: false' beside a capped baseline list, and a better baseline went unseen
    flagged: frozenset[Assignment]
    seeded_from: str | None  # the metric or table file whose scores seeded it; None: none did
    seeding_table: SensitivityTable | None
    n_retried: int  # a resume's interrupted trials, queued again


@dataclass(frozen=True)
class _Session:
    """This session's MLflow parent run (``None``: no MLflow), its trial book and progress bar."""

    tracker: MlflowTracker | None
    book: TrialBook
    bar: tqdm
    calibration_digest: str


def _run_search(workload: Workload, config: SearchConfig, start: float, claimed: list[tuple[str | None, str]]) -> SearchResult:
    """Check, measure the unquantized model, open the study and its MLflow run, run the trials and store the outcome."""
    if config.resume and config.study_name:  # other settings are the error, not what they make of the budget
        check_same_settings(config.resolved_storage(), config.study_name, stored_settings(workload, config),
                            absolute_uri(config.tracking_uri) if config.tracking_uri else None)
    problem = prepare(workload, config)
    problem_code = plugin_code(problem.space.methods)  # what the plug-in methods were as they scored: an edited one's export is refused
    derived = {"plugin_code": problem_code, "space_options": problem.space.digest,  # what a resume compares besides the options given
               "latency_prices": problem.space.latency_digest(problem.cost_model)}
    _say_problem_notes(problem)
    if config.sequential and not any(needs_stats(c) for options in problem.space.options for c in options):  # it went unsaid
        note("sequential=True (--sequential) changes nothing here: no option of the search space calibrates on data (a "
             "data-driven PTQ method such as gptq or awq, or static activation ranges), so its trials are what they would be without it")
    reference = _reference_pass(workload)
    # the trials' cache in this process (Ray's workers build their own), over the space's layers, those the model never
    # calls marked, as Ray's workers and a sensitivity table's own statistics sample them (each layer's rows by its place
    # in the list). The seeding table quantizes into it too: a first run's table quantized every (layer, option) pair
    # and threw them away, then the trials quantized them again (33 s of a 285 s MiniLM search). Not under a sequential
    # capture, whose statistics a table must not be scored (or cached) with
    weights = new_cache(workload, config, problem.space.layers) if config.backend != "ray" else None
    study = _open_study(workload, config, problem, derived, claimed, None if config.sequential else weights)
    session = _start_session(workload, config, problem, study, reference, problem_code, start)
    points, wall_seconds = _run_session(workload, config, problem, study, session, reference, start, weights)
    book = session.book
    if not points and book.n_failed:
        stored = [where for where, kept in (("its MLflow run tags", session.tracker), (f"the Optuna study {study.name!r}", study.storage)) if kept]
        # none evaluated now: a resume of a search whose trials had all failed, asking for no more
        first = f"; the first error: {book.first_error}" if book.first_error else " in an earlier session" if config.resume else ""
        raise AutoqError(f"every trial failed ({book.n_failed}){first}" + (f" (each trial's is in {' and '.join(stored)})" if stored else ""))
    if not points:
        raise AutoqError(_nothing_evaluated(workload, config, study, session))
    above = above_reference(reference.quality, points)
    if above:
        warn(above)
    return SearchResult(
        budget=problem.budget, metric=workload.metric, reference_quality=reference.quality, frontier=tuple(pareto_front(points)),
        points=tuple(sorted(points, key=lambda p: p.trial)),  # in trial order, as from_mlflow reads them: Ray's finish in any
        study_name=study.name, storage=study.storage, tracking_uri=absolute_uri(config.tracking_uri) if config.tracking_uri else None,
        parent_run_id=session.tracker.parent_id if session.tracker else None, eval_seconds=reference.seconds, wall_seconds=wall_seconds,
        n_infeasible=book.n_infeasible, n_failed=book.n_failed, sequential=config.sequential, calibration_digest=session.calibration_digest,
        n_calibration=len(workload.calibration), n_uniform=len(study.uniform), model_hash=reference.weights, plugin_code=tuple(problem_code.items()),
        module=not workload.source,
    )


def _say_problem_notes(problem: Prepared) -> None:
    """The checks' notes, before the first evaluation: layers left out or unreached, a budget that binds nothing, where
    the latencies come from, and the layers and weight formats a measured table did not measure near or at all."""
    for said in (problem.left_out, problem.unreached, problem.slack, *latency_notes(problem.cost_model, problem.space)):
        if said:
            note(said)


def latency_notes(cost_model: CostModel, space: SearchSpace) -> list[str]:
    """What to know of the latencies: the source's own note (a table without this batch), and for a measured table the
    layers it did not measure near and the weight formats it did not measure at all."""
    latency = cost_model.latency
    if latency is None:
        return []
    coverage = getattr(latency, "coverage_note", None)
    formats = getattr(latency, "format_note", None)
    shapes = [(layer.name, layer.out_features, layer.in_features) for layer in space.layers]
    specs = {c.weight for options in space.options for c in options}
    w8a8 = any(runs_w8a8(c) for options in space.options for c in options)
    notes = [latency.note, coverage(shapes) if coverage else "", formats(specs, w8a8) if formats else ""]
    return [n for n in notes if n]


def _reference_pass(workload: Workload) -> _Reference:
    """Evaluate the unquantized model once, hashing its weights before any trial: an export of a point onto other
    weights is refused by the hash."""
    weights = model_hash(workload.model)
    versions = parameter_versions(workload.model)
    t0 = time.perf_counter()
    quality = workload.quality(workload.model)
    seconds = time.perf_counter() - t0
    written = written_parameters(workload.model, versions)
    if written:  # as a trial's evaluate is warned of; the trials score the changed weights, and so the hash is theirs
        weights = model_hash(workload.model)
        warn(f"evaluate changed the model's parameters or buffers {written_names(written)} in place on the "
             "unquantized model's reference pass: the change stays in your model, and the search scores the changed weights; "
             "evaluate a copy (copy.deepcopy(model)) if it must adapt or train")
    if not math.isfinite(quality):
        raise AutoqError(f"the quality metric of the unquantized model is {quality}; check the evaluation data")
    return _Reference(quality, seconds, weights)


def _open_study(workload: Workload, config: SearchConfig, problem: Prepared, derived: dict[str, object],
                claimed: list[tuple[str | None, str]], weights: QuantCache | None = None) -> _Study:
    """Make the study and enqueue its seeds, or reopen a stored one (its interrupted trials queued again). The study
    joins ``claimed`` as soon as it is this process's, so that its session ends however the search ends. ``weights``:
    the trials' cache, which a seeding table computed now quantizes into."""
    storage = config.resolved_storage()
    study_name = config.study_name or default_study_name(workload.name, problem.budget)
    db = sqlite_path(storage) if storage else None
    if db is not None and not config.resume:
        db.parent.mkdir(parents=True, exist_ok=True)  # as MLflow's store beside it is made: a new folder is fine
    n_retried = 0
    if config.resume and is_table_file(config.seed_from) and strategy_needs_scores(config.strategy):  # before the study changes
        from autoq.sensitivity import SensitivityTable

        check_seed_table(storage, study_name, SensitivityTable.load(config.seed_from).scores_digest(), str(config.seed_from),
                         bool(config.tracking_uri))
    if config.resume:  # marks the interrupted trials failed and enqueues them again
        claimed.append((storage, study_name))  # before it claims: its session ends however the resume ends
        n_retried = check_resumable(storage, study_name, stored_settings(workload, config, derived), problem.space)
        study = contextlib.nullcontext(study_name)
    else:  # made now, before the seeds' work: a second search of this name is refused at once; cut short, it is deleted
        study = new_study(storage, study_name, list(study_objectives(problem.cost_model.latency_source is not None).values()),
                          numbered=not config.study_name)
    with study as study_name:
        if not config.resume:
            claimed.append((storage, study_name))
        room = seed_room(config, problem, storage, study_name)  # a resume's seeds to add, read before any is enqueued
        strategy, seeds, uniform, seeded_from, seeding_table = start_strategy(workload, config, problem, study_name, storage, room, weights)
        if seeding_table is not None and is_table_file(seeded_from):  # a file may be overwritten between sessions
            derived["seed_table"] = seeding_table.scores_digest()
        uniform_set = frozenset(uniform)
        if not config.resume:  # a resumed study keeps its seeds: enqueued trials wait in the storage
            strategy.seed(seeds)
            remember_settings(storage, study_name, stored_settings(workload, config, derived))
        else:
            # baselines and seeds a first session with fewer trials left out, which this one's count now takes in: never
            # evaluated else (the sampler ran unseeded where a fresh search of as many trials was seeded)
            mixes = not_stored(storage, study_name, [a for a in seeds if a not in uniform_set])[:room] if room else []
            strategy.seed(not_stored(storage, study_name, [a for a in seeds if a in uniform_set]) + mixes)
    flagged = uniform_set | frozenset(uniform_seeds(problem.space, problem.cost_model, problem.budget))
    return _Study(study_name, storage, strategy, uniform_set, flagged, seeded_from, seeding_table, n_retried)


def _start_session(workload: Workload, config: SearchConfig, problem: Prepared, study: _Study, reference: _Reference,
                   problem_code: Mapping[str, str], start: float) -> _Session:
    """Open the MLflow parent run, restore a resume's finished trials into the book and open the progress bar. The
    study is stored with its seeds by now: a Ctrl-C or a tracking store gone says how to go on."""
    storage, study_name = study.storage, study.name
    tracker: MlflowTracker | None = None
    try:
        calibration_digest = _calibration_digest(workload, problem.space)
        tracker = start_tracking(workload, config, problem.space, problem.budget, study_name, storage, reference.quality, reference.weights,
                                 calibration_digest, study.seeded_from, len(study.uniform), problem_code)
        if tracker:
            _tag_parent_run(tracker, config, problem, study)
        book = TrialBook(study.strategy, problem.cost_model, problem.budget, study.flagged, config.n_trials, config.max_retries, tracker,
                         config.backend)
        if config.resume:
            # a plug-in strategy of its own class may tell without the constraint: its trials were all left out, runs deleted
            book.restore(*finished_trials(storage, study_name, problem.space, problem.cost_model, study.flagged, tracker,
                                          constrained=isinstance(study.strategy, OptunaStrategy)))
            # once it has started (a resume that fails before keeps the count it had), and knowing what is done
            remember_counts(storage, study_name, config.n_trials, config.max_retries, book.n_done,
                            absolute_uri(config.tracking_uri) if tracker is not None else None)
        # the kept trials are where the bar starts, not progress of this session: counted in its rate they made the ETA
        # 00:00 (100 trials in no time), which tqdm kept for 100 more updates
        bar = progress_bar(total=config.n_trials, initial=book.n_done, desc="autoq search", unit="trial", disable=not config.progress,
                           dynamic_ncols=True)
        book.show_on(bar)
        if config.resume:
            left = max(0, config.n_trials - book.n_done)  # a trial that failed for good counts, as the session's loop counts it
            failed = f", {book.n_failed} failed for good" if book.n_failed else ""
            kept = (f"resuming {study_name!r}: {len(book.points)} finished trial(s) kept{failed}, {study.n_retried} interrupted one(s) to retry; "
                    + (f"{left} more to evaluate" if left else f"--n-trials {config.n_trials} are all done: nothing to evaluate"
                       + ("; failed trials count too: a larger --n-trials evaluates more" if book.n_failed else "")))
            say(bar, kept)
    except KeyboardInterrupt as exc:
        with deferred_interrupts():  # its parent run was left RUNNING, as if the search still ran; this session's time counts
            add_wall_seconds(storage, study_name, time.perf_counter() - start)
            if tracker is not None:
                tracker.client.set_terminated(tracker.parent_id, status="KILLED")
        # MLflow keeps it only once its run is recorded (a Ctrl-C as the run was being made: the Optuna study alone)
        tracked = tracker is not None or (bool(config.tracking_uri) and recorded_run(storage, study_name) is not None)
        raise SearchInterrupted("interrupted before this session's first trial" + kept_and_how_to_continue(
            config, study_name, storage, tracked, bool(workload.source))) from exc
    except store_errors() as exc:  # a server gone while the seeds were computed (minutes): a traceback after MLflow's retries
        if not config.tracking_uri:
            raise
        raise store_stopped(config, exc, "the search stopped before this session's first trial", study_name, storage, bool(workload.source)) from None
    except Exception:  # any other error (a locked storage, a resume's trial that cannot be read): the run was left RUNNING
        if tracker is not None:
            tracker.abandon()
        raise
    return _Session(tracker, book, bar, calibration_digest)


def _tag_parent_run(tracker: MlflowTracker, config: SearchConfig, problem: Prepared, study: _Study) -> None:
    """What the parent run's params cannot hold: the seeding scores, the latency source, this session's trial count."""
    parent_id = tracker.parent_id
    # the scores themselves: a table file named by seed_from may be overwritten since (a resume's table is the same, checked);
    # on a resume, where its run lacks them: a run made by the resume (the first session stopped before) had none
    if study.seeding_table is not None and (not config.resume or not any(
            f.path == "seed_table.json" for f in tracker.client.list_artifacts(parent_id))):
        tracker.client.log_text(parent_id, study.seeding_table.to_json(), "seed_table.json")
    if problem.cost_model.latency_source:
        tracker.client.set_tag(parent_id, "latency_source", problem.cost_model.latency_source)
    tracker.client.set_tag(parent_id, "autoq.n_trials", str(config.n_trials))  # the n_trials param is the first session's: a resume may ask more
    if problem.slack:
        tracker.client.set_tag(parent_id, "budget_note", problem.slack)  # the budget binds nothing: shown in the UI's run page


def _run_session(workload: Workload, config: SearchConfig, problem: Prepared, study: _Study, session: _Session, reference: _Reference,
                 start: float, weights: QuantCache | None = None) -> tuple[list[Point], float]:
    """Run the trials until the book is full, the deadline passes or the user stops it, then store the outcome whole:
    (the points, the wall seconds of every session). A stopped search raises, saying what it kept and how to go on."""
    deadline = start + config.timeout if config.timeout is not None else None
    book, bar, tracker, study_name, storage = session.book, session.bar, session.tracker, study.name, study.storage
    status = "FAILED"
    try:
        if config.backend == "ray":
            from autoq.engine.ray_backend import run_trials_on_ray

            run_trials_on_ray(workload, config, book, deadline, problem.space.layers)
        else:
            assert weights is not None  # made for the in-process backend
            _run_trials(workload, book, deadline, weights)
        status = "FINISHED"
        if book.exhausted and book.n_done < config.n_trials:
            say(bar, f"the {config.strategy!r} strategy has no more distinct assignments to propose; the search ends after "
                     f"{book.n_done} of its {config.n_trials} trials")
        elif 0 < book.n_done < config.n_trials and deadline is not None and time.perf_counter() > deadline:  # it said nothing
            # (none done: the error that no trial was evaluated says it alone, not "kept" beside it)
            say(bar, f"--timeout {config.timeout:g} s ended the search after {book.n_done} of its {config.n_trials} trials"
                + kept_and_how_to_continue(config, study_name, storage, tracker is not None, bool(workload.source)))
    except KeyboardInterrupt as exc:
        status = "KILLED"
        raise SearchInterrupted(interrupted_note(config, book, study_name, storage, tracker is not None, bool(workload.source))) from exc
    except Exception as exc:
        if database_failed(exc) and storage is not None and (tracker is None or tracker.failure is not exc):
            raise storage_stopped(config, exc, book.n_done, study_name, storage, tracker is not None, bool(workload.source)) from None
        if tracker is None or tracker.failure is not exc:
            raise
        # the tracking store failed (a server gone): a traceback after minutes of MLflow's retries said nothing of the trials
        raise store_stopped(config, exc, f"the search stopped after {book.n_done} finished trial(s)", study_name, storage,
                            bool(workload.source)) from None
    finally:
        outcome = _store_outcome(workload, config, problem, study, session, reference, start, status)
    points, wall_seconds, late_interrupt = outcome  # reached only when the trials ended without raising
    if late_interrupt:
        note("interrupted after the last trial; the search and its results were stored in full")
    return points, wall_seconds


def _store_outcome(workload: Workload, config: SearchConfig, problem: Prepared, study: _Study, session: _Session, reference: _Reference,
                   start: float, status: str) -> tuple[list[Point], float, bool]:
    """Close the bar, queue a stopped session's unfinished trials for a resume, and store the wall time, the frontier
    and the run's status whole, even when Ctrl-C comes now: (the points, the wall seconds, whether a Ctrl-C came after
    the last trial of a search that finished)."""
    book, tracker, study_name, storage = session.book, session.tracker, study.name, study.storage
    budget = problem.budget
    points: list[Point] = []
    wall_seconds = 0.0
    try:
        with deferred_interrupts():
            session.bar.close()
            if status != "FINISHED":  # the trials it was evaluating (Ctrl-C, or a sys.exit in a metric): failed as
                # interrupted and queued for a resume, not left RUNNING in Optuna's storage
                with contextlib.suppress(Exception):  # else a resume does it: a storage that fails now must not hide the note
                    release_interrupted(storage, study_name, book.unfinished(), problem.space)
            points = book.points
            if not points and status == "FINISHED":
                status = "FAILED"
            # over every session of a resumed search; logged too, so 'autoq pareto' reports the same time as the search
            wall_seconds = time.perf_counter() - start
            # a storage that failed (its disk full) stopped the search: its error goes on, and the run is ended
            with contextlib.suppress(Exception) if status != "FINISHED" else contextlib.nullcontext():
                wall_seconds = add_wall_seconds(storage, study_name, wall_seconds)
            if tracker and tracker.failure is None:  # a store that failed is not written again: minutes of retries each
                metrics = summary_metrics(points, reference.seconds, book.n_infeasible, book.n_failed, len(study.uniform))
                tracker.finish(points, pareto_front(points), {**metrics, "wall_seconds": wall_seconds}, budget.value if budget.kind == "bits" else None,
                               status, latency_budget_ms=budget.value if budget.is_latency else None, stopping=status == "KILLED")
    except ForcedInterrupt as exc:  # Ctrl-C again while the frontier went to a tracking server: the run is left unfinished
        raise SearchInterrupted(f"stopped while the search's MLflow run was written, which is left unfinished, after {book.n_done} "
                                "finished trial(s)" + kept_and_how_to_continue(config, study_name, storage, True, bool(workload.source))
                                + " (it writes the frontier again)") from exc
    except KeyboardInterrupt:  # after the clean-up: a stopping search keeps its note, a finished one is whole
        return book.points, wall_seconds, status != "KILLED"
    except store_errors() as exc:  # the store failed while the frontier was written: a traceback said nothing of the trials
        if tracker is None:
            raise
        raise store_stopped(config, exc, f"the search's MLflow run is left unfinished after {book.n_done} finished trial(s)",
                            study_name, storage, bool(workload.source), ": it writes the frontier") from None
    return points, wall_seconds, False


def _run_trials(workload: Workload, book: TrialBook, deadline: float | None, cache: QuantCache) -> None:
    """The in-process backend: evaluate one proposal at a time until the book is full, quantizing into ``cache`` (the
    search's, which its seeding table may have filled)."""
    status = TrialStatus(book.bar) if book.bar is not None and not book.bar.disable else None
    cache.on_layer = status.layers if status is not None else None
    while not book.done():
        pending = book.next(deadline)
        if pending is None:  # enough trials, or the deadline passed
            break
        quality, error = _evaluate(workload, cache, pending.proposal.assignment, status)
        if status is not None:
            status.clear()
        book.record(pending.proposal.number, quality, error)


def new_cache(workload: Workload, config: SearchConfig | None = None, layers: Sequence[LayerInfo] | None = None) -> QuantCache:
    """The quantized-weight cache trials share (one per process: the Ray backend builds one per worker).

    Layer statistics for data-driven methods (GPTQ, AWQ, ...) are captured from the
    calibration batches on first need only, so data-free searches pay nothing. ``layers``: the searched ones (the
    prepared space's), else every layer the skips leave.
    """
    from autoq.model.capture import CalibrationStats

    skip = tuple(workload.skip) + (tuple(config.skip) if config else ())
    layers = find_layers(workload.model, skip) if layers is None else layers
    stats = CalibrationStats(workload.model, layers, workload.calibration, sequential=bool(config and config.sequential))
    return QuantCache(workload.model, stats)


def _evaluate(workload: Workload, cache: QuantCache, assignment: Assignment, status: TrialStatus | None = None) -> tuple[float, str | None]:
    """Quality of ``assignment``, or the error that stopped it: a failing trial must not stop the search."""
    try:
        with cache.apply(assignment) as model:
            if status is not None:
                status.scoring()
            quality = workload.quality(model)
    except Exception as exc:
        return math.nan, error_text(exc)
    return quality, None if math.isfinite(quality) else f"quality is {quality}"


def _nothing_evaluated(workload: Workload, config: SearchConfig, study: _Study, session: _Session) -> str:
    """Why a search ends with no point (the timeout, mostly), and, where its study is stored, how to continue it: the
    same call was then refused (the study exists). Evaluations that failed, retries still to come, are said with the
    first error: 'before its first trial; give it more time' sent the user to repeat them."""
    failed = sum(session.book.failures.values())
    if config.timeout is None:
        return "no trial was evaluated"
    kept = "" if study.storage is None else ": the search was set up" + kept_and_how_to_continue(
        config, study.name, study.storage, session.tracker is not None, bool(workload.source))
    if failed and session.book.first_error:
        return (f"no trial was evaluated: the timeout ({config.timeout} s) ended the search after {failed} failed evaluation(s), "
                f"retries still to come; the first error: {session.book.first_error}; fix its cause{kept}")
    return f"no trial was evaluated: the timeout ({config.timeout} s) ended the search before its first trial; give it more time{kept}"


def _calibration_digest(workload: Workload, space: SearchSpace) -> str:
    """A hash of the calibration batches where data-driven methods are searched: ``apply`` and ``export`` check theirs
    against it (a search without ``evaluate`` calibrates on only the first three quarters of the batches it is given)."""

    return data_fingerprint(workload.calibration) if data_driven_pairs(space) else ""


