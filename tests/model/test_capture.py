"""Capture of per-layer calibration statistics: exact sums, conv unfolding, bounded samples, sequential inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autoq.errors import AutoqError
from autoq.model import find_layers, get_module, to_native, weight_2d
from autoq.model.capture import CalibrationStats, capture_sequential, capture_stats


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4))


def batches(n: int = 3, rows: int = 40, width: int = 12) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(rows, width, generator=gen) * torch.linspace(0.1, 3, width) for _ in range(n)]


def test_linear_stats_are_exact():
    model, data = mlp(), batches()
    stats = capture_stats(model, find_layers(model), data, max_samples=50)
    x = torch.cat(data).double()
    first = stats["0"]
    assert first.xtx.dtype == torch.float64
    assert torch.allclose(first.xtx, x.t() @ x)
    assert first.n_tokens == 120
    assert torch.allclose(first.absmax, x.abs().amax(0).float())
    assert torch.allclose(first.mean, x.mean(0).float(), atol=1e-6)
    assert torch.allclose(first.absmean, x.abs().mean(0).float(), atol=1e-6)
    assert first.samples.shape == (50, 12)  # bounded
    hidden = torch.relu(model[0](torch.cat(data))).double()
    assert torch.allclose(stats["2"].xtx, hidden.t() @ hidden, rtol=1e-5)
    assert float(stats["2"].min.min()) >= 0.0  # after ReLU


def test_samples_are_uniform_over_every_row_seen():
    """Each batch's share of the samples is its share of the rows, whatever their order and sizes (thinning the
    pool again at every batch gave the last of 8 equal batches 48% of the samples)."""
    model = nn.Sequential(nn.Linear(4, 2)).eval()
    equal = [torch.full((512, 4), float(b)) for b in range(8)]  # a sample row's value says its batch
    samples = capture_stats(model, find_layers(model), equal, max_samples=512)["0"].samples
    shares = torch.bincount(samples[:, 0].long(), minlength=8).float() / 512
    assert samples.shape == (512, 4) and float(shares.min()) > 0.08 and float(shares.max()) < 0.17  # 1/8 = 0.125
    unequal = [torch.zeros(4096, 4), torch.ones(512, 4)]  # 89% of the rows, then 11%
    samples = capture_stats(model, find_layers(model), unequal, max_samples=512)["0"].samples
    assert 0.84 < float((samples[:, 0] == 0).float().mean()) < 0.94
    again = capture_stats(model, find_layers(model), unequal, max_samples=512)["0"].samples
    assert torch.equal(again, samples)  # seeded


class _Tokens(nn.Module):
    """A token model taking a Hugging Face style batch: per-token layers, then a pooled one on the first token."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.dense, self.pooler = nn.Embedding(20, 6), nn.Linear(6, 6), nn.Linear(6, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.dense(self.embed(input_ids))
        return self.pooler(hidden[:, 0])


def _padded_batches() -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(3)
    out = []
    for lengths in ([5, 2, 7], [1, 7, 3]):
        mask = (torch.arange(7) < torch.tensor(lengths)[:, None]).long()
        ids = torch.randint(1, 20, (3, 7), generator=gen) * mask  # padding is token 0
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


@pytest.mark.parametrize("sequential", [False, True])
def test_padding_positions_are_left_out_of_a_token_layers_statistics(sequential):
    """They were counted: 41% of MiniLM's calibration rows, which GPTQ, AWQ and bias correction fitted to though the
    quality metrics never score those positions."""
    model, data = _Tokens(), _padded_batches()
    layers = find_layers(model)
    if sequential:
        stats = capture_sequential(model, layers, data, lambda name, _: get_module(model, name).weight.detach().clone())
    else:
        stats = capture_stats(model, layers, data)
    with torch.no_grad():
        real = torch.cat([model.embed(b["input_ids"])[b["attention_mask"] != 0] for b in data]).double()
        first = torch.cat([model.dense(model.embed(b["input_ids"]))[:, 0] for b in data]).double()
    dense = stats["dense"]
    assert dense.n_tokens == 25 == real.shape[0]  # of 42 positions
    assert torch.allclose(dense.xtx, real.t() @ real) and torch.allclose(dense.mean, real.mean(0).float(), atol=1e-6)
    assert dense.samples.shape[0] == 25
    assert stats["pooler"].n_tokens == 6 and torch.allclose(stats["pooler"].xtx, first.t() @ first, rtol=1e-5)  # not per token


