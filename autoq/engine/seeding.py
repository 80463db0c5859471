"""Where a search starts: the strategy named by ``--strategy`` and its seeds, from ``--seed-from``.

``--seed-from`` names a sensitivity metric (``hessian``, ``fisher``, ``kl``, ``sqnr``,
``mse``: computed on the workload's calibration data, or read from the on-disk
cache) or a table file written by ``autoq sensitivity`` (``.json`` / ``.csv``),
which must come from the same model; ``none`` starts from random budget-filling
mixes instead. The default, ``auto``, is `DEFAULT_SEED_METRIC`: the cheapest metric
(one backward pass per calibration batch) and as good a ranking as the forward ones
on MiniLM (Spearman 0.971 against 0.977); `ACTIVATION_SEED_METRIC` for a space with
activation formats, which a gradient metric cannot tell apart; should the table fail to compute, an
``auto`` search warns and goes on unseeded, where a named metric is an error.
``ilp`` and ``greedy`` always need a table (``none`` is refused for them).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from autoq.builtin.workload import Workload
from autoq.choice import Assignment
from autoq.engine.seeds import uniform_seeds
from autoq.engine.strategies import StrategyContext, strategy_factory, strategy_needs_scores, strategy_reads_scores
from autoq.engine.strategy import Strategy, check_proposal
from autoq.errors import AutoqError
from autoq.messages import note, warn
from autoq.space import SearchSpace

if TYPE_CHECKING:
    from autoq.engine.runner import Prepared, SearchConfig
    from autoq.evaluate import QuantCache
    from autoq.sensitivity import SensitivityTable

DEFAULT_SEED_METRIC = "fisher"
ACTIVATION_SEED_METRIC = "kl"  # a forward metric: it sees the activation format, which the gradient metrics score alike
AUTO = "auto"
NONE = "none"
_AUTO = "seed_from='auto' (--seed-from auto)"  # the default, as a note names it


def check_seed_from(seed_from: str | None, strategy: str = "optuna", resume: bool = False) -> None:
    """Refuse an unknown metric name or a missing table file early, and ``none`` for a strategy that solves on a
    table (it used to compute the default table anyway, unasked). A resume reads no table unless its strategy solves
    on one (the seeds are stored), so a table moved since is not asked for."""
    if seed_from in (None, NONE) and strategy_needs_scores(strategy):
        raise AutoqError(f"--strategy {strategy} solves on a sensitivity table, and --seed-from none gives it none; pass a metric "
                         f"({DEFAULT_SEED_METRIC}, kl, ...) or a table file, or leave --seed-from auto ({DEFAULT_SEED_METRIC})")
    if seed_from not in (None, AUTO, NONE) and not strategy_reads_scores(strategy):  # computed (minutes) and logged, unread
        raise AutoqError(f"--strategy {strategy} reads no sensitivity table, so --seed-from {seed_from} would be computed for nothing; "
                         "leave --seed-from out, or seed a strategy that reads one (optuna, ilp, greedy)")
    if seed_from in (None, AUTO, NONE):
        return
    if _is_path(seed_from):
        if not Path(seed_from).is_file() and not (resume and not strategy_needs_scores(strategy)):  # before the model loads
            from autoq.sensitivity import SensitivityTable

            SensitivityTable.load(seed_from)  # says what is wrong with the path
        return
    from autoq.sensitivity import get_metric, metric_names

    if seed_from not in metric_names() and Path(seed_from).is_file():  # 'unknown sensitivity metric' of a table file's name
        raise AutoqError(f"--seed-from {seed_from}: a file, but a table file's name ends in .json or .csv (autoq sensitivity writes "
                         "both), and any other word is a metric's name; rename the file, or pass a metric")
    try:
        get_metric(seed_from)
    except AutoqError as exc:  # the registry's list left out what else --seed-from takes
        raise AutoqError(f"--seed-from {seed_from}: {exc}; or {AUTO} (the default), {NONE} (no seeds), or a table file (.json/.csv)") from None


def _is_path(text: str) -> bool:
    return Path(text).suffix.lower() in {".json", ".csv"} or "/" in text


def is_table_file(seed_from: str | None) -> bool:
    """Whether ``--seed-from`` names a table file (not a metric, ``auto`` or ``none``)."""
    return isinstance(seed_from, str) and seed_from not in (AUTO, NONE) and _is_path(seed_from)


def portable_seed_from(seed_from: str | None) -> str | None:
    """``--seed-from`` as a search stores it: a table file by its absolute path (as `portable_space` stores a space file),
    so the resume command a search prints reads the same file from any folder; a metric's name as it is."""
    return str(Path(seed_from).expanduser().resolve()) if is_table_file(seed_from) else seed_from


