"""The search engine: seeds, strategies, the ask/evaluate/tell loop, results.

Named `engine`, not `search`, because `autoq.search` is the public function. The
runner (and with it Optuna) is imported on first use, so that the results, the
MLflow logger and the kernels stay importable where only torch and Triton are
installed (a GPU machine measuring latency tables).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from autoq.engine.result import Point, SearchResult, pareto_front

if TYPE_CHECKING:
    from autoq.engine.runner import SearchConfig, prepare, run_search
    from autoq.engine.summary import format_summary

_LAZY = {"SearchConfig": "runner", "prepare": "runner", "run_search": "runner", "format_summary": "summary"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Point", "SearchConfig", "SearchResult", "format_summary", "pareto_front", "prepare", "run_search"]
