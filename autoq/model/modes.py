"""`eval_mode`: run a model in eval mode and put every module's own train/eval flag back afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Calibration and scoring see the model as it is deployed (no dropout, batch norm on its running statistics).
    ``model.train(was)`` would not restore it: it sets every submodule alike, and a batch norm the user froze in eval
    inside a training model would come back training."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in flags:
            m.training = training
