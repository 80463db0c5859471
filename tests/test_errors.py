"""Error texts: a failed trial's record and a database's reason beneath its wrappers."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy.exc
from mlflow.exceptions import MlflowException

from autoq.errors import any_database_failed, database_failed, database_reason, error_text


class OperationalError(Exception):
    """A SQLAlchemy-like wrapper: PEP 249's class name, the driver's error in ``orig``."""

    def __init__(self, message: str, orig: BaseException) -> None:
        super().__init__(message)
        self.orig = orig


class DiskFull(Exception):
    """A driver's error class of its own name (psycopg's are not PEP 249's)."""


def test_an_error_without_a_message_is_recorded_by_its_type_name_alone():
    """A trial's error record is 'Type: message', and the type's name alone, with no dangling colon, without one."""
    assert error_text(ValueError("bad")) == "ValueError: bad"
    assert error_text(ValueError()) == "ValueError"


def test_the_database_reason_names_the_wrappers_class_and_the_drivers_first_line():
    """The reason is the wrapper's (PEP 249) class name and the first line of the driver's words, whatever its class."""
    assert database_reason(OperationalError("advice", DiskFull("could not extend file\nHINT: ..."))) == \
        "OperationalError: could not extend file"


def test_a_driver_error_without_words_gives_the_first_line_of_the_message_instead():
    """An ``orig`` with an empty message is no reason: the first line of the error's own message is."""
    assert database_reason(OperationalError("first line\nsecond", DiskFull(""))) == "first line"


@pytest.mark.parametrize("error, reason", [(RuntimeError(), "RuntimeError"), (RuntimeError("  \n"), "RuntimeError")])
def test_an_error_without_text_gives_its_type_name_as_the_reason(error: BaseException, reason: str):
    """A database error with no text is named by its type, not an empty reason."""
    assert database_reason(error) == reason


def test_the_drivers_words_are_found_along_an_implicit_context():
    """A wrapper raised while handling SQLAlchemy's error (``__context__``, no ``raise from``) still leads to the driver."""
    try:
        try:
            raise OperationalError("advice", DiskFull("database or disk is full"))
        except OperationalError:
            raise RuntimeError("An exception is raised during the commit")  # noqa: B904 - the implicit chain is the case
    except RuntimeError as exc:
        assert database_reason(exc) == "OperationalError: database or disk is full"


def test_the_reason_of_a_chain_that_loops_back_is_found():
    """Each link of the chain is read once: one that loops back (a context set by hand) ends with the first line."""
    a, b = RuntimeError("outer\nmore"), RuntimeError("inner")
    a.__context__, b.__context__ = b, a
    found: list[str] = []
    worker = threading.Thread(target=lambda: found.append(database_reason(a)), daemon=True)  # a loop without end fails the join
    worker.start()
    worker.join(10)
    assert found == ["outer"]


def test_a_sqlalchemy_warning_is_no_database_failure():
    """SQLAlchemy's warnings (raised under ``-W error``: a deprecation) are not a store's failure; its errors are."""
    assert not database_failed(sqlalchemy.exc.SAWarning("deprecated"))
    assert not any_database_failed(sqlalchemy.exc.SAWarning("deprecated"))
    assert database_failed(sqlalchemy.exc.OperationalError("INSERT", {}, Exception("disk full")))


def test_an_mlflow_error_raised_from_a_database_error_is_a_database_failure():
    """MLflow's SQL store raises its MlflowException from SQLAlchemy's error: the database failed; one of its own, not."""
    try:
        try:
            raise sqlalchemy.exc.OperationalError("INSERT", {}, Exception("attempt to write a readonly database"))
        except sqlalchemy.exc.OperationalError as exc:
            raise MlflowException("write failed") from exc
    except MlflowException as wrapped:
        assert any_database_failed(wrapped) and not database_failed(wrapped)
    assert not any_database_failed(MlflowException("no such experiment"))
