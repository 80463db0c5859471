"""Search strategies speak ask/tell, like Optuna: ``seed`` known-good assignments, ``ask`` for the next one,
``tell`` its objectives. The Optuna study strategy, its samplers (a registry), and the queue strategy that
stores a fixed source's proposals as trials; the strategy registry and factories are in `autoq.engine.strategies`.
"""

from __future__ import annotations

import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import optuna

from autoq.choice import Assignment
from autoq.engine.study_names import is_claimed_here
from autoq.errors import AutoqError, AutoqWarning
from autoq.messages import warnings_ignored
from autoq.registry import Registry, check_callable
from autoq.space import SearchSpace

OBJECTIVES = {"quality": "maximize", "effective_bits": "minimize"}
LATENCY_OBJECTIVE = {"latency_ms": "minimize"}  # the third objective of a search with a latency source (--device)
CONSTRAINT = "budget"
CONSTRAINT_ATTR = f"constraints:{CONSTRAINT}"  # where Optuna's Trial.set_constraint stores it: every trial autoq tells has one
RETRY_ATTR = "autoq.retry_of"  # trial user attribute: the number of the trial an enqueued one retries (a failure, or a resume's interrupted trial)
SOURCE_ATTR = "autoq.source_index"  # trial user attribute: the place in a QueueStrategy's source of the proposal it holds
_NOT_FROM_SOURCE = -1  # its value on a QueueStrategy's seed, enqueued ahead of the source


def study_objectives(with_latency: bool) -> dict[str, str]:
    """Optuna's objectives (metric name: direction), in the order a trial's values are told.

    They are the MLflow metric names of a trial, so the study's Pareto front
    (``study.best_trials``, the dashboard's plot) is autoq's frontier, but for a sampler's repeat of an
    assignment (its trial's ``autoq.repeat_of``), told the same values, which Optuna lists beside the first.
    """
    return {**OBJECTIVES, **(LATENCY_OBJECTIVE if with_latency else {})}


@dataclass(frozen=True)
class Proposal:
    """One assignment a strategy asks to be evaluated: ``number`` is its trial number in the study (MLflow's
    ``trial`` tag), ``handle`` whatever the strategy needs to tell it later (an Optuna trial)."""

    handle: Any
    number: int
    assignment: Assignment


class Strategy(Protocol):
    """What the search loop drives, in Optuna's ask/tell style; every built-in one keeps its trials in an Optuna study."""

    def seed(self, assignments: Sequence[Assignment]) -> None:
        """Queue ``assignments`` to be proposed first, in order (Optuna's ``enqueue_trial``)."""

    def retry(self, proposal: Proposal) -> None:
        """Queue ``proposal``'s assignment again: its trial failed and is given another try."""

    def note(self, proposal: Proposal, key: str, value: object) -> None:
        """Store ``key=value`` with the trial (an Optuna user attribute), e.g. ``autoq.repeat_of``."""

    def ask(self) -> Proposal:
        """The next assignment to evaluate."""

    def tell(self, proposal: Proposal, values: tuple[float, ...] | None, violation: float, error: str | None = None) -> None:
        """The trial's objectives (``study_objectives`` order), or ``None`` with the ``error`` that failed it, and how far it
        is over the budget (``<= 0`` within it; an over-budget proposal is told without values and not evaluated)."""

    # optional: ``exhausted`` (a bool property) is true once the strategy has nothing new to propose; the search then
    # ends with the trials it has instead of recording repeats up to n_trials (`QueueStrategy` has it)


