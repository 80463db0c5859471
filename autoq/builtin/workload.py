"""`Workload`: a model with its calibration data and quality metric, ready to search."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from autoq.errors import AutoqError
from autoq.messages import warn


@dataclass(frozen=True)
class Workload:
    """What a search needs besides a budget. ``evaluate(model)`` returns quality, higher is better."""

    name: str
    model: nn.Module
    calibration: Sequence[Any]
    evaluate: Callable[[nn.Module], float]
    metric: str  # what quality means, one line for summaries and MLflow
    data_fingerprint: str = ""
    skip: tuple[str, ...] = ()  # layers this model leaves unquantized by default (e.g. a tied lm_head)
    source: str = ""  # what load_workload rebuilds it from (a built-in name, a directory); "" for a module of the caller's
    stored_dtype: str | None = None  # a checkpoint's half precision, where the model was loaded in fp32 for the reference: an export's

    def __repr__(self) -> str:
        """Short: the dataclass's repr printed every calibration tensor and the whole model (in Ray's errors, 133 kB)."""
        batches = len(self.calibration) if hasattr(self.calibration, "__len__") else "?"
        return (f"Workload(name={self.name!r}, model={type(self.model).__name__}, calibration={batches} batches, "
                f"metric={self.metric[:60]!r})")

    def quality(self, model: nn.Module) -> float:
        """``evaluate(model)`` as a float, called with the model in eval mode, as it is calibrated and deployed (a model
        left in train mode was scored with dropout on, and its batch norms' running statistics were updated from the
        quantized models'); gradients stay as the caller has them (a robustness metric takes the input's). A value that
        is not one number (a string, a dict, a tensor of many) is an error that says what ``evaluate`` must return, not
        float()'s message."""
        from autoq.model.modes import eval_mode

        # an evaluate that takes gradients (a robustness metric) starts from none and leaves the caller's as they were:
        # its backward added into them in place, and left a copy of every weight's gradient on a model that had none
        grads = [(p, p.grad) for p in model.parameters()]
        for p, _ in grads:
            p.grad = None
        try:
            with eval_mode(model):
                value = self.evaluate(model)
        finally:
            for p, grad in grads:
                p.grad = grad
        if hasattr(value, "detach"):  # a -loss tensor that needs grad: float() of it warned from here
            value = value.detach()
        if hasattr(value, "item") and (getattr(value, "size", None) == 1 or (hasattr(value, "numel") and value.numel() == 1)):
            value = value.item()  # a one-element array, as a one-element tensor (numpy's float() refuses one of shape (1,))
        try:
            if isinstance(value, (str, bytes)):  # float("0.5") reads a string: a value that is not a number, all the same
                raise TypeError
            return float(value)
        except (TypeError, ValueError, RuntimeError):
            shown = repr(value)
            raise AutoqError(f"evaluate(model) must return one number, higher is better (e.g. accuracy, or -loss); it returned "
                             f"{type(value).__name__} {shown[:80]}{'...' if len(shown) > 80 else ''}") from None


@dataclass(frozen=True)
class NoMetric:
    """The ``evaluate`` of a workload loaded for its model and calibration data alone (``load_workload(name,
    with_metric=False)``: an export, a sensitivity table, a model's kernel shapes). Building the metric runs the
    unquantized model over the held-out data for its reference, a quarter of a BERT export's time; called, it says so."""

    workload: str

    def __call__(self, model: nn.Module) -> float:
        raise AutoqError(f"the {self.workload} workload was loaded without its quality metric (with_metric=False), for its model and "
                         "calibration data; load it with with_metric=True to evaluate a model")


def cache_dir() -> Path:
    """Where autoq keeps trained built-in models and sensitivity tables: ``$AUTOQ_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/autoq``, else ``~/.cache/autoq``. An empty or relative ``$XDG_CACHE_HOME`` is ignored, as the XDG
    Base Directory spec says (an empty one put the cache in ``./autoq``, a new one in every folder run from). A folder
    that cannot be made (a service account's ``HOME=/nonexistent``, a read-only disk) is returned unmade: what would be
    kept there is warned about by :func:`keep_in_cache` and made again next time, as in a read-only folder that exists
    (it stopped every command that loads a built-in, ``autoq export`` of a finished search too)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    root = os.environ.get("AUTOQ_CACHE_DIR") or os.path.join(xdg if os.path.isabs(xdg) else Path.home() / ".cache", "autoq")
    path = Path(root)
    which = "$AUTOQ_CACHE_DIR" if os.environ.get("AUTOQ_CACHE_DIR") else "the cache folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # it said "File exists: PATH", naming no setting
        raise AutoqError(f"{which} ({path}) is, or lies under, a file; autoq keeps trained built-in models and sensitivity "
                         "tables there: point AUTOQ_CACHE_DIR at a folder") from None
    except OSError:  # a read-only disk, a folder not the user's
        pass
    return path


def keep_in_cache(path: Path, write: Callable[[Path], object], what: str, again: str) -> None:
    """``write(path)`` into the cache; one that cannot be written (a read-only or full disk) is warned about, naming
    ``what`` and that it will be made ``again``, and the caller goes on with what it made: it failed the command after
    the work it had done (a sensitivity table, the trained digits-cnn), naming no setting."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # the cause named: a folder that could not be made said "No such file"
        write(path)
    except OSError as exc:
        warn(f"{what} could not be kept in the cache ({exc.strerror or exc}: {exc.filename or path}), so it will be {again} again "
             "next time; point AUTOQ_CACHE_DIR at a writable folder to keep it")
