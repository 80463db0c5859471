"""Hold Ctrl-C and SIGTERM while a store call is in flight.

A KeyboardInterrupt raised inside an SQLAlchemy write skips its rollback (it is
not an ``Exception``) and leaves the SQLite file locked, so the clean-up that
follows (marking the parent run KILLED, the frontier tags) would fail with
"database is locked". One raised inside a read makes SQLAlchemy log a traceback
("Error closing cursor") as it gives up the connection. Inside
``deferred_interrupts()`` the signal is recorded and delivered again, to the
handler that was in place, when the block ends.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Run the block without being cut short by SIGINT/SIGTERM; re-raise the first one after it."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread receives signals
        return
    received: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    for sig in _SIGNALS:
        signal.signal(sig, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received:
            signal.raise_signal(received[0])