class OptunaStrategy:
    """A multi-objective Optuna study: maximise quality, minimise effective bits and, with a device, latency.

    Each layer is a categorical parameter named after the layer, valued by the
    choice name. The budget is Optuna's constraint (``<= 0`` feasible), set with
    ``trial.set_constraint`` so constraint-aware samplers learn where it lies.
    Over-budget proposals are not evaluated: they are told as pruned with their
    constraint value, which TPE ranks by violation alone; NSGA-II (Optuna 5) breeds from completed trials only,
    so it learns the budget from the evaluated ones, which all fit it.
    """

    _SEEDED: dict[str, object] = {"seeded": True}  # the user attributes a seed's trial is enqueued with

    def __init__(
        self, space: SearchSpace, sampler: optuna.samplers.BaseSampler, study_name: str, storage: str | None, resume: bool = False,
        with_latency: bool = False,
    ) -> None:
        self.space = space
        self._by_name = [{c.name: c for c in opts} for opts in space.options]
        objectives = study_objectives(with_latency)
        try:
            self.study = optuna.create_study(
                study_name=study_name,
                storage=storage,
                sampler=sampler,
                directions=list(objectives.values()),
                load_if_exists=resume,  # resume: continue the stored study (see autoq.engine.resume)
            )
        except optuna.exceptions.DuplicatedStudyError:
            self.study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler)
            if not is_claimed_here(self.study):  # this process's search made or resumed it (autoq.engine.study_names)
                raise AutoqError(f"a study named {study_name!r} already exists in {storage}; choose another name (--study-name, or "
                                 "study_name= in Python), or resume it (--resume NAME, resume=True)") from None
        self.n_objectives = _stored_objectives(self.study, objectives)
        set_metric_names(self.study, list(objectives)[: self.n_objectives])

    def seed(self, assignments: Sequence[Assignment]) -> None:
        for a in assignments:
            self.study.enqueue_trial(_params(a), user_attrs=dict(self._SEEDED))

    def note(self, proposal: Proposal, key: str, value: object) -> None:
        """Record ``key`` on the proposal's trial (a user attribute: Optuna's dashboard and ``trials_dataframe`` show it)."""
        proposal.handle.set_user_attr(key, value)

    def retry(self, proposal: Proposal) -> None:
        """Enqueue a failed proposal again: the retry names the trial it retries (``autoq.retry_of``, as a resume's
        retries do) and is ``seeded`` only if that trial was (a sampler's proposal retried looked like a seed)."""
        seeded = bool(proposal.handle.user_attrs.get("seeded"))  # the Optuna trial asked for
        self.study.enqueue_trial(_params(proposal.assignment), user_attrs={RETRY_ATTR: proposal.number, **({"seeded": True} if seeded else {})})

    def ask(self) -> Proposal:
        trial = self.study.ask()
        if isinstance(self.study.sampler, optuna.samplers.BaseGASampler):
            # an enqueued trial (a seed: a baseline, the sensitivity table's picks) is one a GA sampler (NSGA-II) never
            # samples, so it got no generation and never became a parent: NSGA-II ran as if unseeded. Its relative
            # sample gives it the current one, as the sampler's own trials get it (their suggestions read it anyway)
            trial.relative_params  # noqa: B018 - read for that effect
        picks = {}
        for layer, options in zip(self.space.layers, self._by_name):
            picks[layer.name] = options[trial.suggest_categorical(layer.name, list(options))]
        return Proposal(trial, trial.number, Assignment(tuple(picks.items())))

    def tell(self, proposal: Proposal, values: tuple[float, float] | None, violation: float, error: str | None = None) -> None:
        trial = proposal.handle
        trial.set_constraint(CONSTRAINT, violation)
        if error is not None:
            trial.set_user_attr("error", error)
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        elif values is None:
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            self.study.tell(trial, list(values[: self.n_objectives]))


def _stored_objectives(study: optuna.Study, objectives: dict[str, str]) -> int:
    """How many of ``objectives`` a (possibly resumed) study has: all of them, or the first two
    for a search with a device stored before latency became an Optuna objective."""
    stored = [d.name.lower() for d in study.directions]
    if stored != list(objectives.values())[: len(stored)] or len(stored) < len(OBJECTIVES):
        wanted = ", ".join(f"{name} ({direction})" for name, direction in objectives.items())
        raise AutoqError(f"study {study.study_name!r} optimises {len(stored)} objective(s) {stored}, not {wanted}; "
                         "it was not started by this autoq search: resume it with its own settings, or choose another --study-name")
    return len(stored)


