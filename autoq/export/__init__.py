"""Export a chosen point as packed safetensors and load it back onto autoq's kernels.

``autoq.export`` and ``autoq.load`` at the top level are the functions below (the
top-level name shadows this package): import from it with
``from autoq.export import QuantLinear`` or ``from autoq.export.layout import ...``.
"""

from autoq.export.act_modules import ActQuantLinear
from autoq.export.config import CONFIG_NAME, WEIGHTS_NAME
from autoq.export.loader import load
from autoq.export.modules import QuantLinear
from autoq.export.writer import export

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "ActQuantLinear", "QuantLinear", "export", "load"]
