"""PTQ methods, one registry. Importing this package registers the built-in methods."""

from autoq.ptq import rtn  # noqa: F401  (registers rtn-minmax, rtn-mse)
from autoq.ptq.registry import get_method, method_names, register_method

__all__ = ["get_method", "method_names", "register_method"]
