"""Keep a source checkout's own folders from shadowing installed packages of the same name.

Run in the checkout (``python -m pytest``, ``python -m autoq``, a snippet or notebook there), Python puts its root
first on ``sys.path``, and each top-level folder becomes importable by its bare name. ``kernels/`` (installed as
``autoq.kernels``) then stood in for Hugging Face's ``kernels`` package, which transformers 5.25 requires and imports:
every Hugging Face model failed to load with "cannot import name 'CUDAProperties' from 'kernels'". An installed autoq
has no such folders, and this does nothing there.
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
    """Move the checkout's root to the end of ``sys.path``, so that installed packages come first (autoq itself is found
    by the editable install's finder, and the user's own modules there stay importable), and forget a ``kernels``
    module already imported from the checkout (not one being imported, which imports autoq: that would fail it).
    Called when autoq is imported."""
    root = checkout_root()
    if root is None:
        return
    entries = [(entry, Path(entry or os.curdir).resolve() == root) for entry in sys.path]
    sys.path[:] = [entry for entry, ours in entries if not ours] + [entry for entry, ours in entries if ours]
    shadow = sys.modules.get("kernels")
    importing = getattr(getattr(shadow, "__spec__", None), "_initializing", False)  # `import kernels` of the folder got here
    if shadow is not None and not importing and Path(getattr(shadow, "__file__", None) or os.devnull).resolve().parent.parent == root:
        del sys.modules["kernels"]