def _tpe(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=10)


def _nsga2(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=20)


def _random(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


SamplerFactory = Callable[[int], optuna.samplers.BaseSampler]  # seed -> a multi-objective Optuna sampler
_SAMPLERS: Registry[SamplerFactory] = Registry(
    "sampler", hint=" (a plug-in's sampler is known once its module is imported: --plugin MODULE on the command line), or pass an "
                    "optuna.samplers.BaseSampler instance (Python API)",
)
_SAMPLERS.add("tpe", _tpe)
_SAMPLERS.add("nsga2", _nsga2)
_SAMPLERS.add("random", _random)


def register_sampler(name: str) -> Callable[[SamplerFactory], SamplerFactory]:
    """Decorator: make ``factory(seed) -> optuna.samplers.BaseSampler`` available as ``--sampler NAME``. The sampler
    must handle multi-objective studies (2 objectives, 3 with a latency source) and Optuna's constraints."""
    def checked(factory: SamplerFactory) -> SamplerFactory:
        check_callable("sampler", name, factory, ("seed",))
        return factory

    return _SAMPLERS.decorator(name, checked)


def sampler_names() -> list[str]:
    """Every registered sampler's name, the built-ins first."""
    return _SAMPLERS.names()


def sampler_factory(sampler: str | optuna.samplers.BaseSampler) -> SamplerFactory:
    """Registry lookup: ``tpe`` (default), ``nsga2``, ``random`` or a registered name; an unknown name is a clear error.

    A sampler instance (the Python API's ``sampler=optuna.samplers.NSGAIISampler(seed=1)``) is used as given, with
    its own seed: it must handle multi-objective studies (2 objectives, 3 with a latency source). Each search gets a
    copy of it as built: one instance in a reused ``SearchConfig`` went on from the first search's random state, so the
    second search was another, under the same recorded settings."""
    _check_multi_objective(sampler, "CmaEsSampler")
    if isinstance(sampler, optuna.samplers.BaseSampler):
        return lambda seed: _copied(sampler)
    return _SAMPLERS.get(sampler)


_RLOCK = type(threading.RLock())


def _copied(sampler: optuna.samplers.BaseSampler) -> optuna.samplers.BaseSampler:
    """A deep copy of ``sampler``, each lock in it a new one (Optuna's genetic samplers, NSGAIISampler and
    NSGAIIISampler, hold a ``threading.Lock``, which deepcopy refuses: they were reused unsaid, and a second search
    went on from the first's random state and generation). Where it still cannot be copied (a plug-in's holding a
    connection), ``sampler`` itself, with a warning that a search with it again will not repeat this one."""
    import copy

    try:
        fresh = {id(lock): threading.RLock() if isinstance(lock, _RLOCK) else threading.Lock() for lock in _locks(sampler)}
        return copy.deepcopy(sampler, fresh)
    except Exception as error:  # noqa: BLE001 - any failure to copy: the instance as given, said
        warnings.warn(f"{type(sampler).__name__} could not be copied ({error}): this search uses the instance itself, so "
                      "another search given it goes on from its state and will not repeat this one; pass a new instance "
                      "to each search to repeat it", AutoqWarning, stacklevel=4)
        return sampler


def _locks(root: object) -> list[object]:
    """The ``threading`` locks Optuna's samplers hold themselves: among the attributes of ``root`` and of the samplers
    it holds (NSGAIISampler's random sampler), and their containers, where they are Optuna's. Not a lock of a plug-in's
    subclass, nor a study's or a storage's it holds, which may have to stay shared: those still fail the copy, and the
    instance is used as given, with a warning."""
    kinds = (type(threading.Lock()), _RLOCK)
    found, seen, todo = [], set(), [root]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, kinds):
            found.append(item)
        elif isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, (list, tuple, set)):
            todo.extend(item)
        elif type(item).__module__.startswith("optuna.samplers"):
            todo.extend(vars(item).values() if hasattr(item, "__dict__") else ())
    return found