def test_a_tuple_batchs_attention_mask_leaves_padding_out_as_a_dicts_does():
    """A DataLoader over a TensorDataset of ids and masks yields [ids, mask]: the mask went unseen, and every padded
    position counted in the statistics."""
    model, data = _Tokens(), _padded_batches()
    as_dict = capture_stats(model, find_layers(model), data)["dense"]
    as_list = capture_stats(model, find_layers(model), [[b["input_ids"], b["attention_mask"]] for b in data])["dense"]
    assert as_list.n_tokens == as_dict.n_tokens == 25 and torch.equal(as_list.xtx, as_dict.xtx)


def test_a_calibration_batch_of_padding_only_adds_nothing():
    model, data = _Tokens(), _padded_batches()
    empty = {"input_ids": torch.zeros(2, 7, dtype=torch.long), "attention_mask": torch.zeros(2, 7, dtype=torch.long)}
    with_empty = capture_stats(model, find_layers(model), [*data, empty])["dense"]
    assert with_empty.n_tokens == 25 and torch.equal(with_empty.xtx, capture_stats(model, find_layers(model), data)["dense"].xtx)


def test_output_error_matches_the_real_layer_output():
    model, data = mlp(), batches()
    stats = capture_stats(model, find_layers(model), data)["0"]
    w = weight_2d(model[0])
    w_hat = w + 0.01 * torch.randn_like(w)
    x = torch.cat(data)
    direct = float((x @ (w_hat - w).t()).pow(2).sum()) / x.shape[0]
    assert stats.output_error(w, w_hat) == pytest.approx(direct, rel=1e-5)


def test_conv_inputs_are_unfolded_like_the_weight_view():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1, stride=2))
    x = torch.randn(4, 3, 9, 9)
    stats = capture_stats(model, find_layers(model), [x])["0"]
    conv = model[0]
    assert stats.in_features == 27
    w = weight_2d(conv)
    w_hat = w + 0.05 * torch.randn_like(w)
    with torch.no_grad():
        y = conv(x)
        conv.weight.data = to_native(conv, w_hat)
        y_hat = conv(x)
    n_rows = 4 * 5 * 5  # output positions
    direct = float((y_hat - y).pow(2).sum()) / n_rows
    assert stats.n_tokens == n_rows
    assert stats.output_error(w, w_hat) == pytest.approx(direct, rel=1e-4)


@pytest.mark.parametrize("conv", [nn.Conv2d, nn.Conv1d])
def test_a_valid_padded_conv_is_unfolded_as_one_of_zero_padding(conv):
    """padding="valid" is padding=0 under another name: it was refused for data-driven methods with "same"."""
    torch.manual_seed(0)
    valid, zero = nn.Sequential(conv(3, 5, 3, padding="valid")), nn.Sequential(conv(3, 5, 3, padding=0))
    zero.load_state_dict(valid.state_dict())
    x = torch.randn(2, 3, 7, 7) if conv is nn.Conv2d else torch.randn(2, 3, 9)
    assert not find_layers(valid)[0].no_rows
    got, want = (capture_stats(m, find_layers(m), [x])["0"] for m in (valid, zero))
    assert got.n_tokens == want.n_tokens == 2 * (25 if conv is nn.Conv2d else 7)
    w = weight_2d(valid[0])
    w_hat = w + 0.05 * torch.randn_like(w)
    assert got.output_error(w, w_hat) == pytest.approx(want.output_error(w, w_hat), rel=1e-6)


def test_grouped_conv_is_refused():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4))
    with pytest.raises(AutoqError, match="grouped"):
        capture_stats(model, find_layers(model), [torch.randn(1, 4, 6, 6)])


