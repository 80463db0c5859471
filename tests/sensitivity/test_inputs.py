"""`autoq.sensitivity.inputs`: what a model is fed from a batch, how `subsample` spreads the rows it keeps over the
calibration batches, and which output positions `position_weights` counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autoq.sensitivity.inputs import Inputs, position_weights, subsample


def _labelled(i: int) -> torch.Tensor:
    """A one-row batch whose values say which batch it is."""
    return torch.full((1, 3), float(i))


@pytest.mark.parametrize("n_samples", [0, -3])
def test_subsampling_to_no_rows_still_keeps_one(n_samples):
    """`subsample` keeps at least one row (and at most every row): a metric given no calibration rows has nothing to
    score with."""
    picked = subsample([torch.zeros(4, 3)], n_samples)
    assert [tuple(b.shape) for b in picked] == [(1, 3)]


def test_subsample_spreads_its_rows_evenly_over_the_batches():
    """Each batch's share is round(want * rows up to its end / total) - round(want * rows before it / total), so the
    shares add up to ``want`` and the rows kept sit in the middle of equal stretches of the (sorted-by-length) batches:
    the middle batch of 3 for one row, batches 0 and 2 of 4 for two, not the last batch(es)."""
    assert [int(b[0, 0]) for b in subsample([_labelled(i) for i in range(3)], 1)] == [1]
    assert [int(b[0, 0]) for b in subsample([_labelled(i) for i in range(4)], 2)] == [0, 2]
    assert [int(b[0, 0]) for b in subsample([_labelled(i) for i in range(4)], None)] == [0, 1, 2, 3]


def test_a_mask_that_does_not_fit_the_output_does_not_weight_it():
    """`position_weights` takes the attention_mask as the positions' weights only where it has the output's positions'
    shape: a sequence classifier's (2, 5) token mask does not fit its (2, 3) logits' 2 positions, which weigh 1 each."""
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    batch = {"input_ids": torch.ones(2, 5, dtype=torch.long), "attention_mask": mask}
    weights = position_weights(batch, torch.randn(2, 3))
    assert weights.dtype == torch.float64 and torch.equal(weights, torch.ones(2, dtype=torch.float64))
    # a mask that fits (a token classifier's (2, 5, 3) logits) is the weights
    assert torch.equal(position_weights(batch, torch.randn(2, 5, 3)), mask.double())


def test_with_a_task_loss_only_an_inputs_labels_pair_is_split():
    """With a task loss, `Inputs.feed` gives the model the inputs of an ``(inputs, labels)`` batch; any other batch (a
    3-tuple) is the model's input whole."""
    inputs = Inputs(nn.Linear(3, 2), (), (), (), loss=lambda out, batch: out.sum())
    x, labels = torch.zeros(1, 3), torch.zeros(1)
    assert inputs.feed((x, labels)) is x
    triple = (x, torch.ones(1, 3), labels)
    assert inputs.feed(triple) is triple
    pair = (x, labels)
    assert Inputs(nn.Linear(3, 2), (), (), ()).feed(pair) is pair  # no loss: whole too
