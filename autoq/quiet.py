"""Quieter third-party logging for the length of one call, restored afterwards.

autoq runs inside users' own Optuna studies and pipelines, so it never changes
their logging for good: Optuna's per-trial INFO lines, MLflow's schema-migration
notes, the links MLflow prints for every run it ends on a tracking server and
transformers' progress bars are silenced only while autoq works. A level someone
changed meanwhile is left as they set it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_SUPPRESS_LINKS = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"


@contextmanager
def quiet_logs() -> Iterator[None]:
    """Each library that is installed: loading an exported model needs neither MLflow nor Optuna."""
    optuna = _optional("optuna")
    mlflow_logger = logging.getLogger("mlflow") if _optional("mlflow") else None  # it configures its loggers on import
    optuna_level = optuna.logging.get_verbosity() if optuna else None
    mlflow_level = mlflow_logger.level if mlflow_logger else None
    hf = _transformers_logging()
    hf_state = (hf.get_verbosity(), hf.is_progress_bar_enabled()) if hf else None
    if optuna:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    if mlflow_logger:
        mlflow_logger.setLevel(logging.WARNING)
    if hf:
        hf.set_verbosity_error()
        hf.disable_progress_bar()
    # MLflow writes '🏃 View run ... at: URL' and 'View experiment at' to stdout whenever a run on a tracking server ends
    # (one more request each): two lines a trial, 800 for 400 trials, through the progress bar; autoq's summary links the search
    links = _SUPPRESS_LINKS not in os.environ
    if links:
        os.environ[_SUPPRESS_LINKS] = "true"
    try:
        yield
    finally:  # each level only where it is still the one set here: two searches in threads (an outer study's n_jobs=2)
        # overlap, and the second saved the first's quiet level; restoring it after the first restored would keep it
        if links and os.environ.get(_SUPPRESS_LINKS) == "true":
            del os.environ[_SUPPRESS_LINKS]
        if optuna and optuna.logging.get_verbosity() == optuna.logging.WARNING:
            optuna.logging.set_verbosity(optuna_level)
        if mlflow_logger and mlflow_logger.level == logging.WARNING:
            mlflow_logger.setLevel(mlflow_level)
        if hf and hf_state:
            if hf.get_verbosity() == hf.ERROR:
                hf.set_verbosity(hf_state[0])
            if hf_state[1] and not hf.is_progress_bar_enabled():
                hf.enable_progress_bar()


def _optional(name: str):  # type: ignore[no-untyped-def]
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _transformers_logging():
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return None
    return hf_logging


class _Fd1Silencer:
    """The one redirection of file descriptor 1 that threads share: the first call in makes it, the last one out undoes
    it. Each call saving and restoring fd 1 itself left it on /dev/null for good when two overlapped (two searches in
    threads, an outer study's ``n_jobs=2``): the second saved the first's /dev/null and restored it last. fd 1 is the
    process's own, so this is too."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved: int | None = None

    def enter(self) -> bool:
        """Silence fd 1 (or count one more user of the silence); ``False``: no usable fd 1, nothing to undo."""
        with self._lock:
            if self._users == 0:
                try:
                    sys.stdout.flush()
                    saved = os.dup(1)
                except (OSError, ValueError):  # no usable descriptor 1 (some embedded interpreters): nothing to silence
                    return False
                devnull = os.open(os.devnull, os.O_WRONLY)
                try:
                    os.dup2(devnull, 1)
                finally:
                    os.close(devnull)
                self._saved = saved
            self._users += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._saved is not None:
                os.dup2(self._saved, 1)
                os.close(self._saved)
                self._saved = None


_FD1 = _Fd1Silencer()


@contextmanager
def native_stdout_silenced() -> Iterator[None]:
    """Send what native code writes to file descriptor 1 to /dev/null for the call (threads share it: `_Fd1Silencer`).

    HiGHS (scipy's ``milp``) prints a debug line, ``HighsMipSolverData::transformNewIntegerFeasibleSolution
    tmpSolver.run();``, straight from C++ whatever its display options (ERGO-Code/HiGHS#2783); on a large
    ILP it fills the terminal around the progress bar. Python's own ``sys.stdout`` is flushed first and
    is untouched.
    """
    if not _FD1.enter():
        yield
        return
    try:
        yield
    finally:
        _FD1.leave()
