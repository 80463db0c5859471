"""Whether a search's process still runs: asked with signal 0 on POSIX, by the process's handle on Windows."""

from __future__ import annotations

import os
import subprocess
import sys

from autoq.engine.sessions import _alive_by_handle, alive


def _gone_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_live_process_is_alive_and_a_reaped_one_is_not():
    gone = _gone_pid()
    assert alive(os.getpid()) and not alive(gone)


def test_the_windows_probe_tells_a_live_process_from_a_gone_one():
    """Windows has no signal 0: os.kill(pid, 0) sends Ctrl-C to the pid's console, or raises WinError 87 for a dead
    pid, and every resume of a killed search failed with "[WinError 87] The parameter is incorrect"."""
    gone = _gone_pid()
    assert _alive_by_handle(os.getpid()) and not _alive_by_handle(gone)


def test_a_process_named_outside_ascii_is_read(tmp_path):
    """/proc/PID/stat starts with the process's name, a script's own file name when it runs by its shebang line: read as
    ASCII, ``./größe.py`` failed every search before its first trial (UnicodeDecodeError claiming its study)."""
    script = tmp_path / "größe.py"
    script.write_text(f"#!{sys.executable}\nimport os\nfrom autoq.engine.sessions import _start_time, alive\n"
                      "print(_start_time(os.getpid()) is not None, alive(os.getpid()))\n", encoding="utf-8")
    script.chmod(0o755)
    done = subprocess.run([str(script)], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["True", "True"], done.stderr[-1500:]


def test_a_session_of_this_process_stored_without_its_thread_is_not_taken_for_stopped():
    """A session an autoq stored before sessions named their thread, naming this process: this process is alive, and
    which of its threads ran it is unknown, so it is not known to be stopped (a stopped one is taken over)."""
    import socket
    from types import SimpleNamespace

    from autoq.engine.sessions import SESSION_ATTR, dead_here

    mine = SimpleNamespace(user_attrs={SESSION_ATTR: {"host": socket.gethostname(), "pid": os.getpid()}})
    assert not dead_here(mine)
    ended = SimpleNamespace(user_attrs={SESSION_ATTR: {"host": socket.gethostname(), "pid": os.getpid(), "ended": True}})
    assert dead_here(ended)
