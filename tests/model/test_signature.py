"""forward_takes: what a model's forward accepts, by its signature."""

from __future__ import annotations

from torch import nn

from autoq.model.signature import forward_takes, mask_position


class Seq2Seq(nn.Module):
    def forward(self, input_ids, attention_mask=None, decoder_input_ids=None):
        return input_ids


def test_forward_takes_reads_the_forwards_parameters():
    assert forward_takes(Seq2Seq(), "decoder_input_ids") and forward_takes(Seq2Seq(), "attention_mask")
    assert not forward_takes(nn.Linear(2, 2), "attention_mask")
    assert not forward_takes(None, "attention_mask") and not forward_takes(object(), "input_ids")  # no forward to read


class _KeywordMask(nn.Module):
    def forward(self, input_ids, *, attention_mask=None):
        return input_ids


class _Varargs(nn.Module):
    def forward(self, *inputs, attention_mask=None):
        return inputs[0]


def test_mask_position_is_where_a_tuple_batch_holds_the_attention_mask():
    assert mask_position(Seq2Seq()) == 1
    assert mask_position(_KeywordMask()) is None and mask_position(_Varargs()) is None  # a tuple batch cannot fill it
    assert mask_position(nn.Linear(2, 2)) is None and mask_position(None) is None


def test_a_compiled_models_mask_position_is_its_modules():
    import torch

    assert mask_position(torch.compile(Seq2Seq(), backend="eager")) == 1  # the wrapper's forward takes *args, **kwargs