@pytest.mark.parametrize("capture", ["stats", "sequential"])
def test_a_batch_the_model_cannot_take_is_named(capture):
    model = mlp()
    data = [*batches(2), torch.randn(5, 11)]
    with pytest.raises(AutoqError, match=r"the model fails on calibration batch 2 \(RuntimeError: "):
        if capture == "stats":
            capture_stats(model, find_layers(model), data)
        else:
            capture_sequential(model, find_layers(model), data, lambda name, stats: get_module(model, name).weight.data)


def test_layer_that_never_runs_is_named():
    model = nn.ModuleDict({"used": nn.Linear(4, 4), "unused": nn.Linear(4, 4)})
    model.forward = lambda x: model["used"](x)  # type: ignore[method-assign]
    with pytest.raises(AutoqError, match="unused"):
        capture_stats(model, find_layers(model), [torch.randn(2, 4)])


def test_sequential_inputs_come_from_quantized_earlier_layers():
    model, data = mlp(), batches()
    layers = find_layers(model)
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    seen = []

    def zero_out(name, stats):
        seen.append(name)
        return torch.zeros_like(get_module(model, name).weight)  # a drastic "quantizer"

    seq = capture_sequential(model, layers, data, zero_out)
    flat = capture_stats(model, layers, data)
    assert seen == ["0", "2"]
    assert torch.allclose(seq["0"].xtx, flat["0"].xtx)  # the first layer sees the float input
    constant = torch.relu(model[0].bias.detach()).double()  # layer 0 zeroed: its output is relu(bias) for every row
    assert torch.allclose(seq["2"].xtx, 120 * torch.outer(constant, constant))
    assert not torch.allclose(flat["2"].xtx, seq["2"].xtx)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name])  # weights restored


def test_sequential_capture_follows_the_order_layers_run_in_not_the_order_they_are_defined_in():
    class HeadFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(8, 3)  # defined first, runs last
            self.body = nn.Linear(6, 8)

        def forward(self, x):
            return self.head(torch.relu(self.body(x)))

    torch.manual_seed(0)
    model, data = HeadFirst(), [torch.randn(10, 6) for _ in range(3)]
    layers = find_layers(model)
    assert [layer.name for layer in layers] == ["head", "body"]
    seen = []

    def zero_out(name, stats):
        seen.append(name)
        return torch.zeros_like(get_module(model, name).weight)

    seq = capture_sequential(model, layers, data, zero_out)
    assert seen == ["body", "head"]
    constant = torch.relu(model.body.bias.detach()).double()  # body zeroed before head's capture: its output is relu(bias)
    assert torch.allclose(seq["head"].xtx, 30 * torch.outer(constant, constant))


