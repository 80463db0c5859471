"""Which process runs a stored search, and one step at a time for the processes that would start or resume it.

A study's ``autoq.session`` attribute names the host and process of the session running it now, or last. A live
process on this machine is told from a dead one by its pid; on another host that cannot be told, and it is assumed
not to run. Checking the attribute and then writing one's own are two store calls: `storage_lock` makes them one
step for the processes of this machine (two resumes started together both ran the search, 2026-12-02).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna

from autoq.files import folder_lock
from autoq.tracking import sqlite_path

SESSION_ATTR = "autoq.session"  # study user attribute: the host and process of the session running it now, or last


def this_session() -> dict[str, Any]:
    """This process, as ``autoq.session`` stores it: host, pid and (where /proc tells it) the pid's start time, so that
    another process given the same pid later is not taken for this one; and the thread, so that a search another thread
    of this process runs is told from this thread's (two threads resuming one study both ran it)."""
    started = _start_time(os.getpid())
    return {"host": socket.gethostname(), "pid": os.getpid(), **({"started": started} if started else {}),
            "thread": threading.get_ident()}


def where(pid: int) -> str:
    """Where the search ``pid`` runs, in words: another process of this machine, or another thread of this one."""
    return "another thread of this process" if pid == os.getpid() else f"process {pid} on this machine"


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks since boot (/proc/PID/stat, field 22); ``None`` without /proc."""
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()[19].decode()  # after the name, any bytes
    except (OSError, IndexError):
        return None


def claim(study: optuna.Study) -> None:
    """Mark ``study`` as run by this process."""
    study.set_user_attr(SESSION_ATTR, this_session())


def release(study: optuna.Study) -> None:
    """Mark ``study``'s session as ended: the process may live on (a notebook, a pipeline) without running it, and a
    search that process finished was then reported as still running and refused to resume."""
    study.set_user_attr(SESSION_ATTR, {**this_session(), "ended": True})


def is_ours(study: optuna.Study) -> bool:
    """Whether this process is the session ``study`` names."""
    return study.user_attrs.get(SESSION_ATTR) == this_session()


def live_owner(study: optuna.Study) -> int | None:
    """The pid of another live process on this machine that runs ``study``; ``None`` where none does, or where the
    session was on another host (not known)."""
    state, pid = _local_state(study)
    return pid if state == "running" else None


def dead_here(study: optuna.Study) -> bool:
    """Whether the session ``study`` names was a process of this machine that is gone (killed), or that ended it: known
    to be stopped."""
    return _local_state(study)[0] == "stopped"


def _local_state(study: optuna.Study) -> tuple[str, int | None]:
    """What ``study``'s session says of another process of this machine, or another thread of this one: ``("running",
    pid)``, ``("stopped", None)`` (ended, or its process or thread gone), or ``("unknown", None)`` (no session, another
    host, or this thread)."""
    session = study.user_attrs.get(SESSION_ATTR)
    if not isinstance(session, dict) or session.get("host") != socket.gethostname():
        return "unknown", None
    if session.get("ended"):
        return "stopped", None
    pid = session.get("pid")
    if not isinstance(pid, int):
        return "unknown", None
    if pid == os.getpid():  # this thread's own session (or one stored before threads were), or another thread's
        thread = session.get("thread")
        if thread is None or thread == threading.get_ident():
            return "unknown", None
        return ("running", pid) if thread in {t.ident for t in threading.enumerate()} else ("stopped", None)
    return ("running", pid) if alive(pid, session.get("started")) else ("stopped", None)


def alive(pid: int, started: str | None = None) -> bool:
    """Whether process ``pid`` runs (a zombie, killed and not yet reaped by its parent, does not); with ``started``, the
    one that started then (a later process given the pid is another)."""
    if started is not None and _start_time(pid) not in (None, started):
        return False
    if os.name == "nt":  # os.kill(pid, 0) there sends Ctrl-C to pid's console, or raises WinError 87 for a dead pid
        return _alive_by_handle(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()  # the process's name first: any bytes (a script's file name)
    except OSError:
        return True  # no /proc (macOS): alive, as far as can be told
    return stat.rpartition(b")")[2].split()[0] != b"Z"


@contextlib.contextmanager
def storage_lock(storage: str | None) -> Iterator[None]:
    """One process of this machine at a time in the block, for a SQLite storage (the lock of its folder); other
    storages, shared by hosts that a lock here cannot reach, run the block as it is. The block must not open an
    MLflow store in the same folder (its opening takes that lock too)."""
    db = sqlite_path(storage) if storage else None
    with folder_lock(db.parent) if db is not None else contextlib.nullcontext():
        yield


def running_pid(storage: str | None, study_name: str | None) -> int | None:
    """The pid of a live process on this machine that runs the stored search ``study_name``, else ``None`` (also where
    its storage or study cannot be read: a store that is gone is not made, as opening it would)."""
    state, pid = _stored_state(storage, study_name)
    return pid if state == "running" else None


def stopped_here(storage: str | None, study_name: str | None) -> bool:
    """Whether the stored search ``study_name`` is known to run no more: its process of this machine is gone (killed,
    or its session ended). Its MLflow run may still say RUNNING (``kill -9``, a tracking server gone at its end)."""
    return _stored_state(storage, study_name)[0] == "stopped"


def _stored_state(storage: str | None, study_name: str | None) -> tuple[str, int | None]:
    """``_local_state`` of the stored study; ``("unknown", None)`` where its storage or study cannot be read."""
    if not storage or not study_name:
        return "unknown", None
    db = sqlite_path(storage)
    if db is not None and not db.is_file():
        return "unknown", None
    try:
        return _local_state(optuna.load_study(study_name=study_name, storage=storage))
    except Exception:  # noqa: BLE001 - no such study, a server that does not answer: not known
        return "unknown", None


def _alive_by_handle(pid: int) -> bool:
    """Whether process ``pid`` runs, asked without a signal (Windows has none to probe with): psutil opens the process
    and reads whether it has exited (required on Windows only; elsewhere `alive` asks with signal 0)."""
    import psutil

    return psutil.pid_exists(pid)
