"""The closing summary of a search: counts read as English."""

from __future__ import annotations

import autoq
from autoq.engine import format_summary


def test_one_trial_is_one_trial():
    result = autoq.search("digits-cnn", budget="4.5bits", n_trials=1, seed_from="none", tracking_uri=None, storage=None, progress=False)
    summary = format_summary(result)
    assert "1 trial in " in summary and "1 trials" not in summary
