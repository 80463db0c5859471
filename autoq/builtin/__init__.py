"""Built-in models and data: MiniLM on standard-library sentences (default), SmolLM2-135M, a CNN on digits."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from autoq.builtin.digits import digits_workload, empty_digits_cnn
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
    # out of a caller's torch.inference_mode: weights loaded (or digits-cnn trained) under it are inference tensors, which
    # no sensitivity metric can use, and digits-cnn's training failed there ('element 0 of tensors does not require grad')
    with torch.inference_mode(False):
        if name in BUILTINS:
            return dataclasses.replace(BUILTINS[name](with_metric=with_metric), source=name)
        return dataclasses.replace(text_workload(name, with_metric=with_metric), source=str(Path(name).resolve()))


def builtin_architecture(name: str) -> nn.Module | None:
    """A built-in's architecture with empty weights, for an export's weights to fill, where it is not a Hugging Face
    model (those rebuild from their config); else ``None``. ``load_workload`` would load its data and train it first
    (129 s for digits-cnn with no cached model) and need the data's package, only for the weights to be replaced."""
    return empty_digits_cnn() if name == "digits-cnn" else None


__all__ = ["BUILTINS", "builtin_architecture", "DEFAULT_MODEL", "NoMetric", "Workload", "load_workload", "minilm_workload", "smollm2_workload", "text_workload", "digits_workload"]
