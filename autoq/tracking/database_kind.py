"""Which tool's SQLite database a file is: MLflow's store and Optuna's storage sit side by side (``mlflow.db``,
``optuna.db``), and passing one for the other made the tool migrate its tables into it (both keep an
``alembic_version`` table) and fail with a traceback, the user's database changed. Read-only, before either opens it."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from autoq.errors import AutoqError

_OWN = {"mlflow": "experiments", "optuna": "studies"}  # a table each tool's schema has and the other's has not


def database_tables(db: Path) -> set[str]:
    """The tables of the SQLite file ``db`` (empty for one SQLite cannot read as a database), opened read-only."""
    try:
        with contextlib.closing(sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True)) as conn:
            return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error:
        return set()


def check_database_kind(db: Path | None, uri: str, kind: str) -> None:
    """Refuse an existing SQLite file ``db`` (of ``uri``) that holds the other tool's tables, where ``kind`` ('mlflow'
    or 'optuna') is wanted, naming the database to pass instead."""
    if db is None or not db.is_file():
        return
    other = "optuna" if kind == "mlflow" else "mlflow"
    if _OWN[other] not in database_tables(db):
        return
    if kind == "mlflow":
        raise AutoqError(f"{uri} is an Optuna database (a search's trials), not an MLflow store; pass the MLflow database "
                         "beside it (--tracking-uri sqlite:///.../mlflow.db)")
    raise AutoqError(f"Optuna storage {uri} is an MLflow store, not an Optuna database; pass the Optuna database beside it "
                     "(--storage sqlite:///.../optuna.db), or leave --storage out for that one")
