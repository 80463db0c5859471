"""autoq: automated mixed-precision quantization search for PyTorch."""

from autoq.api import search
from autoq.budget import Budget, parse_budget
from autoq.choice import Assignment, LayerChoice
from autoq.engine import Point, SearchConfig, SearchResult
from autoq.errors import AutoqError
from autoq.export import export, load
from autoq.quant import QuantSpec

__version__ = "0.1.0"

__all__ = [
    "Assignment",
    "AutoqError",
    "Budget",
    "LayerChoice",
    "Point",
    "QuantSpec",
    "SearchConfig",
    "SearchResult",
    "export",
    "load",
    "parse_budget",
    "search",
]
