"""The digits CNN: trained once, cached, accurate."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from autoq.builtin.digits import RECIPE, digits_workload


def test_trained_once_then_loaded_from_cache():
    first = digits_workload()
    path = Path(os.environ["AUTOQ_CACHE_DIR"]) / f"{RECIPE}.pt"
    assert path.is_file()
    stamp = path.stat().st_mtime_ns
    second = digits_workload()
    assert path.stat().st_mtime_ns == stamp  # not retrained
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    assert first.evaluate(first.model) > 0.95
    assert len(first.calibration) > 0 and first.calibration[0].shape[1:] == (1, 8, 8)