def _unpinned(config: SearchConfig, space: SearchSpace) -> SearchSpace | None:
    """The search's space without its pins, over which `autoq sensitivity` (which has no pins) computes and caches a
    table; ``None`` without pins, or where the space's rules do not cover a pinned layer (a pin in place of a rule)."""
    if not config.pins:
        return None
    from autoq.search_spaces import load_preset

    try:
        return SearchSpace.build(load_preset(config.space), space.layers)
    except AutoqError:
        return None


def seed_table(workload: Workload, space: SearchSpace, seed_from: str, progress: bool = True,
               unpinned: SearchSpace | None = None, weights: QuantCache | None = None) -> SensitivityTable:
    """The sensitivity table named by ``seed_from``, checked against the workload's model. A metric's table over
    ``space``, or over ``unpinned`` (the space without its pins) where the cache holds that one: a pinned search
    computed its own table again after `autoq sensitivity` had cached the unpinned one (minutes on the default model).
    A table is not computed over the unpinned space: a layer pinned to fp16 because a method fails there would fail it.
    ``weights``: the search's cache, so that a table computed now quantizes each (layer, option) once for the table and
    the trials alike (scores unchanged: the same functions, statistics from the same batches)."""
    from autoq.sensitivity import SensitivityTable, data_fingerprint, model_hash, workload_table
    from autoq.sensitivity.compute import show_notes

    if _is_path(seed_from):
        table = show_notes(SensitivityTable.load(seed_from), seeding=True)
        table.check_model(model_hash(workload.model), workload.name)
        # a model loaded by name: its data is a recipe's (another --data, another size). A caller's own module is left alone:
        # a table on all its batches (the search holds some out) or on (inputs, labels) for a task loss is the usual case.
        # The batches' own hash (a table of them records it where the workload has no recipe) only where the recipe differs
        if workload.source and table.data_fingerprint != workload.data_fingerprint:
            ours = data_fingerprint(workload.calibration)
            if table.data_fingerprint != ours:  # scores on other data still rank: said, not refused
                note(f"the sensitivity table {seed_from} was computed on other calibration data (data "
                     f"{table.data_fingerprint}) than this search's ({workload.data_fingerprint or ours}): its scores rank the "
                     "layers as that data did")
        return table
    return workload_table(workload, space.layers, space.options, seed_from, progress=progress,
                          wider=unpinned.options if unpinned is not None else None, weights=weights,
                          announce=f"autoq: {seed_from} sensitivity for {len(space.layers)} layers", seeding=True)


def space_scores(table: SensitivityTable, space: SearchSpace) -> tuple[tuple[float, ...], ...]:
    """The table's scores aligned with ``space.options``; a missing (layer, option) is a clear error. A layer of one
    option (a pin) needs no score, any constant ranks it alike: one the table lacks (a pin of a choice outside the
    space, which the table computed over the unpinned space has not scored) is 0."""
    return tuple(tuple(table.score(layer.name, c.name) if len(opts) > 1 or table.has(layer.name, c.name) else 0.0 for c in opts)
                 for layer, opts in zip(space.layers, space.options))


SEEDS_NOTE_LAYERS = 200  # from this many layers the table's seeds take long enough (12 s at 224, 42 s at 800) to say so first
AUTO_MAX_DATA_DRIVEN = 500  # (layer, option) pairs with GPTQ/AWQ/AdaRound/... that `auto` quantizes up front, at most


def data_driven_pairs(space: SearchSpace) -> int:
    """How many (layer, option) pairs of ``space`` need a data-driven PTQ method: a table quantizes them all."""
    from autoq.ptq import method_needs_stats

    return sum(not c.weight.is_half and method_needs_stats(c.method) for opts in space.options for c in opts)


