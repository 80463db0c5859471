"""Built-in models and data: MiniLM on standard-library sentences (default), SmolLM2-135M, a CNN on digits."""

from __future__ import annotations

from collections.abc import Callable

from autoq.builtin.digits import digits_workload
from autoq.builtin.huggingface import minilm_workload, text_workload
from autoq.builtin.smollm2 import smollm2_workload
from autoq.builtin.workload import Workload

BUILTINS: dict[str, Callable[[], Workload]] = {
    "minilm": minilm_workload,
    "smollm2": smollm2_workload,
    "digits-cnn": digits_workload,
}
DEFAULT_MODEL = "minilm"


def load_workload(model: str | None = None) -> Workload:
    """A built-in by name (``minilm``, ``smollm2``, ``digits-cnn``), or a local Hugging Face directory by path."""
    name = model or DEFAULT_MODEL
    if name in BUILTINS:
        return BUILTINS[name]()
    return text_workload(name)


__all__ = ["BUILTINS", "DEFAULT_MODEL", "Workload", "load_workload", "minilm_workload", "smollm2_workload", "text_workload", "digits_workload"]
