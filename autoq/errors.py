"""User-facing errors.

Anything a user can fix (a bad budget, an unknown layer, NaN in data) raises
:class:`AutoqError`; the CLI prints its message on one line and exits with status 2.
"""

from __future__ import annotations


class AutoqError(ValueError):
    """A problem with the user's input, explained in the message."""


class AutoqWarning(UserWarning):
    """Something a user should know that does not stop the work (a fallback taken, results to doubt), issued through
    :mod:`warnings` so that a pipeline can filter, record or escalate it; ``autoq`` prints it as ``autoq: warning: ...``."""


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a search; the message says what was kept and how to continue it."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's stop), raised where Ctrl-C would be: it stops a search as cleanly, and the command line
    exits with 143 (128 + 15) instead of Ctrl-C's 130, as shells and schedulers expect."""


def error_text(exc: BaseException) -> str:
    """``'ValueError: message'`` for a failed trial's record, whatever the exception: one whose ``__str__`` raises (a
    user's evaluate may raise anything) stopped the whole search with a traceback from inside autoq."""
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - the failure being recorded matters, not why its text cannot be made
        message = "(its message could not be read: its __str__ raised)"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
