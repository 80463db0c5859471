"""Resume of a study that other code added trials to (``study.optimize`` with a user's own objective, as Optuna's
tools invite): those trials are not autoq's measurements."""

from __future__ import annotations

import warnings

import optuna
import pytest
import torch
from helpers import child_runs
from mlflow.tracking import MlflowClient

import autoq
from autoq.choice import Assignment
from autoq.engine.strategy import CONSTRAINT, CONSTRAINT_ATTR, Proposal
from autoq.errors import AutoqWarning


def _mlp_and_data() -> tuple[torch.nn.Module, list[torch.Tensor]]:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)), [torch.randn(8, 16) for _ in range(2)]


def test_the_constraint_attribute_is_where_optuna_stores_a_trials_constraint():
    study = optuna.create_study()
    trial = study.ask()
    trial.set_constraint(CONSTRAINT, 0.5)
    assert study.trials[0].system_attrs[CONSTRAINT_ATTR] == 0.5


def test_trials_told_by_a_users_own_objective_are_left_out_of_the_frontier_mlflow_and_the_count(tmp_path, mlflow_uri):
    """A resume took them as measured: the frontier showed the user's made-up quality for an assignment autoq had
    measured lower, logged it to MLflow as a Pareto run, and counted them toward --n-trials."""
    model, data = _mlp_and_data()
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    options = dict(budget="6bits", n_trials=6, seed_from="none", tracking_uri=mlflow_uri, storage=storage, study_name="s", progress=False)
    first = autoq.search(model, data, **options)
    study = optuna.load_study(study_name="s", storage=storage)
    measured = first.points[0]
    study.enqueue_trial({name: choice.name for name, choice in measured.assignment.items()})
    distributions = study.trials[0].distributions

    def own(trial):
        for name, distribution in distributions.items():
            trial.suggest_categorical(name, distribution.choices)
        return 2.0, 1.0  # a quality no quantized model reaches, at 1 bit

    study.optimize(own, n_trials=2)
    foreign = [t.number for t in study.trials[-2:]]
    with pytest.warns(AutoqWarning, match=rf"2 finished trial\(s\) autoq did not evaluate \(trial {foreign[0]}, {foreign[1]}:"):
        again = autoq.search(model, data, resume=True, **options)
    assert max(p.quality for p in again.points) < 2.0
    assert {p.trial for p in again.points} == {p.trial for p in first.points}  # the 6 asked for are done: nothing more
    assert all(float(r.data.metrics["quality"]) < 2.0 for r in child_runs(MlflowClient(mlflow_uri), first.parent_run_id))


def test_other_codes_trials_are_left_out_of_a_study_whose_first_trial_was_interrupted(tmp_path):
    """Its one trial of autoq's, failed as interrupted, has no constraint: no trial had one, the study was taken for a
    plug-in strategy's, and the user's made-up 2.0 was the resumed search's best point."""
    model, data = _mlp_and_data()
    calls = []

    def evaluate(m):
        calls.append(1)
        if len(calls) == 2:  # the reference, then Ctrl-C in the first trial
            raise KeyboardInterrupt
        with torch.no_grad():
            return float(torch.nn.functional.cosine_similarity(m(data[0]), model(data[0])).mean())

    options = dict(budget="6bits", n_trials=4, seed_from="none", tracking_uri=None, storage=f"sqlite:///{tmp_path / 'o.db'}", study_name="i",
                   progress=False)
    with pytest.raises(KeyboardInterrupt):
        autoq.search(model, data, evaluate, **options)
    study = optuna.load_study(study_name="i", storage=options["storage"])
    distributions = next(t.distributions for t in study.trials if t.distributions)
    study.optimize(lambda trial: ([trial.suggest_categorical(n, d.choices) for n, d in distributions.items()] and (2.0, 1.0)), n_trials=2)
    with pytest.warns(AutoqWarning, match=r"2 finished trial\(s\) autoq did not evaluate"):
        again = autoq.search(model, data, evaluate, resume=True, **options)
    assert len(again.points) == 4 and max(p.quality for p in again.points) < 2.0


class _TellsWithoutConstraint:
    """A plug-in strategy that keeps its own study and tells without Optuna's constraint, as the Strategy protocol allows."""

    def __init__(self, ctx):
        self.space = ctx.space
        self.study = optuna.create_study(study_name=ctx.study_name, storage=ctx.storage, directions=["maximize", "minimize"],
                                         load_if_exists=True, sampler=optuna.samplers.RandomSampler(seed=len(optuna.load_study(
                                             study_name=ctx.study_name, storage=ctx.storage).trials)))

    def seed(self, assignments):
        pass

    def retry(self, proposal):
        pass

    def note(self, proposal, key, value):
        proposal.handle.set_user_attr(key, value)

    def ask(self):
        trial = self.study.ask()
        picks = {}
        for layer, options in zip(self.space.layers, self.space.options):
            names = [c.name for c in options]
            picks[layer.name] = options[names.index(trial.suggest_categorical(layer.name, names))]
        return Proposal(trial, trial.number, Assignment(tuple(picks.items())))

    def tell(self, proposal, values, violation, error=None):
        if error is not None or values is None:
            self.study.tell(proposal.handle, state=optuna.trial.TrialState.FAIL if error else optuna.trial.TrialState.PRUNED)
        else:
            self.study.tell(proposal.handle, list(values[:2]))


def test_a_plug_in_strategy_that_tells_without_the_constraint_keeps_its_trials_on_resume(tmp_path, monkeypatch):
    """Its trials have no budget constraint either: all were left out as other code's, and their MLflow runs deleted."""
    from autoq.engine import strategies

    monkeypatch.setattr(strategies, "_STRATEGIES", strategies._STRATEGIES.copy())
    strategies.register_strategy("tells-plainly", reads_scores=False, uses_sampler=False, reads_seed_counts=False)(
        lambda ctx: (_TellsWithoutConstraint(ctx), [], []))
    model, data = _mlp_and_data()
    options = dict(budget="12bits", seed_from="none", strategy="tells-plainly", tracking_uri=None, storage=f"sqlite:///{tmp_path / 'o.db'}",
                   study_name="p", progress=False)
    first = autoq.search(model, data, n_trials=3, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AutoqWarning)  # no 'autoq did not evaluate' warning
        again = autoq.search(model, data, n_trials=3, resume=True, **options)
    assert first.points and [p.trial for p in again.points] == [p.trial for p in first.points]
