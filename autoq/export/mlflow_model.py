"""The MLflow model folder of an export: a ``python_function`` model (models from code) with its requirements,
input signature and the export as its artifact, and the source run's metrics recorded on the logged model."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from autoq.model.signature import first_parameter, forward_takes, positional_names

# the settings ``mlflow.pyfunc.load_model(uri, model_config=...)`` may change: MLflow drops, with a warning, every key a
# model was not saved with (all of them where it was saved with none); "auto" is the GPU where there is one
MODEL_CONFIG = {"device": "auto"}


def save_pyfunc(out_dir: Path, tmp: Path, logged: Any, run_id: str) -> Path:
    """Write the MLflow model of the export in ``out_dir`` under ``tmp``; returns its folder."""
    import mlflow.pyfunc
    from mlflow.models import Model

    from autoq.export.config import read_config
    from autoq.export.mlflow_store import ARTIFACT_KEY, staged
    from autoq.tracking.runs import no_download_bars

    entry = Path(importlib.util.find_spec("autoq.export.pyfunc").origin).with_name("pyfunc_entry.py")
    local = tmp / "model"
    config = read_config(out_dir)
    meta = Model(artifact_path=logged.artifact_location, run_id=run_id, model_id=logged.model_id, model_uuid=logged.model_id)
    with no_download_bars():  # MLflow "downloads" the artifacts it copies, with a bar each
        mlflow.pyfunc.save_model(str(local), python_model=str(entry), artifacts={ARTIFACT_KEY: str(staged(out_dir, tmp))},
                                 pip_requirements=requirements(config), signature=signature(config),
                                 input_example=input_example(config), mlflow_model=meta, model_config=MODEL_CONFIG)
    return local


def requirements(config: dict[str, Any]) -> list[str]:
    """What loading the export needs, pinned to the versions here (MLflow adds itself): autoq, torch and safetensors,
    numpy for pyfunc's arrays, and transformers for a Hugging Face model. Given, not inferred: MLflow's inference
    loads the model once more in a subprocess."""
    names = ["autoq", "torch", "safetensors", "numpy"]
    if config.get("base", {}).get("hf_config") is not None:
        names.append("transformers")
    pinned = []
    for name in names:
        try:
            version = importlib.metadata.version(name).split("+")[0]  # torch's +cpu / +cu128 build tag is no pip version
        except importlib.metadata.PackageNotFoundError:  # autoq run from a checkout without an install
            pinned.append(name)
        else:
            pinned.append(f"{name}=={version}")
    return pinned


def input_spec(batch: Any, model: Any = None) -> dict[str, dict[str, Any]] | None:
    """The dtype and shape of one batch of the model's input, kept in the export's config for its MLflow signature:
    ``{"": ...}`` for a tensor, a key per input for a dict of tensors (a Hugging Face batch); None for anything else.
    A tuple or list of one tensor, which a DataLoader over a ``TensorDataset`` yields and ``model(*batch)`` calls as
    that tensor, is that tensor; one of several tensors is a dict by the names of ``forward``'s leading parameters,
    which a served model passes by keyword (None where it has fewer such parameters, ``forward(*args)``: it recorded
    no signature at all, and MLflow served no ``[ids, mask]`` model).

    Token ids calibrated without a mask (the ``smollm2`` built-in's) get an ``attention_mask`` like them where
    ``model``'s ``forward`` takes one: MLflow drops every input its signature lacks, so a left-padded request's mask was
    ignored and its rows' logits were those of the padding too. A bare tensor of ids, passed as ``forward``'s
    ``input_ids``, is named so and gets one too: its signature was one unnamed input, which refused a mask."""
    import torch

    if isinstance(batch, (tuple, list)) and len(batch) == 1 and isinstance(batch[0], torch.Tensor):
        batch = batch[0]
    elif isinstance(batch, (tuple, list)) and len(batch) > 1 and all(isinstance(t, torch.Tensor) for t in batch):
        names = positional_names(model) or []
        if len(names) < len(batch):
            return None
        batch = dict(zip(names, batch))
    if isinstance(batch, torch.Tensor):
        ids = not batch.is_floating_point() and first_parameter(model) == "input_ids" and forward_takes(model, "attention_mask")
        batch = {"input_ids" if ids else "": batch}
    elif not (isinstance(batch, Mapping) and batch and all(isinstance(v, torch.Tensor) for v in batch.values())):
        return None
    spec = {str(k): {"dtype": str(v.dtype).removeprefix("torch."), "shape": list(v.shape)} for k, v in batch.items()}
    if "input_ids" in spec and "attention_mask" not in spec and forward_takes(model, "attention_mask"):
        spec["attention_mask"] = dict(spec["input_ids"])
    return spec


def _numpy_dtype(entry: dict[str, Any]) -> np.dtype:
    """A recorded input's dtype in numpy, which has no bfloat16 (float32 holds it)."""
    return np.dtype(entry["dtype"] if entry["dtype"] != "bfloat16" else "float32")


def output_spec(batch: Any, model: Any) -> dict[str, Any] | None:
    """The shape of what the MLflow model's ``predict`` answers for ``batch`` (the model's primary output, as float32:
    `autoq.export.pyfunc.output_array`), kept in the export's config for the signature's outputs; None where the
    model cannot be run on it here (the signature then has inputs alone, as before). One forward pass without
    gradients, read for its shape alone."""
    import torch

    from autoq.evaluate.fidelity import call_model, primary_output
    from autoq.model.modes import eval_mode

    try:
        with torch.no_grad(), eval_mode(model):
            shape = tuple(primary_output(call_model(model, batch)).shape)
    except Exception:  # noqa: BLE001 - an output it cannot read as one tensor, or data on another device: no output schema
        return None
    return {"dtype": "float32", "shape": list(shape)}


def signature(config: dict[str, Any]) -> Any:
    """The MLflow model's signature from the export's recorded ``inputs`` and ``outputs`` (None where no inputs are
    recorded). The batch dimension is variable; an integer input is a token sequence, variable in every dimension; a
    float input keeps its shape past the batch (an image's, a feature vector's). The output's batch is variable, and
    so is a dimension the size of a token sequence's positions, not the last of three or more (hidden size, vocabulary)."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    spec = config.get("inputs")
    if not spec:
        return None
    tensors = []
    positions = set()  # the lengths of the token sequences calibrated on
    for name, entry in spec.items():
        dtype = _numpy_dtype(entry)
        tokens = not np.issubdtype(dtype, np.floating)
        if tokens:
            positions.update(entry["shape"][1:])
        fixed = len(entry["shape"]) if tokens else 1
        shape = tuple(-1 if i < fixed else d for i, d in enumerate(entry["shape"]))
        tensors.append(TensorSpec(dtype, shape, name or None))
    out = config.get("outputs")
    if not out:
        return ModelSignature(inputs=Schema(tensors))
    dims = out["shape"]
    last = len(dims) - 1 if len(dims) >= 3 else len(dims)
    shape = tuple(-1 if i == 0 or (i < last and d in positions) else d for i, d in enumerate(dims))
    return ModelSignature(inputs=Schema(tensors), outputs=Schema([TensorSpec(np.dtype(out["dtype"]), shape)]))


def input_example(config: dict[str, Any]) -> Any:
    """A one-row input of the recorded dtypes and shapes (ones: valid token ids and attention masks; zeros for float
    inputs), for the request format MLflow shows and serves (``serving_input_example.json``). Made up rather than a
    row of the calibration data, which is the user's and stays out of the model; None where nothing is recorded."""
    spec = config.get("inputs")
    if not spec:
        return None
    rows = {}
    for name, entry in spec.items():
        dtype = _numpy_dtype(entry)
        shape = (1, *entry["shape"][1:])
        rows[name] = np.zeros(shape, dtype) if np.issubdtype(dtype, np.floating) else np.ones(shape, dtype)
    return rows[""] if list(rows) == [""] else rows


def copy_metrics(client: Any, run: Any, model_id: str) -> None:
    """Record the run's latest metrics (quality, bits, latency) on the logged model too, as ``mlflow.<flavor>.log_model``
    does for an active run's: the experiment's Models tab then compares exported models by them. Each is sent again
    with its own step and timestamp, which the run's history already holds (MLflow keeps one of identical points): a
    point of its own would add to the run's history a step-0 value of the newest session, dated 1970."""
    from mlflow.entities import Metric

    latest = []
    for key in run.data.metrics:
        own = [m for m in client.get_metric_history(run.info.run_id, key) if m.model_id is None]
        if own:
            m = max(own, key=lambda m: (m.step, m.timestamp, m.value))  # what MLflow shows as the run's value
            latest.append(Metric(key=key, value=m.value, timestamp=m.timestamp, step=m.step, run_id=run.info.run_id,
                                 model_id=model_id))
    for start in range(0, len(latest), 1000):  # MLflow's batch limit
        client.log_batch(run.info.run_id, metrics=latest[start:start + 1000])
