"""autoq's notes and warnings, as a library's are: a pipeline that calls autoq can silence, route or escalate them.

- :func:`warn` issues an :class:`~autoq.errors.AutoqWarning` through :mod:`warnings` (a fallback taken, results to
  doubt): ``warnings.filterwarnings("error", category=AutoqWarning)`` makes it an error, ``"ignore"`` silences it.
  The command line prints each as ``autoq: warning: ...`` (:func:`cli_warnings`).
- :func:`note` logs at INFO to the ``autoq`` logger (what autoq did that the caller did not ask for, or may not
  expect). As Optuna's and MLflow's loggers do, it gets a handler of its own when autoq is imported, which prints
  ``autoq: note: ...`` to stderr, and does not propagate: ``logging.getLogger("autoq").setLevel(logging.WARNING)``
  silences the notes; removing that handler and setting ``propagate = True`` hands them to the caller's own logging.
  A logger the caller set up before importing autoq is left as it was; a ``logging.config.dictConfig`` (or
  ``fileConfig``) run after the import disables it, as it does Optuna's and MLflow's, unless it says
  ``"disable_existing_loggers": False`` or configures ``autoq``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import warnings
from collections.abc import Iterator

from autoq.errors import AutoqWarning

LOGGER = "autoq"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a note is logged (a redirect, a test's capture), not to the one
    there when the handler was made."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("autoq: note: %(message)s"))

    @property
    def stream(self):  # noqa: D102 - logging.StreamHandler's attribute, read at each emit
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the property always reads sys.stderr
        pass


def _set_up(log: logging.Logger) -> None:
    """Give the ``autoq`` logger its stderr handler, INFO and no propagation, once a process, as ``autoq`` is imported
    (under the import lock: no two threads add one each); a logger the caller already set up is left as it is, and
    what the caller does to it after stays done."""
    if not log.handlers and log.propagate and log.level == logging.NOTSET:
        log.addHandler(_StderrHandler())
        log.propagate = False
        log.setLevel(logging.INFO)


_set_up(logging.getLogger(LOGGER))


def logger() -> logging.Logger:
    """The ``autoq`` logger."""
    return logging.getLogger(LOGGER)


def note(message: str) -> None:
    """Tell the user something autoq did or found that needs no action (INFO on the ``autoq`` logger)."""
    logger().info(message)


def warn(message: str, stacklevel: int = 2) -> None:
    """Warn the user (an :class:`AutoqWarning`), from the caller's frame (``stacklevel`` 2) or one further up."""
    warnings.warn(message, AutoqWarning, stacklevel=stacklevel + 1)


def _show(message, category, filename, lineno, file=None, line=None, *, fallback) -> None:
    if issubclass(category, AutoqWarning):
        print(f"autoq: warning: {message}", file=sys.stderr if file is None else file, flush=True)
    else:
        fallback(message, category, filename, lineno, file, line)


@contextlib.contextmanager
def cli_warnings() -> Iterator[None]:
    """Inside, every :class:`AutoqWarning` is printed as ``autoq: warning: ...`` (each time, not once a location:
    a command runs one job); other warnings as Python shows them. Restored after, for a script that calls ``main``."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", AutoqWarning)
        fallback = warnings.showwarning
        warnings.showwarning = lambda *args, **kwargs: _show(*args, **kwargs, fallback=fallback)
        yield


@contextlib.contextmanager
def warnings_ignored(category: type[Warning], message: str = "") -> Iterator[None]:
    """Ignore ``category`` warnings (whose text starts with ``message``) inside, where doing so is safe.

    ``warnings.catch_warnings`` saves and restores the process's one filter list (before Python 3.14's context-aware
    warnings), so two such blocks overlapping in threads restore each other's snapshots: a pipeline running searches in
    a thread pool was left ignoring the category for good. Off the main thread the filters are not touched, and the
    warning shows (once a location, as Python's default filter has it).
    """
    if threading.current_thread() is not threading.main_thread() and not getattr(sys.flags, "context_aware_warnings", False):
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message, category)
        yield
