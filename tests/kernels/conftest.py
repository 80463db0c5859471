"""Kernel tests run real Triton kernels on the CPU through Triton's interpreter.

``TRITON_INTERPRET`` must be set before any Triton kernel module is imported (``triton.jit``
reads it when a kernel is defined); the kernel modules are imported lazily, so setting it
here, at collection, is early enough. On a GPU machine, run with ``TRITON_INTERPRET=0`` to
test the compiled kernels on CUDA instead.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
