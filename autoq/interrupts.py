"""Hold Ctrl-C and SIGTERM while a store call is in flight.

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

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class ForcedInterrupt(KeyboardInterrupt):
    """A second Ctrl-C or SIGTERM while a store write was held: the write was cut, so its store may be left mid-write
    (a SQLite file locked): whoever catches it skips further writes to that store."""


@contextmanager
def deferred_interrupts(forceable: bool = False, pressed: int = 0) -> Iterator[None]:
    """Run the block without being cut short by SIGINT/SIGTERM; re-raise the first one after it. ``forceable``: a second
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
