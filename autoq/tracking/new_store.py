"""A new SQLite MLflow store, built whole or not at all.

MLflow builds a store's tables by migrations, seconds in all, into the file the URI names. A ``kill -9`` among them
(a Ctrl-C or SIGTERM is deferred; a kill cannot be) left a half-built file that every later search refused to open
("table datasets already exists"). The tables are built in a hidden file beside it and linked into place once
complete; the caller holds the folder's lock, so a leftover of a killed build is removed first.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

BUILDING = ".{name}.building-"  # the prefix of a store being built beside ``name`` (and of its SQLite journal)


def build_store(db: Path) -> None:
    """Make the SQLite store ``db`` (absent) with MLflow's tables, all of them or none; under ``folder_lock(db.parent)``."""
    from mlflow.tracking import MlflowClient

    from autoq.quiet import quiet_logs

    prefix = BUILDING.format(name=db.name)
    for stale in db.parent.glob(f"{prefix}*"):  # a build killed before this one: none other runs under the lock
        with contextlib.suppress(OSError):
            stale.unlink()
    # a name of its own each time: MLflow caches a store per URI, and a second build in this process (the store deleted
    # since) was answered by the first one's cached engine, writing no file
    building = db.parent / f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with quiet_logs():  # not MLflow's "Updating database tables" INFO lines
            MlflowClient(tracking_uri=f"sqlite:///{building}").search_experiments(max_results=1)  # the store, its tables made
        _close_engine(f"sqlite:///{building}")
        try:
            os.link(building, db)  # never over a store another program made meanwhile (it took no lock of ours)
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links: a rename, as long as nothing is there yet
            if not db.exists():
                os.replace(building, db)
    finally:
        with contextlib.suppress(OSError):
            building.unlink()


def _close_engine(uri: str) -> None:
    """Close the engine MLflow keeps for a build's own ``uri``, which nothing uses again: MLflow caches one per URI for
    the life of the process (``SqlAlchemyStore._engine_map``, never emptied), and each store built held two descriptors
    on its file (the store's, through the hard link) for good: a service making a store per job ran out of them, and a
    deleted job folder's database kept its disk space. An MLflow without that cache has none to close."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    engines, lock = getattr(SqlAlchemyStore, "_engine_map", None), getattr(SqlAlchemyStore, "_engine_map_lock", None)
    if not isinstance(engines, dict) or lock is None:
        return
    with lock:
        engine = engines.pop(uri, None)
    if engine is not None:
        engine.dispose()
