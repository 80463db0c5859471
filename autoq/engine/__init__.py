"""The search engine: seeds, strategies, the ask/evaluate/tell loop, results.

Named `engine`, not `search`, because `autoq.search` is the public function.
"""

from autoq.engine.result import Point, SearchResult, pareto_front
from autoq.engine.runner import SearchConfig, prepare, run_search
from autoq.engine.summary import format_summary

__all__ = ["Point", "SearchConfig", "SearchResult", "format_summary", "pareto_front", "prepare", "run_search"]
