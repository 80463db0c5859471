"""Batch-norm folding and cross-layer equalization leave the float output unchanged and even out ranges."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autoq.errors import AutoqError
from autoq.ptq.cle import equalization_pairs, equalize, fold_batch_norm, fold_batch_norms


def cnn() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10),
    )
    with torch.no_grad():  # non-trivial running statistics and very unequal channel ranges
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.2, 3)
                m.weight.uniform_(0.2, 4)
                m.bias.uniform_(-1, 1)
        model[0].weight.mul_(torch.logspace(-2, 1, 8)[:, None, None, None])
    return model.eval()


def x() -> torch.Tensor:
    return torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def test_fold_batch_norms_keeps_output():
    model = cnn()
    with torch.no_grad():
        ref = model(x())
        assert fold_batch_norms(model) == 2
        assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        assert torch.allclose(model(x()), ref, atol=1e-5)


def _linear_bn(features: int = 8) -> nn.Module:
    bn = nn.BatchNorm1d(features)
    with torch.no_grad():
        bn.running_mean.normal_(generator=torch.Generator().manual_seed(0))
        bn.running_var.uniform_(0.5, 2, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, features), bn).eval()


def test_a_linear_and_batchnorm1d_fold_only_where_an_example_shows_2d_input(capsys):
    """BatchNorm1d normalises dim 1: on (N, T, C) input the tokens, not the Linear's features. With T = C the fold
    changed the output (by more than its own scale) without a word."""
    tokens = torch.randn(2, 8, 6, generator=torch.Generator().manual_seed(2))  # 8 tokens, 8 features
    rows = torch.randn(5, 6, generator=torch.Generator().manual_seed(3))
    for example, folds in ((tokens, 0), (None, 0), (rows, 1)):
        model = _linear_bn()
        with torch.no_grad():
            ref = model(tokens if example is tokens else rows)
            assert fold_batch_norms(model, example) == folds
            assert torch.allclose(model(tokens if example is tokens else rows), ref, atol=1e-5)
        err = capsys.readouterr().err
        assert ("left 1 Linear -> BatchNorm1d pair(s) unfolded" in err) is (folds == 0)
        assert ("example_input" in err) is (example is None)


@pytest.mark.parametrize("affine", [False, True])
def test_fold_a_batch_norm_with_or_without_affine_parameters(affine):
    """BatchNorm(affine=False) has no weight or bias: gamma 1 and beta 0, so the fold keeps the output too."""
    conv, bn = nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3, affine=affine).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        inp = torch.randn(2, 2, 4, 4)
        ref = bn(conv(inp))
        fold_batch_norm(conv, bn)
        assert torch.allclose(conv(inp), ref, atol=1e-5)


class TwoCalls(nn.Module):
    """One Linear -> BatchNorm1d called on (N, C) rows and on (N, T, C) tokens."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.seq = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8))
        with torch.no_grad():
            self.seq[1].running_mean.uniform_(-1, 1)
            self.seq[1].running_var.uniform_(0.5, 2)

    def forward(self, rows: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.seq(rows), self.seq(tokens)


def test_a_batch_norm1d_seen_on_3d_input_too_is_not_folded():
    """Folding is exact only for (N, C) input: a BatchNorm called on (N, T, C) as well stays as it is."""
    model = TwoCalls().eval()
    rows, tokens = torch.randn(5, 6), torch.randn(2, 8, 6)
    with torch.no_grad():
        ref = model(rows, tokens)
        assert fold_batch_norms(model, (rows, tokens)) == 0
        out = model(rows, tokens)
    assert torch.allclose(out[0], ref[0], atol=1e-5) and torch.allclose(out[1], ref[1], atol=1e-5)


def test_fold_into_a_layer_without_bias():
    conv, bn = nn.Conv2d(2, 3, 1, bias=False), nn.BatchNorm2d(3).eval()
    bn.running_mean.fill_(0.5)
    inp = torch.randn(2, 2, 4, 4)
    with torch.no_grad():
        ref = bn(conv(inp))
        fold_batch_norm(conv, bn)
        assert torch.allclose(conv(inp), ref, atol=1e-6)


def test_cle_keeps_output_and_equalizes_ranges():
    model = cnn()
    fold_batch_norms(model)
    pairs = equalization_pairs(model)
    assert len(pairs) == 3  # conv-conv, conv-(pool, flatten)-linear, linear-linear
    first, second = pairs[0]
    r0 = first.weight.detach().reshape(8, -1).abs().amax(1)
    spread_before = float(r0.max() / r0.min())
    with torch.no_grad():
        ref = model(x())
        equalize(model)
        assert torch.allclose(model(x()), ref, atol=1e-4, rtol=1e-4)
    r1 = first.weight.detach().reshape(8, -1).abs().amax(1)
    assert float(r1.max() / r1.min()) < spread_before / 10  # 1000x spread of the first conv's channels, evened out


@pytest.mark.parametrize("pool", [nn.AdaptiveAvgPool2d(1), nn.AdaptiveMaxPool2d((2, 2))])
def test_a_convolution_is_paired_with_the_linear_after_an_adaptive_pool(pool):
    """The classifier ending of most CNNs (torchvision's ResNet in a Sequential): the pair was missed."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), pool, nn.Flatten(), nn.Linear(8 * pool(torch.zeros(1, 1, 8, 8)).numel(), 10))
    with torch.no_grad():
        model[0].weight.mul_(torch.logspace(-2, 1, 8)[:, None, None, None])
        ref = model(x())
        assert equalization_pairs(model) == [(model[0], model[4])]
        equalize(model)
        assert torch.allclose(model(x()), ref, atol=1e-5, rtol=1e-4)
    r = model[0].weight.detach().reshape(8, -1).abs().amax(1)
    assert float(r.max() / r.min()) < 100  # 1000x before


@pytest.mark.parametrize("multiplier", [1, 2])
def test_cle_equalizes_through_depthwise_convolutions(multiplier):
    """A MobileNet block, conv -> depthwise conv -> pointwise conv: the case CLE was designed for. Grouped layers were
    left out of every pair, so equalize() returned 0 and changed nothing."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8 * multiplier, 3, padding=1, groups=8), nn.BatchNorm2d(8 * multiplier), nn.ReLU(),
        nn.Conv2d(8 * multiplier, 16, 1),
    )
    with torch.no_grad():
        model[3].weight.mul_(torch.logspace(-2, 1, 8 * multiplier)[:, None, None, None])  # 1000x spread over depthwise channels
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.2, 3)
    model.eval()
    inp = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    fold_batch_norms(model)
    assert len(equalization_pairs(model)) == 2
    depthwise = model[3]

    def spread() -> float:
        r = depthwise.weight.detach().reshape(depthwise.weight.shape[0], -1).abs().amax(1)
        return float(r.max() / r.min())

    before = spread()
    with torch.no_grad():
        ref = model(inp)
        equalize(model)
        assert torch.allclose(model(inp), ref, atol=1e-4, rtol=1e-4)
    assert spread() < before / 10


