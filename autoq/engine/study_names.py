"""The Optuna study of a search: its default name, its creation before any work, and its removal when the search stops
before it is usable.

A default name is the model, the budget and the time to the second; two searches started within one
second (a pipeline looping over seeds) would share it, so a name the storage already holds gets
``-2``, ``-3``, ... The study is created as the search starts, before the sensitivity table and the seeds (minutes on
a large model): the storage then refuses a second search of that name at once, and a default name taken meanwhile
moves on to the next suffix. (Created only with the strategy, after that work, a second search's refusal deleted
the first one's study, 2026-12-02.) A study is usable (resumable) once its seeds and settings are stored: one cut
short before that (Ctrl-C while seeding) could be neither resumed nor reused, so it is deleted; one whose process was
killed then is taken over by the next search of its name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timezone

import optuna

from autoq.budget import Budget
from autoq.engine.sessions import SESSION_ATTR, claim, dead_here, is_ours, live_owner, storage_lock, where
from autoq.errors import AutoqError
from autoq.interrupts import deferred_interrupts

SETTINGS_ATTR = "autoq.settings"  # study user attribute: what defines the search (stored once it is seeded)


def default_study_name(model_name: str, budget: Budget) -> str:
    """``autoq-<model>-<budget>-<UTC time>``; `new_study` adds a ``-N`` suffix where the storage already holds it."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    text = budget.text.replace("\u00b5", "u").replace("\u03bc", "u")  # 250µs as 250us: it read as '250-s', seconds
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"autoq-{model_name}-{text}-{stamp}")


@contextmanager
def new_study(storage: str | None, study_name: str, directions: list[str], numbered: bool) -> Iterator[str]:
    """Create the study of a new search, marked as this process's, and yield its name; delete it if the block (which
    seeds it) does not finish. ``numbered``: the name is a default one, and if another search took it since, the next
    free ``-N`` suffix is used. An in-memory search (``storage`` None) has nothing to claim."""
    if storage is None:
        yield study_name
        return
    name = _create(storage, study_name, directions, numbered)
    try:
        yield name
    except BaseException:
        # a storage whose disk filled as the seeds went in fails this delete too: its error must not hide the first
        # (the study, left without settings, is taken over by the next search of its name once this process is gone)
        with suppress(Exception):
            _delete(storage, name)
        raise


def _delete(storage: str, name: str) -> None:
    """Delete the study ``name``, not cut short by Ctrl-C; one already gone is fine."""
    with deferred_interrupts():
        try:
            optuna.delete_study(study_name=name, storage=storage)
        except KeyError:
            pass  # already gone


def _create(storage: str, study_name: str, directions: list[str], numbered: bool) -> str:
    for i in range(1, 1000):
        name = study_name if i == 1 else f"{study_name}-{i}"
        # from finding the name free (or its study abandoned) to marking it this process's: one process at a time, and not
        # cut short between (a study made but not marked would be nobody's: neither taken over nor resumable)
        with storage_lock(storage):
            made = False
            try:
                with deferred_interrupts():
                    made = _make(storage, name, directions, numbered)
            except BaseException:  # a Ctrl-C held while it was made, raised once marked: the search stops before using it
                if made:  # it stayed, this process's and alive, and the same call in a notebook was refused its name
                    _delete(storage, name)
                raise
        if made:
            return name
    raise AutoqError(f"no free study name from {study_name!r} in {storage}; pass --study-name")


def _make(storage: str, name: str, directions: list[str], numbered: bool) -> bool:
    """Create the study ``name`` and mark it this process's; False where another search holds it and ``numbered``
    (a default name: the next suffix is tried), an error where the name was given."""
    try:
        study = optuna.create_study(study_name=name, storage=storage, directions=directions)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
        if not _abandoned(study):
            if numbered:
                return False
            raise AutoqError(_taken(study, name, storage)) from None
        optuna.delete_study(study_name=name, storage=storage)
        study = optuna.create_study(study_name=name, storage=storage, directions=directions)
    claim(study)
    return True


def _abandoned(study: optuna.Study) -> bool:
    """A study autoq created whose process, of this machine, was killed before it stored its settings or any trial."""
    waiting = optuna.trial.TrialState.WAITING  # its seeds, enqueued just before it was killed (nothing was evaluated)
    return SETTINGS_ATTR not in study.user_attrs and dead_here(study) and all(t.state == waiting for t in study.get_trials(deepcopy=False))


def _taken(study: optuna.Study, name: str, storage: str) -> str:
    pid = live_owner(study)
    if pid is not None and SETTINGS_ATTR not in study.user_attrs:
        return (f"a search named {name!r} is starting in {storage} ({where(pid)}); choose another name "
                "(--study-name, or study_name= in Python), or resume it once it has started (--resume NAME, resume=True)")
    if pid is not None:
        return (f"a search named {name!r} is running in {storage} ({where(pid)}); choose another name "
                "(--study-name, or study_name= in Python)")
    if SETTINGS_ATTR not in study.user_attrs and SESSION_ATTR not in study.user_attrs:  # plain Optuna's: no resume
        # (one with a session and no settings is an autoq search setting up, maybe on another machine: the message below)
        return (f"a study named {name!r} already exists in {storage}, and autoq search did not start it (it holds no autoq "
                "settings), so it cannot be resumed; choose another name (--study-name, or study_name= in Python), or free this "
                "one (optuna.delete_study)")
    return (f"a study named {name!r} already exists in {storage}; choose another name (--study-name, or study_name= in Python), "
            "or resume it (--resume NAME, resume=True)")


def is_claimed_here(study: optuna.Study) -> bool:
    """Whether ``study`` is the one this process's search runs: made for it by `new_study`, or claimed by its resume
    (`autoq.engine.resume`); the strategy takes it as it is. Only one search a name at a time gets this far (`new_study`
    refuses a name taken), so a plug-in's strategy built without ``resume=True`` still resumes."""
    return is_ours(study)
