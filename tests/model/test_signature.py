"""forward_takes: what a model's forward accepts, by its signature."""

from __future__ import annotations

from torch import nn

from autoq.model.signature import forward_takes


class Seq2Seq(nn.Module):
    def forward(self, input_ids, attention_mask=None, decoder_input_ids=None):
        return input_ids


def test_forward_takes_reads_the_forwards_parameters():
    assert forward_takes(Seq2Seq(), "decoder_input_ids") and forward_takes(Seq2Seq(), "attention_mask")
    assert not forward_takes(nn.Linear(2, 2), "attention_mask")
    assert not forward_takes(None, "attention_mask") and not forward_takes(object(), "input_ids")  # no forward to read
