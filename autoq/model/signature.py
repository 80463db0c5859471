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


def first_parameter(model: Any) -> str | None:
    """The name of ``model``'s ``forward``'s first parameter, what a bare tensor is passed as (``input_ids`` for a
    Hugging Face language model); ``None`` for no module, a forward without parameters, or one ``inspect`` cannot read."""
    try:
        return next(iter(inspect.signature(model.forward).parameters), None)
    except (AttributeError, TypeError, ValueError):
        return None
