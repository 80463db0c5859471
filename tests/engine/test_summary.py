"""The closing summary of a search: counts read as English."""

from __future__ import annotations

import autoq
from autoq.engine import format_summary


def test_one_trial_is_one_trial():
    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=1, seed_from="none", tracking_uri=None, storage=None, progress=False)
    summary = format_summary(result)
    assert "1 trial in " in summary and "1 trials" not in summary


def test_a_storage_read_back_with_its_password_hidden_says_so():
    """'autoq pareto' printed an optuna-dashboard command with '***' for the password, which cannot connect."""
    import dataclasses

    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=1, seed_from="none", tracking_uri=None, storage=None, progress=False)
    summary = format_summary(dataclasses.replace(result, storage="postgresql://me:***@db/s"))
    assert "in postgresql://me:***@db/s (MLflow keeps it with its password hidden: put yours in place of ***)." in summary
