"""Hold Ctrl-C, SIGTERM and SIGHUP while a store call is in flight; make SIGTERM and SIGHUP stop a search as Ctrl-C does.

A KeyboardInterrupt raised inside an SQLAlchemy write skips its rollback (it is
not an ``Exception``) and leaves the SQLite file locked, so the clean-up that
follows (marking the parent run KILLED, the frontier tags) would fail with
"database is locked". One raised inside a read makes SQLAlchemy log a traceback
("Error closing cursor") as it gives up the connection. Inside
``deferred_interrupts()`` the signal is recorded and delivered again, to the
handler that was in place, when the block ends. In a ``forceable`` block (a write
to a tracking server, which a local file cannot be left locked by) a second signal
raises `ForcedInterrupt` at once: a server that went away takes MLflow's retries,
minutes, and a user who presses Ctrl-C again means it. Never for local SQLite
writes: a store cut mid-migration stays broken for good.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from autoq.errors import Terminated

# what stops a process the way Ctrl-C does: a scheduler's SIGTERM, a closed terminal's SIGHUP (not on Windows)
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
_SIGNALS = (signal.SIGINT, *STOP_SIGNALS)


def raise_terminated(signum: int, frame: object) -> None:
    """A signal handler: the stop signal ``signum`` as `Terminated`, which a search takes as it takes Ctrl-C."""
    raise Terminated(signum)


@contextmanager
def stops_as_interrupts(replace: bool = False) -> Iterator[None]:
    """Within the block (in the main thread), SIGTERM and SIGHUP raise `Terminated`: the search marks its run and trials
    stopped, stores its time and says how to resume, as on Ctrl-C. Without this, a Slurm job's or ``timeout``'s SIGTERM
    to a script calling ``autoq.search``, or the SIGHUP of its closed terminal, killed it as ``kill -9`` does: its run
    and a trial left RUNNING, the resume command never said. Only signals left at their default action are taken
    (``replace``: any but an ignored one, as the command line does): a caller's own handler, and ``nohup``'s ignored
    SIGHUP, stay as they are. The handlers found are put back after."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread receives signals, and only it may set their handlers
        return
    previous = {}
    for sig in STOP_SIGNALS:
        found = signal.getsignal(sig)
        if found is signal.SIG_DFL or (replace and found is not signal.SIG_IGN):
            previous[sig] = signal.signal(sig, raise_terminated)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:  # None: a handler Python did not install, which it cannot put back
                signal.signal(sig, handler)


class ForcedInterrupt(KeyboardInterrupt):
    """A second Ctrl-C, SIGTERM or SIGHUP while a store write was held: the write was cut, so its store may be left mid-write
    (a SQLite file locked): whoever catches it skips further writes to that store."""


@contextmanager
def deferred_interrupts(forceable: bool = False, pressed: int = 0) -> Iterator[None]:
    """Run the block without being cut short by SIGINT/SIGTERM/SIGHUP; re-raise the first one after it. ``forceable``: a second
    signal raises `ForcedInterrupt`; ``pressed``: signals already received (a search stopping on Ctrl-C: the next one
    forces its last writes)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread receives signals
        return
    received: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in _SIGNALS}

    def hold(signum: int, frame: object) -> None:
        received.append(signum)
        if forceable and len(received) + pressed > 1:
            raise ForcedInterrupt(f"signal {signum} again during a store write: stopped without waiting for it")

    for sig in _SIGNALS:
        signal.signal(sig, hold)
    forced = False
    try:
        yield
    except ForcedInterrupt:
        forced = True
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received and not forced:
            signal.raise_signal(received[0])
