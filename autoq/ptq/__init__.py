"""PTQ methods, one registry. Importing this package registers the built-in methods.

Per-layer weight methods: ``rtn-minmax``, ``rtn-mse``, ``rtn-lp``, ``rtn-percentile``
(no data), ``gptq``, ``gptq-act``, ``awq``, ``adaround``, ``smoothquant``, ``smoothquant-search``,
``bias-correction`` (need the layer's calibration statistics). Model transforms
for CNNs (batch-norm folding, cross-layer equalization) are in :mod:`autoq.ptq.cle`.
"""

from autoq.ptq import adaround, awq, bias_correction, gptq, rtn, smoothquant  # noqa: F401  (register the methods)
from autoq.ptq.registry import (
    changed_code,
    get_method,
    method_info,
    method_names,
    method_needs_stats,
    plugin_code,
    register_method,
    run_method,
)
from autoq.ptq.result import TransformedTensor

__all__ = ["TransformedTensor", "changed_code", "get_method", "method_info", "method_names", "method_needs_stats", "plugin_code",
           "register_method", "run_method"]
