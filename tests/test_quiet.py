"""Silencing native writes to stdout (HiGHS' debug line) without losing Python's own output."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import os
from autoq.quiet import native_stdout_silenced
print("before", flush=False)
with native_stdout_silenced():
    os.write(1, b"native noise\\n")
print("after")
"""


def test_native_stdout_is_silenced_and_restored():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["before", "after"]  # the buffered line written before, nothing from inside
