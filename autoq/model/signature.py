"""What a model's ``forward`` takes, read from its signature: the inputs a caller may build for it."""

from __future__ import annotations

import inspect
from typing import Any


def forward_takes(model: Any, argument: str) -> bool:
    """Whether ``model``'s ``forward`` has a parameter named ``argument`` (``attention_mask``, ``decoder_input_ids``);
    ``False`` for no module, or a forward ``inspect`` cannot read."""
    try:
        return argument in inspect.signature(model.forward).parameters
    except (AttributeError, TypeError, ValueError):
        return False
