"""Search over per-layer choices under a budget."""

from autoq.search.result import Point, SearchResult, pareto_front
from autoq.search.runner import SearchConfig, prepare, run_search
from autoq.search.summary import format_summary

__all__ = ["Point", "SearchConfig", "SearchResult", "format_summary", "pareto_front", "prepare", "run_search"]
