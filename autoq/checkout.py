"""Keep a source checkout's own folders from shadowing installed packages of the same name.

Run in the checkout (``python -m pytest``, ``python -m autoq``), Python puts its root first on ``sys.path``, and each
top-level folder becomes importable by its bare name. ``kernels/`` (installed as ``autoq.kernels``) then stood in for
Hugging Face's ``kernels`` package, which transformers 5.25 requires and imports: every Hugging Face model failed to
load with "cannot import name 'CUDAProperties' from 'kernels'". An installed autoq has no such folders.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def checkout_root() -> Path | None:
    """The root of the source checkout this autoq runs from (editable install), or ``None`` for an installed one."""
    root = Path(__file__).resolve().parent.parent
    is_checkout = (root / "pyproject.toml").is_file() and (root / "kernels" / "__init__.py").is_file()
    return root if is_checkout else None


def unshadow_installed_packages() -> None:
    """Take the checkout's root off ``sys.path`` (autoq itself is found by the editable install's finder), and forget a
    ``kernels`` module already imported from it. Nothing to do for an installed autoq."""
    root = checkout_root()
    if root is None:
        return
    sys.path[:] = [entry for entry in sys.path if Path(entry or os.curdir).resolve() != root]
    shadow = sys.modules.get("kernels")
    if shadow is not None and Path(getattr(shadow, "__file__", None) or os.devnull).resolve().parent.parent == root:
        del sys.modules["kernels"]
