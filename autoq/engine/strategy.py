"""Search strategies speak ask/tell, like Optuna: ``seed`` known-good assignments,
``ask`` for the next one, ``tell`` its objectives. One registry holds them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import optuna

from autoq.choice import Assignment
from autoq.errors import AutoqError
from autoq.space import SearchSpace

OBJECTIVES = ("quality", "effective_bits")
DIRECTIONS = ("maximize", "minimize")
CONSTRAINT = "budget"


@dataclass(frozen=True)
class Proposal:
    handle: Any  # strategy-specific (an Optuna trial)
    number: int
    assignment: Assignment


class Strategy(Protocol):
    def seed(self, assignments: Sequence[Assignment]) -> None: ...
    def ask(self) -> Proposal: ...
    def tell(self, proposal: Proposal, values: tuple[float, float] | None, violation: float, error: str | None = None) -> None: ...


class OptunaStrategy:
    """A multi-objective Optuna study (maximise quality, minimise effective bits).

    Each layer is a categorical parameter named after the layer, valued by the
    choice name. The budget is Optuna's constraint (``<= 0`` feasible), set with
    ``trial.set_constraint`` so constraint-aware samplers learn where it lies.
    Over-budget proposals are not evaluated: they are told as pruned with their
    constraint value, which TPE and NSGA-II rank by violation alone.
    """

    def __init__(self, space: SearchSpace, sampler: optuna.samplers.BaseSampler, study_name: str, storage: str | None) -> None:
        self.space = space
        self._by_name = [{c.name: c for c in opts} for opts in space.options]
        try:
            self.study = optuna.create_study(
                study_name=study_name,
                storage=storage,
                sampler=sampler,
                directions=list(DIRECTIONS),
                load_if_exists=False,
            )
        except optuna.exceptions.DuplicatedStudyError:
            raise AutoqError(f"a study named {study_name!r} already exists in {storage}; choose another --study-name") from None
        with warnings.catch_warnings():  # experimental in Optuna, but what the dashboard shows
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.study.set_metric_names(list(OBJECTIVES))

    def seed(self, assignments: Sequence[Assignment]) -> None:
        for a in assignments:
            self.study.enqueue_trial({name: choice.name for name, choice in a.items()}, user_attrs={"seeded": True})

    def ask(self) -> Proposal:
        trial = self.study.ask()
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
            self.study.tell(trial, list(values))


def _tpe(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=10)


def _nsga2(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=20)


def _random(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


SAMPLERS: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {"tpe": _tpe, "nsga2": _nsga2, "random": _random}


def sampler_factory(name: str) -> Callable[[int], optuna.samplers.BaseSampler]:
    """Registry lookup: ``tpe`` (default), ``nsga2`` or ``random``; an unknown name is a clear error."""
    if name not in SAMPLERS:
        raise AutoqError(f"unknown search strategy {name!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def make_strategy(name: str, space: SearchSpace, seed: int, study_name: str, storage: str | None) -> Strategy:
    """The named strategy as an Optuna study over ``space``."""
    return OptunaStrategy(space, sampler_factory(name)(seed), study_name, storage)
