"""The Optuna study of a search: its default name, and its removal when the search stops before it is usable.

A default name is the model, the budget and the time to the second; two searches started within one
second (a pipeline looping over seeds) would share it, so a name the storage already holds gets
``-2``, ``-3``, ... A study is usable (resumable) once its seeds and settings are stored: one cut
short before that (Ctrl-C while seeding) could be neither resumed nor reused, so it is deleted.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

import optuna

from autoq.budget import Budget
from autoq.interrupts import deferred_interrupts


def default_study_name(model_name: str, budget: Budget, storage: str | None = None) -> str:
    """``autoq-<model>-<budget>-<UTC time>``, with a ``-N`` suffix when ``storage`` already holds that name."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"autoq-{model_name}-{budget.text}-{stamp}")
    taken = set(_names(storage))
    return next(name for name in (base, *(f"{base}-{i}" for i in range(2, len(taken) + 3))) if name not in taken)


def _names(storage: str | None) -> list[str]:
    if storage is None:
        return []
    try:
        return optuna.get_all_study_names(storage)
    except Exception:  # noqa: BLE001 - no database yet (or none readable): nothing is taken, and creating it says more
        return []


@contextmanager
def removed_unless_finished(storage: str | None, study_name: str, new: bool) -> Iterator[None]:
    """Delete the study ``study_name`` if the block, which creates (``new``) and seeds it, does not finish;
    never a study that was there before it."""
    existed = not new or study_name in _names(storage)
    try:
        yield
    except BaseException:
        if storage is not None and not existed and study_name in _names(storage):
            with deferred_interrupts():
                optuna.delete_study(study_name=study_name, storage=storage)
        raise
