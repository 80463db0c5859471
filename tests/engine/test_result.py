"""``SearchResult.study()``: the search's Optuna study, for Optuna's own tools."""

from __future__ import annotations

import optuna
import pytest

import autoq
from autoq.errors import AutoqError


def test_study_loads_every_proposal_from_the_storage(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = autoq.search("digits-cnn", budget="3.5bits", n_trials=8, seed=1, storage=storage, tracking_uri=None, progress=False, seed_from="none")
    study = result.study()
    assert study.study_name == result.study_name and study.metric_names == ["quality", "effective_bits"]
    complete = {t.number: t for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    assert sorted(complete) == sorted(p.trial for p in result.points)
    for p in result.points:
        assert complete[p.trial].values == pytest.approx([p.quality, p.effective_bits])
        assert complete[p.trial].params == {name: choice.name for name, choice in p.assignment.items()}
    frame = study.trials_dataframe()
    assert len(frame) == len(study.trials) >= len(result.points)  # the over-budget proposals too, pruned
    # a short repr: the dataclass's printed every point, and the frontier again (770 kB for 100 trials of MiniLM)
    best = result.best
    assert repr(result) == (f"SearchResult(budget='3.5bits', points={len(result.points)}, frontier={len(result.frontier)}, best=<trial "
                            f"{best.trial}, quality {best.quality:.4g} at {best.effective_bits:.3f} bits>, study_name={result.study_name!r}, "
                            "parent_run_id=None)")


def test_an_in_memory_study_is_a_clear_error():
    result = autoq.search("digits-cnn", budget="3.5bits", n_trials=2, storage=None, tracking_uri=None, progress=False, seed_from="none")
    with pytest.raises(AutoqError, match="kept in memory \\(storage=None\\) and is gone"):
        result.study()