def sampler_name(sampler: str | optuna.samplers.BaseSampler) -> str:
    """How a search records its sampler (MLflow param, stored settings): the registry name, or an instance's class."""
    return sampler if isinstance(sampler, str) else type(sampler).__name__


def make_strategy(
    sampler: str | optuna.samplers.BaseSampler, space: SearchSpace, seed: int, study_name: str, storage: str | None, resume: bool = False,
    with_latency: bool = False,
) -> Strategy:
    """The sampler's strategy as an Optuna study over ``space`` (``resume``: load the stored study of that name;
    ``with_latency``: latency is the third objective).

    A resumed study's sampler is seeded from ``seed`` and the number of trials the study holds: seeded with ``seed``
    alone, a random sampler (and NSGA-II's first generation, TPE's start-up trials) proposed again, in order, what it
    had proposed before the interruption. The same stored study still resumes the same way. A sampler instance keeps
    its own seed."""
    factory = sampler_factory(sampler)
    strategy = OptunaStrategy(space, _made(sampler, factory, seed), study_name, storage, resume, with_latency)
    stored = len(strategy.study.get_trials(deepcopy=False)) if resume else 0
    if stored and not isinstance(sampler, optuna.samplers.BaseSampler):
        strategy.study.sampler = _made(sampler, factory, resumed_seed(seed, stored))
    return strategy


def _made(sampler: str | optuna.samplers.BaseSampler, factory: SamplerFactory, seed: int) -> optuna.samplers.BaseSampler:
    """``factory(seed)``, refused unless it is a sampler instance: a plug-in's class, or ``None``, failed deep in
    Optuna (``before_trial() missing 1 required positional argument``)."""
    made = factory(seed)
    if not isinstance(made, optuna.samplers.BaseSampler):
        raise AutoqError(f"sampler {sampler_name(sampler)!r} returned {made!r}, not an optuna.samplers.BaseSampler instance; its factory "
                         "takes the seed and returns a sampler (optuna.samplers.TPESampler(seed=seed, multivariate=True), say)")
    _check_multi_objective(made, f"sampler {sampler_name(sampler)!r} returned a CmaEsSampler, which")
    return made


def _check_multi_objective(sampler: object, what: str) -> None:
    """Refuse Optuna's one single-objective sampler: its ValueError came mid-search, after the seeded trials."""
    if isinstance(sampler, optuna.samplers.CmaEsSampler):
        raise AutoqError(f"{what} optimizes one objective, and autoq's study has 2 (quality and bits; 3 with a latency source): "
                         "pass a multi-objective sampler, such as optuna.samplers.TPESampler or NSGAIISampler")


def resumed_seed(seed: int, n_stored: int) -> int:
    """The sampler seed of a session resuming a study that holds ``n_stored`` trials: a function of both, well mixed
    (``seed + n_stored`` would give two searches of neighbouring seeds each other's proposals)."""
    return int(np.random.SeedSequence([seed, n_stored]).generate_state(1)[0])


