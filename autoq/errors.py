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
    """SIGTERM (a scheduler's stop) or SIGHUP (the terminal closed), raised where Ctrl-C would be: it stops a search as
    cleanly, and the command line exits with 128 + ``signum`` (143, 129) instead of Ctrl-C's 130, as shells and
    schedulers expect."""

    def __init__(self, signum: int = 15) -> None:
        super().__init__(signum)
        self.signum = int(signum)


def error_text(exc: BaseException) -> str:
    """``'ValueError: message'`` for a failed trial's record, whatever the exception: one whose ``__str__`` raises (a
    user's evaluate may raise anything) stopped the whole search with a traceback from inside autoq."""
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - the failure being recorded matters, not why its text cannot be made
        message = "(its message could not be read: its __str__ raised)"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def database_reason(exc: BaseException) -> str:
    """What a database error says went wrong beneath its wrappers: the driver's own error (sqlite3's ``database or
    disk is full``), found as SQLAlchemy's ``orig`` along the exception's causes, else the first line of its message.
    The first line alone was SQLAlchemy's "raised as a result of Query-invoked autoflush" advice, or Optuna's "an
    exception is raised during the commit", with the cause a line further down or in a chained exception."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        orig = getattr(link, "orig", None)
        if isinstance(orig, BaseException) and str(orig).strip():
            return f"{type(link).__name__}: {str(orig).strip().splitlines()[0]}"  # SQLAlchemy's name: PEP 249's, any driver
        link = link.__cause__ or link.__context__
    text = str(getattr(exc, "message", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def database_failed(exc: BaseException) -> bool:
    """Whether ``exc`` is a database's failure: SQLAlchemy's own error, or Optuna's for a storage's failed commit (which
    wraps it, and was a traceback of 85 lines for a disk that filled); not a warning (``-W error``: a deprecation)."""
    import optuna

    ours = type(exc).__module__.startswith("sqlalchemy.") or isinstance(exc, optuna.exceptions.StorageInternalError)
    return ours and not isinstance(exc, Warning)


def any_database_failed(exc: BaseException) -> bool:
    """:func:`database_failed`, or an error raised from one: MLflow's SQL store wraps each SQLAlchemy error in its own
    ``MlflowException`` (a read-only store, written by ``autoq export --log-to-run``, was a traceback of 199 lines)."""
    return database_failed(exc) or (exc.__cause__ is not None and database_failed(exc.__cause__))
