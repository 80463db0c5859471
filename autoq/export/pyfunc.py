"""An autoq export as an MLflow ``python_function`` model: what ``mlflow.pyfunc.load_model`` and ``mlflow models serve`` run.

Through MLflow (``mlflow.pyfunc.load_model``, ``mlflow models serve``), ``predict`` takes what the logged signature
admits: a numpy array, or a dict of arrays for a Hugging Face model (``input_ids`` and ``attention_mask``, whose every
dimension is variable, so MLflow refuses a pandas DataFrame for them). Called directly it also takes a list or a
DataFrame (a column per input). The model gets them as tensors (``model(x)`` or ``model(**inputs)``) and the answer is
the tensor that stands for its output (logits, else the last hidden state, else the first floating tensor) as numpy.
MLflow loads it from ``pyfunc_entry.py`` (models from code), so nothing is unpickled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mlflow.pyfunc
import numpy as np

from autoq.export.mlflow_store import ARTIFACT_KEY


def as_tensors(model_input: Any) -> Any:
    """The model's input as torch tensors: an array, a dict of arrays, a list (one array), a DataFrame (by column)."""
    import torch

    if hasattr(model_input, "to_dict") and hasattr(model_input, "columns"):  # a pandas DataFrame: a column per input
        model_input = {str(c): np.stack([np.asarray(v) for v in model_input[c]]) for c in model_input.columns}
    if isinstance(model_input, Mapping):
        return {k: as_tensors(v) for k, v in model_input.items()}
    return torch.as_tensor(np.asarray(model_input))


def output_array(output: Any) -> np.ndarray:
    """The model's output as a float32 numpy array (autoq's ``primary_output``: logits, last hidden state, first tensor)."""
    from autoq.evaluate.fidelity import primary_output

    return primary_output(output).detach().float().cpu().numpy()


class QuantizedPyfunc(mlflow.pyfunc.PythonModel):
    """Runs the export in the model's ``artifacts/quantized_model`` (``autoq.load``: Triton on CUDA, torch on CPU)."""

    def load_context(self, context: Any) -> None:
        from autoq.export.loader import load

        self.model = load(context.artifacts[ARTIFACT_KEY]).eval()

    # MLflow reads predict's input hint as a schema: np.ndarray is the one it takes without one (and without warning);
    # a dict of arrays passes unchecked as well, and the logged signature is what MLflow checks inputs against
    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        """The model's output (logits, last hidden state, ...) on ``model_input``, as a float32 array."""
        import torch

        from autoq.evaluate.fidelity import call_model

        device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        inputs = as_tensors(model_input)
        inputs = {k: v.to(device) for k, v in inputs.items()} if isinstance(inputs, dict) else inputs.to(device)
        with torch.no_grad():
            return output_array(call_model(self.model, inputs))
