"""Triton's interpreter for the `QuantLinear` kernel-path test: set before any kernel module is imported."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
