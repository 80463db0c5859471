"""eval_mode: scoring and calibration run the deployed model and hand back every module's own flag."""

from __future__ import annotations

import torch
from torch import nn

from autoq.model import find_layers
from autoq.model.capture import capture_stats
from autoq.model.modes import eval_mode
from autoq.search_spaces import load_preset
from autoq.sensitivity import compute_table
from autoq.space import SearchSpace


def fine_tuning() -> nn.Module:
    """A model being fine-tuned (train mode) with a frozen batch norm (eval mode) and dropout."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 4))
    model.train()
    model[1].eval()
    return model


def flags(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def test_eval_mode_restores_each_module_flag_even_on_error():
    model = fine_tuning()
    before = flags(model)
    try:
        with eval_mode(model):
            assert not any(flags(model))
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert flags(model) == before and before[2] is False  # the frozen batch norm stays frozen


def test_compute_table_gives_back_the_modes_it_found():
    model = fine_tuning()
    before = flags(model)
    space = SearchSpace.build(load_preset("default"), find_layers(model))
    x = [torch.randn(16, 8, generator=torch.Generator().manual_seed(1))]
    compute_table(model, x, space.layers, space.options, "kl", use_cache=False, progress=False)
    assert flags(model) == before


def test_capture_runs_without_dropout_and_keeps_the_modes():
    model = fine_tuning()
    before = flags(model)
    x = [torch.randn(16, 8, generator=torch.Generator().manual_seed(1))]
    got = capture_stats(model, find_layers(model), x)["4"].xtx
    assert flags(model) == before
    model.eval()
    hidden = torch.relu(model[1](model[0](x[0]))).double()  # what the last layer sees with dropout off
    assert torch.allclose(got, hidden.t() @ hidden)