@pytest.mark.parametrize("between", [nn.Flatten(), nn.MaxPool1d(2), nn.AvgPool1d(2)])
def test_a_linear_on_token_features_is_not_paired_across_pooling_or_flatten(between):
    """A Linear on ``(batch, tokens, features)`` has its channels last: Flatten interleaves them token-major and
    pooling mixes neighbouring ones, so rescaling them is not exact (Flatten moved the output by half its size)."""
    torch.manual_seed(0)
    fan = {nn.Flatten: 5 * 8, nn.MaxPool1d: 4, nn.AvgPool1d: 4}[type(between)]
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), between, nn.Linear(fan, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    with torch.no_grad():
        model[0].weight.mul_(torch.logspace(-1, 1, 8)[:, None])
        inputs = torch.randn(4, 5, 6)
        ref = model(inputs)
        assert equalize(model) == 1  # only the Linear -> ReLU -> Linear pair after it
        assert torch.allclose(model(inputs), ref, atol=1e-5)


@pytest.mark.parametrize("layers", ["conv-linear", "linear-conv", "conv-flatten-conv"])
def test_layers_whose_channels_lie_on_other_axes_are_not_paired(layers):
    """A Linear after a convolution without a Flatten acts on the length axis; a convolution after a Linear sees the
    Linear's last axis as its length: rescaling either pair moved the output by a tenth to a quarter of its size."""
    torch.manual_seed(0)
    model = {
        "conv-linear": nn.Sequential(nn.Conv1d(4, 8, 3, padding=1), nn.ReLU(), nn.Linear(16, 5)),
        "linear-conv": nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Conv1d(4, 8, 3)),
        "conv-flatten-conv": nn.Sequential(nn.Conv1d(4, 8, 3, padding=1), nn.ReLU(), nn.Flatten(0, 1), nn.Conv1d(16, 3, 1)),
    }[layers].eval()
    assert equalization_pairs(model) == []
    inputs = torch.randn(2, 4, 16)
    with torch.no_grad():
        ref = model(inputs)
        assert equalize(model) == 0
        assert torch.equal(model(inputs), ref)


