"""An autoq export as an MLflow ``python_function`` model: what ``mlflow.pyfunc.load_model`` and ``mlflow models serve`` run.

Through MLflow (``mlflow.pyfunc.load_model``, ``mlflow models serve``), ``predict`` takes what the logged signature
admits: a numpy array, or a dict of arrays for a Hugging Face model (``input_ids`` and ``attention_mask``, whose every
dimension is variable, so MLflow refuses a pandas DataFrame for them). Called directly it also takes a list or a
DataFrame (a column per input; a model of one bare tensor input takes a single column). The model gets them as tensors
(``model(x)`` or ``model(**inputs)``; floating ones in the dtype the export recorded for that input) and the answer is
the tensor that stands for its output (logits, else the last hidden state, else the first floating tensor) as numpy.
The model runs on the GPU where there is one (the Triton kernels, for fp16/bf16), else on the CPU;
``model_config={"device": "cpu"}`` (MLflow's ``load_model`` option) names the device. MLflow loads it from
``pyfunc_entry.py`` (models from code), so nothing is unpickled.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np

from autoq.export.mlflow_store import ARTIFACT_KEY


def as_tensors(model_input: Any, dtypes: Mapping[str, str] | None = None) -> Any:
    """The model's input as torch tensors: an array, a dict of arrays, a list (one array), a DataFrame (by column); a
    single input named ``""`` (a bare tensor's, as the signature names it) as that tensor. A floating input is cast to
    the floating dtype ``dtypes`` records for its name (the export's ``inputs``): a list of floats is float64, which a
    float32 model's layers refuse."""

    if hasattr(model_input, "to_dict") and hasattr(model_input, "columns"):  # a pandas DataFrame: a column per input
        model_input = {str(c): np.stack([np.asarray(v) for v in model_input[c]]) for c in model_input.columns}
    if isinstance(model_input, Mapping):
        if list(model_input) == [""]:  # the signature's name for a bare tensor: model(x), not model(**{"": x})
            return as_tensors(model_input[""], dtypes)
        return {k: _tensor(v, (dtypes or {}).get(k)) for k, v in model_input.items()}
    return _tensor(model_input, (dtypes or {}).get(""))


def _tensor(value: Any, recorded: str | None) -> Any:
    """``value`` as a tensor, cast to the ``recorded`` dtype (``"float32"``) where both are floating."""
    import torch

    tensor = torch.as_tensor(np.asarray(value))
    dtype = getattr(torch, recorded, None) if recorded else None
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point and tensor.is_floating_point():
        tensor = tensor.to(dtype)
    return tensor


def device_for(model_config: Mapping[str, Any] | None) -> Any:
    """The device a served model runs on: ``model_config["device"]`` where given, else (or ``"auto"``, what the model is
    saved with) the GPU where there is one."""
    import torch

    from autoq.errors import AutoqError

    wanted = (model_config or {}).get("device")
    if wanted is None or wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(wanted)
    except (RuntimeError, TypeError):
        raise AutoqError(f"model_config device {wanted!r} is not a torch device; use 'cpu', 'cuda', 'cuda:1' or 'auto'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AutoqError(f"model_config asks for device {wanted!r}, and no CUDA GPU is visible here (torch.cuda.is_available() "
                         "is False); use 'cpu', or leave device out to take the GPU where there is one")
    if device.type not in ("cpu", "cuda"):
        raise AutoqError(f"model_config device {wanted!r}: an autoq model runs on 'cpu' or 'cuda'")
    return device


def output_array(output: Any) -> np.ndarray:
    """The model's output as a float32 numpy array (autoq's ``primary_output``: logits, last hidden state, first tensor)."""
    from autoq.evaluate.fidelity import primary_output

    return primary_output(output).detach().float().cpu().numpy()


class QuantizedPyfunc(mlflow.pyfunc.PythonModel):
    """Runs the export in the model's ``artifacts/quantized_model`` (``autoq.load``: Triton on CUDA, torch on CPU), on
    the device :func:`device_for` says."""

    def load_context(self, context: Any) -> None:
        from autoq.export.config import read_config
        from autoq.export.loader import load

        folder = Path(context.artifacts[ARTIFACT_KEY])
        self.device = device_for(getattr(context, "model_config", None))
        self.model = load(folder).to(self.device).eval()
        self.input_dtypes = {name: entry["dtype"] for name, entry in (read_config(folder).get("inputs") or {}).items()}

    # MLflow reads predict's input hint as a schema: np.ndarray is the one it takes without one (and without warning);
    # a dict of arrays passes unchecked as well, and the logged signature is what MLflow checks inputs against
    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        """The model's output (logits, last hidden state, ...) on ``model_input``, as a float32 array."""
        import torch

        from autoq.evaluate.fidelity import call_model

        inputs = as_tensors(model_input, self.input_dtypes)
        inputs = {k: v.to(self.device) for k, v in inputs.items()} if isinstance(inputs, dict) else inputs.to(self.device)
        with torch.no_grad():
            return output_array(call_model(self.model, inputs))