def test_layers_no_pass_calls_come_last_in_the_order_they_are_defined():
    from autoq.model.capture import execution_order

    class Spare(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.unused, self.head, self.other, self.body = nn.Linear(6, 6), nn.Linear(8, 3), nn.Linear(6, 6), nn.Linear(6, 8)

        def forward(self, x):
            return self.head(torch.relu(self.body(x)))

    model = Spare()
    layers = find_layers(model)
    order, again = execution_order(model, layers, [torch.randn(4, 6)])
    assert [layers[i].name for i in order] == ["body", "head", "unused", "other"] and not again


def test_calibration_stats_capture_lazily_once():
    model, data = mlp(), batches()
    calls = []
    model[0].register_forward_hook(lambda *a: calls.append(1))
    stats = CalibrationStats(model, find_layers(model), data)
    assert calls == []
    stats.get("0")
    stats.get("2")
    assert len(calls) == len(data)
    with pytest.raises(AutoqError, match="nope"):
        stats.get("nope")


def test_low_rank_loss_factor_is_deterministic_and_leaves_the_global_rng_alone():
    """Wide layers use a randomized sketch; it must be the same every call (export re-quantizes AWQ and
    AdaRound and must get the search's codes) without touching the caller's random stream."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 8))
    stats = capture_stats(model, find_layers(model), [torch.randn(200, 40) @ torch.randn(40, 40)])["0"]
    state = torch.get_rng_state()
    # the GPUs' seeds: torch.manual_seed seeds them too, queued until CUDA starts (this test's own call above is there)
    queued = list(torch.cuda._lazy_seed_tracker.get_calls())
    f1, f2 = stats.loss_factor(16), stats.loss_factor(16)
    assert torch.equal(f1.rows, f2.rows) and f1.tail == f2.tail and f1.rows.shape == (16, 40) and f1.tail > 0
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.cuda.is_initialized() or list(torch.cuda._lazy_seed_tracker.get_calls()) == queued


def test_the_low_rank_sketch_is_its_own_while_another_thread_seeds_the_global_rng():
    """The sketch was drawn from the global RNG, seeded and put back around it: a thread seeding it meanwhile (another
    search of an outer study's n_jobs) changed the factor, and an export's codes then differed from the search's."""
    import threading

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 8))
    stats = capture_stats(model, find_layers(model), [torch.randn(400, 256) @ torch.randn(256, 256)])["0"]
    factor = stats.loss_factor(16)
    torch.manual_seed(0)  # the numbers torch.svd_lowrank gives from seed 0, as before the sketch had its own generator
    u, top, _ = torch.svd_lowrank(stats.hessian(torch.float64).float(), q=16, niter=4)
    assert torch.equal(factor.rows, (u * (top.clamp_min(0) - factor.tail).clamp_min(0).sqrt()).t())
    stop = threading.Event()

    def seeding() -> None:
        seed = 0
        while not stop.is_set():
            seed += 1
            torch.manual_seed(seed)

    other = threading.Thread(target=seeding)
    other.start()
    try:
        factors = [stats.loss_factor(16).rows for _ in range(200)]
    finally:
        stop.set()
        other.join()
    assert all(torch.equal(f, factor.rows) for f in factors)


@pytest.mark.parametrize("n_in, max_rows", [(24, 32), (96, 16)])
def test_loss_factor_gives_the_layer_output_error_and_its_gradient(n_in, max_rows):
    """What AWQ and AdaRound minimise: exact through the Cholesky factor up to ``max_rows`` inputs; above, the
    isotropic tail stands in for the spectrum the sketch leaves out (here most of it: without the tail the
    error would be about a fifth of the true one; with the tail also over the sketched directions, 13% over)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(n_in, 6))
    x = torch.randn(400, n_in) * torch.linspace(1.0, 2.0, n_in)  # a slowly falling spectrum, no small rank
    stats = capture_stats(model, find_layers(model), [x])["0"]
    factor = stats.loss_factor(max_rows)
    d = torch.randn(300, n_in)  # many error rows: over random directions the tail is right on average
    exact = stats.output_error(torch.zeros_like(d), d)
    assert (factor.tail > 0) == (n_in > max_rows)
    assert factor.error(d) == pytest.approx(exact, rel=1e-4 if n_in <= max_rows else 0.03)
    if n_in > max_rows:
        assert float((d @ factor.rows.t()).pow(2).sum()) < 0.5 * exact  # the tail carries most of it
    d_var = d.clone().requires_grad_(True)
    h = stats.hessian(torch.float32)
    ((d_var @ h) * d_var).sum().backward()
    grad = factor.half_grad(d) * 2
    cos = torch.nn.functional.cosine_similarity(grad.reshape(1, -1), d_var.grad.reshape(1, -1))
    assert float(cos) > (0.9999 if n_in <= max_rows else 0.8)


@pytest.mark.parametrize("sequential", [False, True])
def test_a_non_finite_layer_input_names_the_layer_and_the_batch(sequential):
    """Finite inputs, a model that makes Inf from them: the error named neither the layer nor the batch."""
    model = mlp()
    data = batches()
    with torch.no_grad():
        model[0].weight.abs_().mul_(100)
        data[2][0] = 1e37  # finite, and overflows in the first layer's output
    layers = find_layers(model)
    with pytest.raises(AutoqError, match=r"the input of layer '2' holds NaN or Inf on calibration batch 2"):
        if sequential:
            capture_sequential(model, layers, data, lambda name, stats: get_module(model, name).weight.data)
        else:
            capture_stats(model, layers, data)


class _Branchy(nn.Module):
    """``hi`` runs only on a batch whose mean is positive; ``never`` never runs."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lo, self.hi, self.never = nn.Linear(12, 4), nn.Linear(12, 4), nn.Linear(12, 4)

    def forward(self, x):
        return self.hi(x) if float(x.mean()) > 0 else self.lo(x)


