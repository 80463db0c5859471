"""The new presets drive a real (small) search: digits CNN, data-driven methods, sequential statistics."""

from __future__ import annotations

import pytest

from autoq.builtin import load_workload
from autoq.engine import SearchConfig, run_search


@pytest.mark.slow
@pytest.mark.parametrize("space, sequential", [("cnn-mixed", True), ("full", False)])
def test_small_search_over_new_presets(space, sequential):
    workload = load_workload("digits-cnn")
    config = SearchConfig(budget="5bits", space=space, n_trials=6, n_fill_seeds=2, tracking_uri=None, storage=None,
                          progress=False, sequential=sequential)
    result = run_search(workload, config)
    assert result.n_failed == 0
    assert len(result.points) == 6
    assert all(p.effective_bits <= 5.0 + 1e-9 for p in result.points)
    assert result.best.quality > 0.5