class QueueStrategy(OptunaStrategy):
    """Proposals from a fixed source (ILP, greedy, random) instead of a sampler.

    Each proposal is enqueued into an Optuna study first, so the trials are stored,
    shown by the dashboard and told like any other. When ``source`` runs dry the strategy
    is ``exhausted`` and the search ends there (asked again, it repeats its first proposal,
    which the search loop recognises and does not evaluate again). A resumed study replays
    the source from its beginning, each proposal an earlier session made (a trial not retrying
    another nor a seed; ``autoq.source_index`` is its place) skipped once: a search stopped and resumed
    proposes what one that ran through would. Skipping every stored assignment also skipped the
    source's later repeats, which a search that ran through counts as trials (random proposes
    some), and the two parted ways.
    """

    # a plug-in factory's seeds, enqueued ahead of the source, are marked as not the source's: a resume that skipped them
    # in its replay passed over the source's own later proposal of one, which a search that ran through makes (a repeat it
    # counts as a trial)
    _SEEDED = {**OptunaStrategy._SEEDED, SOURCE_ATTR: _NOT_FROM_SOURCE}

    def __init__(
        self, space: SearchSpace, source: Iterator[Assignment], study_name: str, storage: str | None, resume: bool = False, with_latency: bool = False
    ) -> None:
        super().__init__(space, optuna.samplers.RandomSampler(seed=0), study_name, storage, resume, with_latency)
        self._source = enumerate(source)  # each proposal with its place in the source
        self._first: Assignment | None = None
        self._ahead: tuple[int, Assignment] | None = None  # the next new proposal, taken from the source to know whether there is one
        # what earlier sessions proposed, not yet replayed: every trial but a retry (of a failed or interrupted one) or a
        # seed, those an older autoq stored without their place too (by the place alone, a second resume of its study
        # proposed its first session's trials again); by the enqueued parameters: a waiting trial has no params yet
        made = [t for t in self.study.get_trials(deepcopy=False)
                if t.user_attrs.get(RETRY_ATTR) is None and t.user_attrs.get(SOURCE_ATTR) != _NOT_FROM_SOURCE]
        self._made = Counter(frozenset((t.system_attrs.get("fixed_params") or t.params).items()) for t in made)

    @property
    def exhausted(self) -> bool:
        """Whether nothing new is left to propose: no queued trial, and the source holds nothing an earlier session did not propose."""
        if self._ahead is not None or self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
            return False
        self._ahead = self._next_new()
        return self._ahead is None

    def ask(self) -> Proposal:
        if not self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
            nxt, self._ahead = self._ahead or self._next_new(), None
            if nxt is not None:
                place, assignment = nxt
                self.study.enqueue_trial(_params(assignment), user_attrs={"seeded": True, SOURCE_ATTR: place})
            elif self._first is not None:
                self.seed([self._first])
        return super().ask()

    def _next_new(self) -> tuple[int, Assignment] | None:
        """The source's next proposal not made by an earlier session, with its place in the source. Skipped by count,
        not by place: a source made anew may differ from the last session's (greedy sweeps as many budgets as trials)."""
        for place, assignment in self._source:
            check_proposal(self.space, assignment, f"proposal {place} of the strategy's source")
            self._first = self._first or assignment
            key = frozenset(_params(assignment).items())
            if self._made[key] > 0:
                self._made[key] -= 1
                continue
            return place, assignment
        return None


def check_proposal(space: SearchSpace, assignment: object, what: str) -> None:
    """Refuse a strategy's seed or proposal that is not an assignment of the search space, saying whose: a choice
    outside a layer's options failed deep in Optuna's ask (a ValueError naming neither), a layer left out was filled
    by the sampler and one not searched was dropped, both unsaid (the trial scored what the strategy never proposed)."""
    if not isinstance(assignment, Assignment):
        raise AutoqError(f"{what} is {assignment!r:.120}, not an Assignment (of layer name to LayerChoice: Assignment({{'layer': "
                         "'int4-ch-asym:rtn-mse'}), or space.assignment(indices))")
    try:
        space.validate(assignment)
    except AutoqError as exc:
        raise AutoqError(f"{what} is outside the search space: {exc}") from None


def set_metric_names(study: optuna.Study, names: list[str]) -> None:
    """``study.set_metric_names`` (what the dashboard shows), without its warning that it is experimental. The method
    Optuna's decorator wraps is called where there is one, so no warning filter is touched in any thread; else the
    warning is quieted where that is safe (`warnings_ignored`: on the main thread)."""
    plain = getattr(type(study).set_metric_names, "__wrapped__", None)
    if plain is not None:
        plain(study, names)
        return
    with warnings_ignored(optuna.exceptions.ExperimentalWarning):
        study.set_metric_names(names)


def _params(assignment: Assignment) -> dict[str, str]:
    return {name: choice.name for name, choice in assignment.items()}