def seed_metric(seed_from: str | None, strategy: str, space: SearchSpace | None = None, limit: int = AUTO_MAX_DATA_DRIVEN) -> str | None:
    """The metric or table file ``--seed-from`` resolves to for ``--strategy`` (``None``: unseeded).

    ``auto`` is `DEFAULT_SEED_METRIC` unless ``space`` has more than ``limit`` data-driven (layer, option)
    pairs: a table quantizes every pair up front (GPTQ, AWQ, AdaRound at up to seconds each on an LLM),
    where a search quantizes only the pairs its trials meet. For a space with activation formats it is
    `ACTIVATION_SEED_METRIC`: fisher scored ``+a8-tensor`` and ``+a8-token`` alike, and the seeds chose between them
    at random."""
    if seed_from in (None, NONE):
        return None  # refused for ilp and greedy by check_seed_from
    if seed_from != AUTO:
        return seed_from
    if not strategy_reads_scores(strategy):
        return None  # random: a table would go unread
    if not strategy_needs_scores(strategy) and space is not None and data_driven_pairs(space) > limit:
        return None
    if space is not None and any(c.activation is not None for opts in space.options if len(opts) > 1 for c in opts):  # not a pin's
        return ACTIVATION_SEED_METRIC
    return DEFAULT_SEED_METRIC


def start_strategy(workload: Workload, config: SearchConfig, problem: Prepared, study_name: str, storage: str | None,
                   room: int = 0, weights: QuantCache | None = None,
                   ) -> tuple[Strategy, list[Assignment], list[Assignment], str | None, SensitivityTable | None]:
    """(strategy, seeds to enqueue, uniform baselines among them, the metric or table file whose scores seeded it:
    ``None`` where none did, and that table: the search logs it, a file being the user's to overwrite) for
    ``config.strategy`` and ``config.seed_from``. ``room``: a resume's `seed_room`, the seeds it will add; ``weights``:
    the trials' quantized-weight cache, which a table computed now fills (see `seed_table`)."""
    factory = strategy_factory(config.strategy)
    seed_from = seed_metric(config.seed_from, config.strategy, problem.space)
    if config.seed_from == AUTO and seed_from is None and strategy_reads_scores(config.strategy):  # a decision: a note
        # named for both ways in (a Python search was told of a flag): the note is the same for either
        note(f"{_AUTO} skips the sensitivity table: it would run data-driven PTQ on {data_driven_pairs(problem.space)} "
             f"(layer, option) pairs up front (more than {AUTO_MAX_DATA_DRIVEN}); starting from random budget-filling mixes "
             "(seed_from='fisher', --seed-from fisher, computes it anyway)")
    if seed_from and config.seed_from == AUTO and config.strategy == "optuna" and not config.resume:
        n_uniform = len(uniform_seeds(problem.space, problem.cost_model, problem.budget, config.max_uniform_seeds))
        if config.n_trials <= n_uniform:  # every trial asked for is a uniform baseline: no seed would be evaluated
            seed_from = None
            note(f"{_AUTO} skips the sensitivity table: the {config.n_trials} trial(s) asked for are all uniform "
                 f"baselines (of {n_uniform}); mixes, which it seeds, start after them")
    scores, table = None, None
    # a resumed study keeps the seeds its first session enqueued: only a strategy that solves on the table needs it again,
    # or a resume whose --n-trials leaves room for seeds the first session's fewer trials left out (`seed_room`), or one
    # that makes the MLflow run its first session stopped before making: it logs the table, as every search's run does
    unlogged = config.resume and bool(config.tracking_uri) and _no_run_recorded(storage, study_name)
    if seed_from and (not config.resume or strategy_needs_scores(config.strategy) or room or unlogged):
        try:
            table = seed_table(workload, problem.space, seed_from, config.progress, _unpinned(config, problem.space), weights)
            scores = space_scores(table, problem.space)
        except Exception as exc:  # noqa: BLE001 - only the default may fall back, and it says why
            if config.seed_from != AUTO or strategy_needs_scores(config.strategy):
                raise
            warn(f"no {seed_from} sensitivity table for seeding ({type(exc).__name__}: {exc}); "
                 "starting from random budget-filling mixes instead (--seed-from METRIC to insist, none to skip)")
            seed_from, table = None, None
        from autoq.engine.resume import seed_table_changed  # (resume imports this module)

        if (table is not None and config.resume and not strategy_needs_scores(config.strategy)
                and seed_table_changed(storage, study_name, table.scores_digest())):
            note(f"the sensitivity table {seed_from} is not the one this search was seeded from (overwritten since): "
                 + ("the seeds this resume adds are random budget-filling mixes" if room else "its MLflow run does not log it"))
            seed_from, table, scores = None, None, None
    ctx = StrategyContext(
        problem.space, problem.cost_model, problem.budget, config.sampler, config.seed, study_name, storage,
        config.n_trials, config.n_fill_seeds, scores, config.resume, config.max_uniform_seeds,
    )
    if scores is not None and config.progress and len(problem.space.layers) >= SEEDS_NOTE_LAYERS:
        print(f"autoq: solving the {config.strategy} strategy's seeds on the {seed_from} table ({len(problem.space.layers)} layers; "
              "ILP solves take seconds each at this size) ...", file=sys.stderr, flush=True)
    try:
        made = factory(ctx)  # ilp/greedy always have scores here: seed_metric names a table, whose failure raised
    except optuna.exceptions.DuplicatedStudyError:  # a plug-in strategy made by an autoq before the search made its study
        raise AutoqError(f"the {config.strategy!r} strategy creates its Optuna study itself, which the search has already made "
                         f"({study_name!r}); the strategy must load it (optuna.create_study(..., load_if_exists=True), or "
                         "make_strategy / QueueStrategy: see docs/plugins.md)") from None
    strategy, seeds, uniform = _strategy_parts(config.strategy, made)
    for what, assignments in (("seed", seeds), ("uniform baseline", uniform)):
        for n, assignment in enumerate(assignments):
            check_proposal(problem.space, assignment, f"{what} {n} of strategy {config.strategy!r}")
    return strategy, seeds, uniform, seed_from, table


