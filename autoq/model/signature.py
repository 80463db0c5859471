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


def _module_forward_parameters(model: Any) -> list[inspect.Parameter] | None:
    """The parameters of ``model``'s ``forward``, a ``torch.compile`` wrapper's read from its module (the wrapper's takes
    ``*args``); None where ``inspect`` cannot read it."""
    from autoq.model.layers import uncompiled

    try:
        return list(inspect.signature(uncompiled(model).forward).parameters.values())
    except (AttributeError, TypeError, ValueError):
        return None


def mask_position(model: Any) -> int | None:
    """Where ``model``'s ``forward`` takes ``attention_mask`` in a tuple batch (``model(*batch)``: a DataLoader over a
    ``TensorDataset`` of ids and masks yields ``[ids, mask]``): its index among the leading positional parameters;
    ``None`` where it takes none, takes it by keyword only, or ``inspect`` cannot read it. A ``torch.compile`` wrapper's
    is its module's (the wrapper's forward takes ``*args``: a table computed on it counted the padding)."""
    params = _module_forward_parameters(model)
    for i, p in enumerate(params or ()):
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            return None
        if p.name == "attention_mask":
            return i
    return None


def positional_names(model: Any) -> list[str] | None:
    """The names of ``model``'s ``forward``'s leading parameters that a caller may pass by position or by keyword: what
    the tensors of a tuple batch (``model(*batch)``) are called when passed as a dict (``model(**inputs)``, as a served
    MLflow model passes them). ``None`` where ``inspect`` cannot read the forward; a ``torch.compile`` wrapper's are its
    module's."""
    params = _module_forward_parameters(model)
    if params is None:
        return None
    names = []
    for p in params:
        if p.kind is not p.POSITIONAL_OR_KEYWORD:
            break
        names.append(p.name)
    return names


def first_parameter(model: Any) -> str | None:
    """The name of ``model``'s ``forward``'s first parameter, what a bare tensor is passed as (``input_ids`` for a
    Hugging Face language model); ``None`` for no module, a forward without parameters, or one ``inspect`` cannot read."""
    try:
        return next(iter(inspect.signature(model.forward).parameters), None)
    except (AttributeError, TypeError, ValueError):
        return None