@pytest.mark.parametrize("flatten", [nn.Flatten(1, 2), nn.Flatten(0, -1)])
def test_a_conv_and_a_linear_after_a_partial_or_batch_flatten_are_not_paired(flatten):
    """Only Flatten(1, -1) puts a convolution's channels on a Linear's features; any other is left unpaired."""
    torch.manual_seed(0)
    inputs = torch.randn(2, 1, 4, 8)
    fan = {(1, 2): 8, (0, -1): 2 * 4 * 4 * 8}[(flatten.start_dim, flatten.end_dim)]
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), flatten, nn.Linear(fan, 3)).eval()
    with torch.no_grad():
        model[0].weight.mul_(torch.logspace(-2, 1, 4)[:, None, None, None])
        ref = model(inputs)
        assert equalize(model) == 0
        assert torch.equal(model(inputs), ref)


def test_equalize_leaves_a_dead_channel_finite_and_converges_along_a_chain():
    """An output channel of zero weights keeps s = 1 (dividing by its range of 0 would fill the layer with NaN), and in
    a chain of three Linears each pair ends with near-equal ranges (one sweep leaves the first pair 1.4x apart)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    with torch.no_grad():
        model[0].weight[2] = 0.0
        model[0].bias[2] = 0.0
        model[2].weight[:, 5] = 0.0  # and an input channel the next layer ignores
        inputs = torch.randn(4, 6)
        ref = model(inputs)
        equalize(model)
        assert torch.allclose(model(inputs), ref, atol=1e-5)
    assert torch.isfinite(model[0].weight).all() and torch.equal(model[0].weight[2], torch.zeros(6))
    chain = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        chain[0].weight.mul_(torch.logspace(-2, 1, 8)[:, None])
        chain[2].weight.mul_(torch.logspace(1, -2, 8)[:, None])
        equalize(chain)
    ratio = chain[0].weight.detach().abs().amax(1) / chain[2].weight.detach().abs().amax(0)
    assert float(ratio.max() / ratio.min()) < 1.01


def test_fold_refuses_wrong_modules():
    with pytest.raises(AutoqError, match="takes a Linear, Conv1d or Conv2d layer and the BatchNorm1d/2d that follows it, got ReLU and BatchNorm2d"):
        fold_batch_norm(nn.ReLU(), nn.BatchNorm2d(2))
    with pytest.raises(AutoqError, match=r"^cannot fold a BatchNorm without running statistics \(track_running_stats=False\)$"):
        fold_batch_norm(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3, track_running_stats=False))
    with pytest.raises(AutoqError, match=r"^cannot equalize: 8 output channels do not match the next layer's 5 inputs$"):
        equalize(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(5, 3)))
