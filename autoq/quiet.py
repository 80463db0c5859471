"""Quieter third-party logging for the length of one call, restored afterwards.

autoq runs inside users' own Optuna studies and pipelines, so it never changes
their logging for good: Optuna's per-trial INFO lines, MLflow's schema-migration
notes, the links MLflow prints for every run it ends on a tracking server and
transformers' progress bars are silenced only while autoq works, Optuna's and
MLflow's lines only in the threads autoq works in. A level someone changed
meanwhile is left as they set it.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_SUPPRESS_LINKS = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"


class _Shared:
    """A change to the process's own state (its logging levels) that overlapping calls in threads share: the
    first one in makes it (``start``: the calls that undo it, ``None`` where it cannot be made), the last one out undoes
    it. Each call undoing its own let the first of two overlapping searches (an outer study's ``n_jobs=2``) restore
    Optuna's INFO while the second still ran (its "A new study created" line showed)."""

    def __init__(self, start: Callable[[], list[Callable[[], None]] | None]) -> None:
        self._start = start
        self._lock = threading.Lock()
        self._users = 0
        self._undo: list[Callable[[], None]] = []  # what the last one out undoes

    def enter(self) -> bool:
        """Make the change (or count one more user of it); ``False``: it cannot be made, and there is nothing to undo."""
        with self._lock:
            if self._users == 0:
                undo = self._start()
                if undo is None:
                    return False
                self._undo = undo
            self._users += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                for undo in self._undo:
                    undo()
                self._undo = []


@contextmanager
def _held(shared: _Shared) -> Iterator[None]:
    """``shared``'s change for the block, where it can be made."""
    if not shared.enter():
        yield
        return
    try:
        yield
    finally:
        shared.leave()


class _QuietThreads:
    """The threads inside `quiet_logs`, whose records below WARNING of a quieted library `_LibraryFilter` drops. Not
    the libraries' levels: set to WARNING for the process, they silenced an outer study's own "Trial N finished" lines
    in its other threads (``n_jobs=2``) while a search ran in one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: dict[int, int] = {}  # thread ident: its blocks in quiet_logs

    def made_inside(self, record: logging.LogRecord) -> bool:
        thread = threading.get_ident() if record.thread is None else record.thread  # None: logging.logThreads = False
        return thread in self._threads

    @contextmanager
    def held(self) -> Iterator[None]:
        """This thread's records dropped for the block."""
        ident = threading.get_ident()
        with self._lock:
            self._threads[ident] = self._threads.get(ident, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._threads[ident] -= 1
                if not self._threads[ident]:
                    del self._threads[ident]


_THREADS = _QuietThreads()


_MLFLOW_DB_ERRORS = "mlflow.store.db.utils"  # the logger of MLflow's "SQLAlchemy database error" records


class _LibraryFilter(logging.Filter):
    """Drops ``library``'s INFO and DEBUG records that threads inside `quiet_logs` make: per trial (Optuna), per store
    (MLflow); and MLflow's record of a failed database request, which the search reports itself."""

    def __init__(self, library: str) -> None:
        super().__init__()
        self.library = library

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] != self.library or not _THREADS.made_inside(record):
            return True
        # MLflow logs each failed database request at ERROR, with its traceback (85 lines on a full disk), then raises
        # it: the search says that failure itself, naming the store, the trials kept and the command that resumes
        return record.levelno >= logging.WARNING and not (record.name == _MLFLOW_DB_ERRORS and record.levelno == logging.ERROR)


def _quiet(library: str) -> list[Callable[[], None]] | None:
    """``library``'s records below WARNING from the quieted threads dropped, where it is loaded (and MLflow's run links
    off); the calls that undo it. ``None`` where it is not loaded: it is not imported to be quieted (a sensitivity
    table, a search without tracking and the load of an export use neither Optuna nor MLflow, and importing MLflow cost
    a second and took over the host's ``sqlalchemy.engine`` logger, its level, handlers and propagation, for good). A
    spell of its own, as transformers' is: a caller that will use one imports it first (`autoq.engine.runner.run_search`),
    and a block that overlaps one begun before the import quiets it."""
    if library not in sys.modules:
        return None
    undo: list[Callable[[], None]] = []
    # the filter goes on the library's handlers, on any a user gave its child loggers, and on the root's (propagation)
    loggers = [logging.getLogger(), *(logger for name, logger in list(logging.Logger.manager.loggerDict.items())
                                      if isinstance(logger, logging.Logger) and name.split(".", 1)[0] == library)]
    handlers = list({id(h): h for logger in loggers for h in logger.handlers}.values())
    dropped = _LibraryFilter(library)
    for handler in handlers:
        handler.addFilter(dropped)

    def filters_off() -> None:
        for handler in handlers:
            handler.removeFilter(dropped)
    undo.append(filters_off)
    # MLflow writes '🏃 View run ... at: URL' and 'View experiment at' to stdout whenever a run on a tracking server ends
    # (one more request each): two lines a trial, 800 for 400 trials, through the progress bar; autoq's summary links the search
    if library == "mlflow" and _SUPPRESS_LINKS not in os.environ:
        os.environ[_SUPPRESS_LINKS] = "true"

        def links_back() -> None:
            if os.environ.get(_SUPPRESS_LINKS) == "true":
                del os.environ[_SUPPRESS_LINKS]
        undo.append(links_back)
    return undo


def _quiet_transformers() -> list[Callable[[], None]] | None:
    """transformers' logging at ERROR without its bars, where transformers is loaded (``None`` else: a model of none,
    the digits CNN or a user's own, left nothing of it to quiet, and importing it to do so cost a search about a
    second). A spell of its own: a block that began before transformers was imported (a digits search in one thread)
    does not hold the quiet spell a Hugging Face load in another thread then starts."""
    hf = _transformers_logging()
    if hf is None:
        return None
    verbosity, bars = hf.get_verbosity(), hf.is_progress_bar_enabled()
    hf.set_verbosity_error()
    hf.disable_progress_bar()

    def hf_back() -> None:
        if hf.get_verbosity() == hf.ERROR:
            hf.set_verbosity(verbosity)
        if bars and not hf.is_progress_bar_enabled():
            hf.enable_progress_bar()
    return [hf_back]


_OPTUNA = _Shared(functools.partial(_quiet, "optuna"))
_MLFLOW = _Shared(functools.partial(_quiet, "mlflow"))  # and its run links
_HF = _Shared(_quiet_transformers)


@contextmanager
def quiet_logs() -> Iterator[None]:
    """Optuna's and MLflow's records below WARNING from this thread dropped, transformers' logging at ERROR without its
    bars, and MLflow's run links off, for the block, each where it is loaded; overlapping blocks (threads) share one
    quiet spell of each (`_Shared`)."""
    with _THREADS.held(), _held(_OPTUNA), _held(_MLFLOW), _held(_HF):
        yield


def _transformers_logging():
    """transformers' logging module where transformers is loaded, else ``None``."""
    if "transformers" not in sys.modules:
        return None
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return None
    return hf_logging
