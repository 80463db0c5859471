"""The gradient metrics (fisher, hessian) beyond their values: the model's state left behind, Fisher's standard error,
the weighting of batches, their refusals and their documented defaults (Hutchinson's own rules: test_hutchinson.py)."""

from __future__ import annotations

import pytest
import torch
from tiny_models import ALL_ROWS, labelled, mlp, space_for, task_loss
from torch import nn

from autoq.errors import AutoqError
from autoq.sensitivity import compute_table, get_metric


@pytest.mark.parametrize("metric", ["hessian", "fisher"])
def test_gradient_metrics_leave_each_parameters_requires_grad_as_it_was(metric: str) -> None:
    """A trainable bias stays trainable and a frozen one frozen after a gradient metric scores the model."""
    model = mlp()
    model[2].bias.requires_grad_(False)
    before = {name: p.requires_grad for name, p in model.named_parameters()}
    space = space_for(model)
    settings = {**ALL_ROWS, "max_iter": 3, "min_iter": 2} if metric == "hessian" else {**ALL_ROWS, "draws": 1}
    batches = labelled((6,), 4) if metric == "hessian" else [x for x, _ in labelled((6,), 4)]
    compute_table(model, batches, space.layers, space.options, metric, settings,
                  loss=task_loss if metric == "hessian" else None, use_cache=False, progress=False)
    assert {name: p.requires_grad for name, p in model.named_parameters()} == before


def test_fisher_trace_stderr_of_two_passes_is_half_their_difference() -> None:
    """With equal positions per pass, the Fisher trace's standard error over two passes t1, t2 is |t1 - t2| / 2."""
    model = mlp(seed=3)
    batches = [x for x, _ in labelled((6,), 4, n_batches=1)]
    space = space_for(model)

    def table(draws: int):
        return compute_table(model, batches, space.layers, space.options, "fisher", {**ALL_ROWS, "draws": draws, "seed": 7},
                             use_cache=False, progress=False)

    one, two = table(1), table(2)
    for layer in space.layers:
        t1, mean = one.stats(layer.name)["fisher_trace"], two.stats(layer.name)["fisher_trace"]
        assert two.stats(layer.name)["fisher_trace_stderr"] == pytest.approx(abs(mean - t1), rel=1e-9)  # t2 = 2 * mean - t1


def test_hessian_task_loss_weights_batches_by_their_rows() -> None:
    """Batches of unequal size weigh by rows: the trace is that of the mean loss over all rows (closed form 12)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2)).eval()
    x_a = torch.tensor([[1.0, 0.0]]).repeat(24, 1)  # 24 rows of e0, then 8 rows of 3 e1: each row's x x^T is diagonal
    x_b = torch.tensor([[0.0, 3.0]]).repeat(8, 1)
    batches = [(x_a, torch.zeros(24, dtype=torch.long)), (x_b, torch.zeros(8, dtype=torch.long))]

    def first_layer_energy(output: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return model[0](batch[0]).pow(2).sum(-1).mean()  # Hessian in W0: 2 I (x) mean x x^T, diagonal: exact per probe

    space = space_for(model)
    table = compute_table(model, batches, space.layers, space.options, "hessian", {**ALL_ROWS, "min_iter": 2, "max_iter": 4},
                          loss=first_layer_energy, use_cache=False, progress=False)
    # 2 outputs x 2 x (24 * 1 + 8 * 9) / 32 rows
    assert table.stats(space.layers[0].name)["trace"] == pytest.approx(12.0, rel=1e-9)


class _NoGrad(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.fc(x)


@pytest.mark.parametrize("metric", ["hessian", "fisher"])
def test_a_forward_under_no_grad_names_the_forward_metrics_to_use_instead(metric: str) -> None:
    """The refusal of a model whose forward runs under no_grad says what to use instead."""
    torch.manual_seed(0)
    model = _NoGrad().eval()
    space = space_for(model)
    with pytest.raises(AutoqError, match=rf"the {metric} metric needs gradients.*use a forward metric instead: kl, sqnr or mse"):
        compute_table(model, [torch.randn(8, 6)], space.layers, space.options, metric, ALL_ROWS, use_cache=False, progress=False)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_an_overflow_in_a_half_model_advises_scoring_it_in_float32(dtype: torch.dtype) -> None:
    """An Inf gradient of a float16 or bfloat16 model says to score it in float32."""
    model = mlp().to(dtype)
    space = space_for(model)
    big = torch.finfo(dtype).max / 2

    def huge(output: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return output.sum() * big

    batches = [(x.to(dtype), y) for x, y in labelled((6,), 4)]
    with pytest.raises(AutoqError, match="overflow there; score a float16 or bfloat16 model in float32"):
        compute_table(model, batches, space.layers, space.options, "hessian", {**ALL_ROWS, "max_iter": 2, "min_iter": 2},
                      loss=huge, use_cache=False, progress=False)


def test_gradient_metric_defaults_are_the_documented_ones() -> None:
    """The README's defaults: 4 Fisher draws; Hessian probes to 5% of the trace, at least 10 and at most 40."""
    assert get_metric("fisher").defaults["draws"] == 4
    hessian = get_metric("hessian").defaults
    assert (hessian["min_iter"], hessian["max_iter"], hessian["tol"]) == (10, 40, 0.05)