def _no_run_recorded(storage: str | None, study_name: str) -> bool:
    """Whether the stored search has recorded no MLflow parent run (its first session stopped before making one)."""
    from autoq.engine.resume import read_run_id  # (resume imports this module)

    return read_run_id(storage, study_name) is None


def seed_room(config: SearchConfig, problem: Prepared, storage: str | None, study_name: str) -> int:
    """How many seeds besides the baselines a resume of the ``optuna`` strategy enqueues: those this session's
    ``--n-trials`` leaves room for (as a first session of that many trials would enqueue) less those the study holds.
    A first session of fewer trials enqueued fewer (none when every trial was a baseline), and a resume of more
    enqueued none: the sampler ran unseeded where a fresh search of as many trials was seeded. 0 for other strategies."""
    if not config.resume or config.strategy != "optuna" or storage is None:
        return 0
    from autoq.engine.resume import seeded_mixes

    uniform = uniform_seeds(problem.space, problem.cost_model, problem.budget, config.max_uniform_seeds)
    wanted = min(config.n_fill_seeds, max(0, config.n_trials - len(uniform)))
    return max(0, wanted - seeded_mixes(storage, study_name, uniform)) if wanted else 0


def _strategy_parts(name: str, made: object) -> tuple[Strategy, list[Assignment], list[Assignment]]:
    """A strategy factory's ``(strategy, seeds, uniform)``, refused with the plug-in named when it is not that (``None``
    failed as 'cannot unpack non-iterable NoneType object')."""
    parts = tuple(made) if isinstance(made, (tuple, list)) else None
    if parts is None or len(parts) != 3 or not all(callable(getattr(parts[0], m, None)) for m in ("ask", "tell", "seed")):
        raise AutoqError(f"strategy {name!r} returned {made!r:.200}; a strategy factory returns (strategy, seeds, uniform): an object with "
                         "ask, tell and seed (make_strategy or QueueStrategy make one) and two lists of assignments (see docs/plugins.md)")
    strategy, seeds, uniform = parts
    return strategy, list(seeds), list(uniform)
