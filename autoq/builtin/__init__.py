"""Built-in models and data: MiniLM on standard-library sentences (default), SmolLM2-135M, a CNN on digits."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from autoq.builtin.digits import digits_workload
from autoq.builtin.huggingface import minilm_workload, text_workload
from autoq.builtin.smollm2 import smollm2_workload
from autoq.builtin.workload import NoMetric, Workload

BUILTINS: dict[str, Callable[..., Workload]] = {  # each takes with_metric: bool (see load_workload)
    "minilm": minilm_workload,
    "smollm2": smollm2_workload,
    "digits-cnn": digits_workload,
}
DEFAULT_MODEL = "minilm"


def load_workload(model: str | None = None, with_metric: bool = True) -> Workload:
    """A built-in by name (``minilm``, ``smollm2``, ``digits-cnn``), or a local Hugging Face directory by path.

    Its ``source`` is that name, or the directory's absolute path: a search logs it, so that ``autoq export
    --run-id`` rebuilds the model the run searched without being told which. ``with_metric=False`` skips building
    the quality metric (its reference pass over the held-out data) for work that never evaluates: an export, a
    sensitivity table, kernel shapes; its ``evaluate`` is then a `NoMetric`, which refuses to be called."""
    name = model or DEFAULT_MODEL
    if name in BUILTINS:
        return dataclasses.replace(BUILTINS[name](with_metric=with_metric), source=name)
    return dataclasses.replace(text_workload(name, with_metric=with_metric), source=str(Path(name).resolve()))


__all__ = ["BUILTINS", "DEFAULT_MODEL", "NoMetric", "Workload", "load_workload", "minilm_workload", "smollm2_workload", "text_workload", "digits_workload"]