def test_unreached_names_the_layers_no_batch_calls_and_stops_once_all_were():
    from autoq.model.capture import unreached

    model, layers = _Branchy(), find_layers(_Branchy())
    neg, pos = -torch.ones(2, 12), torch.ones(2, 12)
    assert unreached(model, layers, [neg]) == ["hi", "never"]
    assert unreached(model, layers, [neg, pos]) == ["never"]  # a branch a later batch takes counts
    calls = []
    handle = model.register_forward_pre_hook(lambda m, args: calls.append(1))
    assert unreached(model, [layers[0], layers[1]], [neg, pos, pos, pos]) == [] and len(calls) == 2  # not the last two batches
    handle.remove()


def test_stats_leave_an_uncalled_layer_out_and_say_what_to_do_for_it():
    """The whole capture failed on it ("the layer saw no input"), even for the layers the data reached."""
    model, data = _Branchy(), [-torch.ones(3, 12)]
    with pytest.raises(AutoqError, match="layer 'hi': the layer saw no input"):
        capture_stats(model, find_layers(model), data)  # as before for a direct call
    stats = CalibrationStats(model, find_layers(model), data)
    assert stats.get("lo").n_tokens == 3
    with pytest.raises(AutoqError, match=r"layer 'never': a layer the model never calls on the calibration batches, so data-driven methods cannot "
                                         r"run on it; give it a data-free method \(rtn-mse, say\), or skip it"):
        stats.get("never")
    sequential = CalibrationStats(model, find_layers(model), data, sequential=True)
    assert set(sequential.sweep(lambda name, s: get_module(model, name).weight.detach().clone())) == {"lo"}


class _Reused(nn.Module):
    """``shared`` runs twice a forward; ``head``, defined first, runs last."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.head, self.first, self.shared = nn.Linear(8, 3), nn.Linear(12, 8), nn.Linear(8, 8)

    def forward(self, x):
        return self.head(torch.relu(self.shared(torch.relu(self.shared(torch.relu(self.first(x)))))))


def test_a_sequential_capture_counts_every_call_of_a_reused_layer():
    """It stopped the pass at the first call: GPTQ and the like in a --sequential search calibrated a reused layer on half
    its inputs, where the float capture saw both."""
    model, data = _Reused(), batches(n=2, rows=10)
    layers = find_layers(model)
    same = capture_sequential(model, layers, data, lambda name, _: get_module(model, name).weight.detach().clone())
    floats = capture_stats(model, layers, data)
    for name in ("first", "shared", "head"):
        assert same[name].n_tokens == floats[name].n_tokens and torch.allclose(same[name].xtx, floats[name].xtx)
    assert floats["shared"].n_tokens == 40


class _LoopsOnLarge(nn.Module):
    """``shared`` runs once on a batch of small inputs, three times on one of large inputs."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.first, self.shared = nn.Linear(12, 8), nn.Linear(8, 8)

    def forward(self, x):
        h = self.first(x)
        for _ in range(3 if float(x.abs().mean()) > 1 else 1):
            h = self.shared(torch.tanh(h))
        return h


def test_a_layer_reused_only_on_a_later_batch_counts_every_call_too():
    """Reuse was read from the first batch alone: a layer looped over only for some inputs was cut short on the rest."""
    model = _LoopsOnLarge()
    data = [0.1 * torch.ones(4, 12), 5 * torch.ones(4, 12)]
    layers = find_layers(model)
    same = capture_sequential(model, layers, data, lambda name, _: get_module(model, name).weight.detach().clone())
    assert same["shared"].n_tokens == capture_stats(model, layers, data)["shared"].n_tokens == 16
