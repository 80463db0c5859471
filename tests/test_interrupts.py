"""``deferred_interrupts``: a signal inside the block is held, then delivered when the block ends. ``stops_as_interrupts``:
SIGTERM and SIGHUP raise `Terminated` where they would kill the process."""

from __future__ import annotations

import os
import signal

import pytest

from autoq.errors import Terminated
from autoq.interrupts import deferred_interrupts, stops_as_interrupts


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_inside_the_block_is_delivered_after_it(sig: int) -> None:
    seen: list[str] = []
    previous = signal.signal(sig, lambda signum, frame: seen.append("handler"))
    try:
        with deferred_interrupts():
            os.kill(os.getpid(), sig)
            seen.append("block finished")
        assert seen == ["block finished", "handler"]
        assert signal.getsignal(sig) is not None and seen.count("handler") == 1
    finally:
        signal.signal(sig, previous)


def test_ctrl_c_inside_the_block_raises_keyboardinterrupt_after_it() -> None:
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # other libraries (Ray Tune) install their own
    finished = False
    try:
        with pytest.raises(KeyboardInterrupt):
            with deferred_interrupts():
                os.kill(os.getpid(), signal.SIGINT)
                finished = True
        assert finished
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_no_signal_means_no_side_effect() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with deferred_interrupts():
        pass
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_second_signal_inside_the_block_stops_it_at_once() -> None:
    """A write to a tracking server that went away takes MLflow's retries (minutes): Ctrl-C again stops there."""
    from autoq.interrupts import ForcedInterrupt

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    reached: list[str] = []
    try:
        with pytest.raises(ForcedInterrupt):
            with deferred_interrupts(forceable=True):
                os.kill(os.getpid(), signal.SIGINT)
                reached.append("after the first")
                os.kill(os.getpid(), signal.SIGINT)
                reached.append("after the second")
        assert reached == ["after the first"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored, and not raised a third time
    finally:
        signal.signal(signal.SIGINT, previous)


def test_only_a_forceable_block_is_forced_and_a_stopping_search_forces_on_the_next_signal() -> None:
    """A local SQLite write (a store's first migrations) is never cut: cut there, the store stayed broken for good. A search
    stopping on Ctrl-C counts it: the next press forces its last writes (it was held for the whole write)."""
    from autoq.interrupts import ForcedInterrupt

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    reached: list[str] = []
    try:
        with pytest.raises(KeyboardInterrupt) as info:
            with deferred_interrupts():
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
                reached.append("held both")
        assert not isinstance(info.value, ForcedInterrupt) and reached == ["held both"]
        with pytest.raises(ForcedInterrupt):
            with deferred_interrupts(forceable=True, pressed=1):
                os.kill(os.getpid(), signal.SIGINT)
                reached.append("not reached")
        assert reached == ["held both"]
    finally:
        signal.signal(signal.SIGINT, previous)


def test_stop_signals_at_their_default_raise_terminated_and_a_callers_own_or_ignored_ones_stay() -> None:
    """A script's SIGTERM and SIGHUP killed it mid-search (their default action); one with its own handler keeps it,
    and nohup's ignored SIGHUP stays ignored. The handlers found are back after the block."""

    def own(signum, frame):
        seen.append(signum)

    seen: list[int] = []
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        for sig, status in ((signal.SIGTERM, 15), (signal.SIGHUP, 1)):
            with pytest.raises(Terminated) as stopped, stops_as_interrupts():
                os.kill(os.getpid(), sig)
            assert stopped.value.signum == status and signal.getsignal(sig) is signal.SIG_DFL
        signal.signal(signal.SIGTERM, own)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        with stops_as_interrupts():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGHUP)
        assert seen == [signal.SIGTERM] and signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        with pytest.raises(Terminated), stops_as_interrupts(replace=True):  # the command line's: its own is taken too
            os.kill(os.getpid(), signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) is own
        with stops_as_interrupts(replace=True):  # but not an ignored one: 'nohup autoq search' goes on when its terminal closes
            os.kill(os.getpid(), signal.SIGHUP)
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_of_two_signals_held_in_a_block_the_first_is_delivered_after_it() -> None:
    """A SIGTERM then a Ctrl-C inside a block that cannot be forced: the first (the scheduler's stop) is what the block
    delivers when it ends, to the handler that was in place."""
    seen: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: seen.append(signum)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with deferred_interrupts():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
        assert seen == [signal.SIGTERM]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_both_blocks_run_in_a_worker_thread_without_touching_signals() -> None:
    """Only the main thread may set signal handlers: in a worker thread (an outer study's n_jobs=2) both blocks just run
    their body (setting a handler there would raise ValueError)."""
    import threading

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    ran: list[str] = []

    def work() -> None:
        with stops_as_interrupts(replace=True):
            ran.append("stops")
        with deferred_interrupts(forceable=True):
            ran.append("deferred")

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    assert ran == ["stops", "deferred"]
    assert {sig: signal.getsignal(sig) for sig in before} == before
