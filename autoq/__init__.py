"""autoq: automated mixed-precision quantization search for PyTorch.

``search`` and ``SearchConfig`` load the search engine (Optuna, Ray) on first use, so
``import autoq`` and the kernels work on a machine that has only torch and Triton.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autoq.budget import Budget, parse_budget
from autoq.checkout import unshadow_installed_packages
from autoq.choice import Assignment, LayerChoice
from autoq.engine.result import Point, SearchResult
from autoq.errors import AutoqError, AutoqWarning, SearchInterrupted
from autoq.export import export, load
from autoq.messages import logger as _logger  # noqa: F401  (sets the 'autoq' logger up: autoq.messages)
from autoq.quant import QuantSpec

# run in a source checkout, its kernels/ folder stood in for Hugging Face's kernels package, which transformers imports
# (none of the imports above imports transformers: it comes with the first model loaded)
unshadow_installed_packages()

if TYPE_CHECKING:
    from autoq.api import search
    from autoq.engine.runner import SearchConfig

__version__ = "0.1.0"

_LAZY = {"search": "autoq.api", "SearchConfig": "autoq.engine.runner"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names with the lazy ones (PEP 562): ``dir(autoq)``, ``help(autoq)`` and tab completion left out
    ``search`` and ``SearchConfig``, its two main entry points."""
    return sorted({*globals(), *_LAZY})


__all__ = [
    "Assignment",
    "AutoqError",
    "AutoqWarning",
    "Budget",
    "LayerChoice",
    "Point",
    "QuantSpec",
    "SearchConfig",
    "SearchInterrupted",
    "SearchResult",
    "export",
    "load",
    "parse_budget",
    "search",
]
