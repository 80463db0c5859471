"""Every registered metric on tiny models: known answers, brute force, and a conformance check."""

from __future__ import annotations

import copy
import math
import time

import pytest
import torch
from tiny_models import ALL_ROWS, mlp, space_for
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from autoq.choice import Assignment, LayerChoice
from autoq.errors import AutoqError
from autoq.evaluate import QuantCache, quantize_layer
from autoq.model import find_layers
from autoq.model.capture import CalibrationStats
from autoq.search_spaces import load_preset
from autoq.sensitivity import compute_table, get_metric, metric_names
from autoq.sensitivity.registry import resolve_settings
from autoq.space import SearchSpace


def linear_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(40, 5)).eval()


def inputs(rows: int = 16, features: int = 40, n: int = 2, seed: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(rows, features, generator=gen) for _ in range(n)]


@pytest.mark.parametrize("metric", ["kl", "mse", "sqnr"])
@torch.no_grad()
def test_forward_metrics_on_one_linear_layer_have_closed_forms(metric):
    model, batches = linear_model(), inputs()
    space = space_for(model)
    kind = {"output_kind": "real"} if metric == "kl" else {}  # mse and sqnr compare outputs as they are
    table = compute_table(model, batches, space.layers, space.options, metric, {**ALL_ROWS, **kind}, use_cache=False, progress=False)
    x = torch.cat(batches).double()
    layer = model[0]
    for choice in space.options[0]:  # the metric runs in float32, the closed form in float64
        dw = quantize_layer(layer, choice).double() - layer.weight.double()
        noise = (x @ dw.T).pow(2)
        expected = {
            "mse": noise.mean(),
            "kl": 0.5 * noise.sum(1).mean(),  # unit-variance Gaussian KL per row
            "sqnr": noise.sum() / (x @ layer.weight.double().T + layer.bias.double()).pow(2).sum(),
        }[metric]
        assert table.score("0", choice.name) == pytest.approx(float(expected), rel=1e-4)


# beyond the default space's weights: bias correction's bias, SmoothQuant's input scale, static and dynamic activations
EVERY_PART = ("int4-ch-asym:bias-correction", "int8-ch-sym:smoothquant+a8-tensor", "int8-ch-sym:rtn-minmax+a8-token",
              "int4-ch-sym:smoothquant+a4-tensor", "int8-ch-sym:rtn-minmax", "int4-g128-asym:awq")


@pytest.mark.parametrize("space_name", ["default", "every-part"])
def test_kl_with_all_options_in_one_pass_matches_one_layer_at_a_time_by_brute_force(space_name):
    """The stacked pass scores each option as the search's cache applies it to one layer: for activation formats
    and bias correction too, which a weight-only score would not see."""
    model, batches = mlp(), inputs(features=6, n=3)
    space = space_for(model)
    layers = space.layers
    options = space.options if space_name == "default" else [[LayerChoice.from_name(n) for n in EVERY_PART] for _ in layers]
    table = compute_table(model, batches, layers, options, "kl", {**ALL_ROWS, "options_per_pass": 5}, use_cache=False, progress=False)
    cache = QuantCache(model, CalibrationStats(model, layers, batches))
    with torch.no_grad():
        ref = torch.cat([model(b) for b in batches]).double()
        for layer, layer_options in zip(layers, options):
            for choice in layer_options:
                with cache.apply(Assignment(((layer.name, choice),))):
                    out = torch.cat([model(b) for b in batches]).double()
                p = torch.log_softmax(ref, -1)
                kl = (p.exp() * (p - torch.log_softmax(out, -1))).sum(-1).mean()
                assert table.score(layer.name, choice.name) == pytest.approx(float(kl), rel=1e-3, abs=1e-10)


class SeqFirstInside(nn.Module):
    """A batch-first model around a default (sequence-first) encoder layer: its linear layers see the batch on dim 1."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        return self.head(self.enc(x.transpose(0, 1)).transpose(0, 1))


class SeqFirst(nn.Module):
    """Takes (time, batch, features): copies stacked on dim 0 would be one longer sequence, attended across (after
    ``proj``, whose copies differ)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(16, 16)
        self.enc = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0)

    def forward(self, x):
        return self.enc(self.proj(x))


class SeqMajorFlat(nn.Module):
    """Batch-first, with an encoder layer and a linear layer run on the sequence-major (T*B, F) view: dim 0 of their
    input is copies-times-rows long, but the copies are interleaved per position (chunking it mixed the options:
    fp16 scored 1.2e-4 where one pass per option gives 7.5e-10)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.mid = nn.Linear(16, 16)
        self.enc = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        b, t, f = x.shape
        h = torch.tanh(self.mid(x.transpose(0, 1).reshape(t * b, f))).reshape(t, b, f)
        return self.head(self.enc(h).transpose(0, 1))


@pytest.mark.parametrize("n_batches, rows", [(2, 8), (1, 8), (1, 1)])
@pytest.mark.parametrize("make", [SeqFirstInside, SeqFirst, SeqMajorFlat])
def test_forward_metrics_score_what_quantizing_the_layer_does_whatever_axis_holds_the_batch(make, n_batches, rows):
    """Includes ``self_attn.out_proj``, whose weight nn.MultiheadAttention uses without calling its forward. With
    one batch there is no second one to test the stacking with: its two halves are; one of one row has no halves."""
    model = make().eval()
    gen = torch.Generator().manual_seed(2)
    batches = [torch.randn(rows, 6, 16, generator=gen) for _ in range(n_batches)]
    layers = find_layers(model)
    assert "enc.self_attn.out_proj" in [layer.name for layer in layers]
    options = [[LayerChoice.from_name(n) for n in ("int2-ch-asym:rtn-mse", "int8-ch-asym:rtn-mse", "int4-ch-sym:rtn-minmax+a8-token")]
               for _ in layers]
    table = compute_table(model, batches, layers, options, "mse", {**ALL_ROWS, "options_per_pass": 3}, use_cache=False, progress=False)
    cache = QuantCache(model)
    with torch.no_grad():
        ref = [model(b) for b in batches]
        for layer, layer_options in zip(layers, options):
            for choice in layer_options:
                with cache.apply(Assignment(((layer.name, choice),))):
                    mse = sum(float((model(b) - r).double().pow(2).sum()) for b, r in zip(batches, ref)) / sum(r.numel() for r in ref)
                assert mse > 0 and table.score(layer.name, choice.name) == pytest.approx(mse, rel=1e-3), (layer.name, choice.name)


class Positions(nn.Module):
    """Takes ``position_ids`` of shape (1, T), broadcast over the batch, as Hugging Face models accept them."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.pos = nn.Embedding(20, 8), nn.Embedding(10, 8)
        self.l1, self.head = nn.Linear(8, 8), nn.Linear(8, 6)

    def forward(self, input_ids, position_ids):
        return self.head(torch.tanh(self.l1(self.emb(input_ids) + self.pos(position_ids))))


@pytest.mark.parametrize("rows, offsets", [(3, (0,)), (8, (0, 2))], ids=["one-batch-of-3", "two-windows"])
def test_forward_metrics_score_batches_whose_broadcast_tensors_cannot_be_joined(rows, offsets):
    """One batch of 3 rows is probed in halves of 1 and 2 rows, where a (1, T) tensor read as one row per example in
    the first; two batches of other position windows cannot be one batch: both were refused as the user's data."""
    model = Positions().eval()
    gen = torch.Generator().manual_seed(0)
    batches = [{"input_ids": torch.randint(0, 20, (rows, 5), generator=gen), "position_ids": torch.arange(5)[None] + o} for o in offsets]
    space = space_for(model)
    tables = [compute_table(model, batches, space.layers, space.options, "kl", {**ALL_ROWS, "options_per_pass": per_pass}, use_cache=False,
                            progress=False) for per_pass in (16, 1)]
    scores = [[t.score(layer.name, c.name) for layer, opts in zip(space.layers, space.options) for c in opts] for t in tables]
    assert max(scores[0]) > 0 and scores[0] == pytest.approx(scores[1], rel=1e-4, abs=1e-12)


@pytest.mark.parametrize("metric", ["kl", "fisher", "hessian"])
@pytest.mark.parametrize("settings", [{}, ALL_ROWS])
def test_a_batch_tensor_that_broadcasts_over_the_rows_is_kept_whole(metric, settings):
    """A (1, T) position_ids was cut to (0, T) when a batch was re-cut into rows_per_batch, and stacked beside the real
    rows when options shared a pass: a raw RuntimeError, or the search's seeding skipped with a warning."""
    model = Positions().eval()
    gen = torch.Generator().manual_seed(0)
    batches = [{"input_ids": torch.randint(0, 20, (40, 5), generator=gen), "position_ids": torch.arange(5)[None]} for _ in range(2)]
    space = space_for(model)
    extra = {"max_iter": 4} if metric == "hessian" else {}
    table = compute_table(model, batches, space.layers, space.options, metric, {**settings, **extra}, use_cache=False, progress=False)
    scores = [table.score(layer.name, c.name) for layer, opts in zip(space.layers, space.options) for c in opts]
    assert all(s >= 0 for s in scores) and max(scores) > 0
    if metric == "kl":
        alone = compute_table(model, batches, space.layers, space.options, metric, {**settings, "options_per_pass": 1},
                              use_cache=False, progress=False)
        assert scores == pytest.approx([alone.score(layer.name, c.name) for layer, opts in zip(space.layers, space.options) for c in opts],
                                       rel=1e-4, abs=1e-12)


def test_rows_are_counted_past_a_broadcast_tensor_and_mixed_batches_are_refused():
    from autoq.sensitivity.inputs import batch_rows, concat_rows, repeat_rows, subsample, take_rows

    batch = {"position_ids": torch.arange(5)[None], "input_ids": torch.zeros(40, 5, dtype=torch.long)}
    assert batch_rows(batch) == 40 and batch_rows(torch.zeros(1, 3)) == 1
    cut = take_rows(batch, 8, 24)
    assert cut["input_ids"].shape == (16, 5) and cut["position_ids"] is batch["position_ids"]
    assert [b["input_ids"].shape[0] for b in subsample([batch], 20, 8)] == [8, 8, 4]
    assert repeat_rows(batch, 3)["input_ids"].shape == (120, 5) and repeat_rows(batch, 3)["position_ids"].shape == (1, 5)
    assert concat_rows([batch, batch])["input_ids"].shape == (80, 5)
    one = take_rows(batch, 0, 1)  # its (1, 5) position_ids may be one row or broadcast: joined with a broadcast one, kept once
    joined = concat_rows([one, take_rows(batch, 1, 3)])
    assert joined["input_ids"].shape == (3, 5) and joined["position_ids"].shape == (1, 5)
    shifted = {**batch, "position_ids": batch["position_ids"] + 1}
    with pytest.raises(AutoqError, match=r"broadcast with different values.*the same in every batch"):
        concat_rows([batch, shifted])


class Masked(nn.Module):
    """Takes keyword inputs like a Hugging Face model and returns ``last_hidden_state``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(40, 6)

    def forward(self, x, attention_mask):
        return {"last_hidden_state": self.proj(x)}


def test_padding_positions_do_not_count():
    model = Masked().eval()
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 7, 40, generator=gen)
    mask = torch.ones(4, 7, dtype=torch.long)
    mask[:, 4:] = 0
    space = SearchSpace.build(load_preset("default"), find_layers(model))
    scores = {}
    for padded in (x, torch.cat([x[:, :4], 100 * torch.randn(4, 3, 40, generator=gen)], 1)):
        table = compute_table(model, [{"x": padded, "attention_mask": mask}], space.layers, space.options, "mse", ALL_ROWS, use_cache=False, progress=False)
        scores[len(scores)] = [e.score for e in table.entries]
    assert scores[0] == pytest.approx(scores[1], rel=1e-9)


@pytest.mark.parametrize("metric", ["kl", "mse", "sqnr", "fisher", "hessian"])
def test_a_tuple_batchs_attention_mask_leaves_padding_out_as_a_dicts_does(metric):
    """A DataLoader over a TensorDataset yields [x, mask], which the model takes as model(x, attention_mask): the mask
    went unseen, and the padding's large outputs moved the scores by up to 60%."""
    model = Masked().eval()
    gen = torch.Generator().manual_seed(2)
    mask = torch.ones(4, 7, dtype=torch.long)
    mask[:, 4:] = 0
    x = torch.cat([torch.randn(4, 4, 40, generator=gen), 100 * torch.randn(4, 3, 40, generator=gen)], 1)
    space = SearchSpace.build(load_preset("default"), find_layers(model))
    scores = [[e.score for e in compute_table(model, [batch], space.layers, space.options, metric, ALL_ROWS, use_cache=False,
                                              progress=False).entries] for batch in ({"x": x, "attention_mask": mask}, [x, mask])]
    assert scores[1] == pytest.approx(scores[0], rel=1e-9)


class NanPadded(Masked):
    """`Masked` with NaN at its padded positions, as a fully masked attention row can give."""

    def forward(self, x, attention_mask):
        y = self.proj(x)
        return {"last_hidden_state": torch.where(attention_mask[..., None].bool(), y, float("nan"))}


@pytest.mark.parametrize("metric", ["kl", "mse", "sqnr", "fisher"])
def test_nan_at_padded_positions_does_not_count(metric):
    """A NaN where the mask is 0 was multiplied by 0 into a NaN score, refused as 'score ... is nan'."""
    gen = torch.Generator().manual_seed(2)
    mask = torch.ones(4, 7, dtype=torch.long)
    mask[:, 4:] = 0
    batch = {"x": torch.randn(4, 7, 40, generator=gen), "attention_mask": mask}
    space = SearchSpace.build(load_preset("default"), find_layers(Masked()))
    scores = [[e.score for e in compute_table(model.eval(), [batch], space.layers, space.options, metric, ALL_ROWS, use_cache=False,
                                              progress=False).entries] for model in (Masked(), NanPadded())]
    assert scores[1] == pytest.approx(scores[0], rel=1e-9)


@pytest.mark.parametrize("metric", ["fisher", "mse"])
def test_padding_positions_do_not_count_in_inputs_and_labels_batches(metric):
    """With ``loss=`` the batches are ``(inputs, labels)``: fisher looked for the attention mask in the pair, found none,
    and counted the padding (147x the score of the same inputs given alone)."""
    model = Masked().eval()
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 7, 40, generator=gen)
    mask = torch.ones(4, 7, dtype=torch.long)
    mask[:, 4:] = 0
    padded = {"x": torch.cat([x[:, :4], 100 * torch.randn(4, 3, 40, generator=gen)], 1), "attention_mask": mask}
    space = SearchSpace.build(load_preset("default"), find_layers(model))
    alone = compute_table(model, [padded], space.layers, space.options, metric, ALL_ROWS, use_cache=False, progress=False)
    paired = compute_table(model, [(padded, torch.zeros(4, 7))], space.layers, space.options, metric, ALL_ROWS, use_cache=False,
                           progress=False, loss=lambda out, batch: out["last_hidden_state"].pow(2).mean())
    assert [e.score for e in paired.entries] == pytest.approx([e.score for e in alone.entries], rel=1e-9)


@torch.no_grad()
def test_sampled_fisher_matches_its_closed_form_on_one_linear_layer():
    """Real output, unit-Gaussian targets: F_ij = mean over rows of x_j^2."""
    model, batches = linear_model(), inputs()
    space = space_for(model)
    table = compute_table(model, batches, space.layers, space.options, "fisher", {**ALL_ROWS, "output_kind": "real", "draws": 300}, use_cache=False, progress=False)
    x = torch.cat(batches).double()
    fisher = x.pow(2).mean(0).expand(5, 40)
    for choice in space.options[0]:
        dw = quantize_layer(model[0], choice).double() - model[0].weight.double()
        assert table.score("0", choice.name) == pytest.approx(float((fisher * dw.pow(2)).sum()), rel=0.1)


def test_fisher_and_hessian_traces_agree_at_full_precision():
    """For the KL to the full-precision output both estimate the Gauss-Newton trace."""
    model, batches = mlp(seed=4), inputs(features=6, n=2, seed=7)
    space = space_for(model)
    fisher = compute_table(model, batches, space.layers, space.options, "fisher", {**ALL_ROWS, "draws": 400}, use_cache=False, progress=False)
    hessian = compute_table(model, batches, space.layers, space.options, "hessian", {**ALL_ROWS, "max_iter": 2000, "tol": 0.01, "probe": "layerwise"},
                            use_cache=False, progress=False)
    for name in space.names:
        assert fisher.stats(name)["fisher_trace"] == pytest.approx(hessian.stats(name)["trace"], rel=0.1)


@pytest.mark.parametrize("metric", metric_names())
def test_every_metric_scores_every_option_and_more_error_scores_higher(metric):
    model, batches = mlp(), inputs(features=6, n=2)
    space = space_for(model)
    extra = {"max_iter": 200} if metric == "hessian" else {"draws": 50} if metric == "fisher" else {}
    start = time.perf_counter()
    table = compute_table(model, batches, space.layers, space.options, metric, {**ALL_ROWS, **extra}, use_cache=False, progress=False)
    assert table.metric == metric and 0 < table.seconds <= time.perf_counter() - start  # the time it took, not a clock's reading
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())  # the model as it was given: no hook left on it
    assert {(e.layer, e.option) for e in table.entries} == {(layer.name, c.name) for layer, opts in zip(space.layers, space.options) for c in opts}
    for layer, labels in zip(space.layers, space.labels):
        two, eight, half = (table.score(layer.name, labels[k].name) for k in ("int2-ch-asym:rtn-mse", "int8-ch-asym:rtn-mse", "fp16"))
        assert two > eight >= 0 and half <= eight


def test_a_setting_a_metric_would_ignore_is_unknown_and_numbers_are_kept_as_their_defaults_kind():
    """mse and sqnr took output_kind and ignored it (each value a new table and file); numpy's int64(8) was 'not a
    whole number', and np.float64(0.5) or tol=1 (not 1.0) missed the table cached for 0.5 or 1.0; hessian's
    min_iter=1 ran as 2."""
    import numpy as np

    for metric in ("mse", "sqnr"):
        with pytest.raises(AutoqError, match=rf"unknown setting\(s\) \['output_kind'\] for sensitivity metric '{metric}'"):
            resolve_settings(get_metric(metric), {"output_kind": "real"})
    kl, hessian = get_metric("kl"), get_metric("hessian")
    plain = resolve_settings(kl, {"n_samples": np.int64(8)})["n_samples"]
    assert plain == 8 and type(plain) is int
    assert repr(resolve_settings(hessian, {"tol": np.float64(0.5)})["tol"]) == "0.5" and repr(resolve_settings(hessian, {"tol": 1})["tol"]) == "1.0"
    with pytest.raises(AutoqError, match=r"setting min_iter=1 of sensitivity metric 'hessian' must be a whole number of at least 2"):
        resolve_settings(hessian, {"min_iter": 1})
    with pytest.raises(AutoqError, match=r"is above max_iter=1; raise max_iter \(--set max_iter=2\) or leave min_iter out$"):
        resolve_settings(hessian, {"min_iter": 2, "max_iter": 1})  # lowering it, as it said, was refused in turn
    assert resolve_settings(hessian, {"max_iter": 1})["max_iter"] == 1


def test_unknown_metric_and_setting_are_clear_errors():
    with pytest.raises(AutoqError, match="unknown sensitivity metric 'hesian'; choose one of kl, sqnr, mse, hessian, fisher"):
        get_metric("hesian")
    model = linear_model()
    space = space_for(model)
    with pytest.raises(AutoqError, match=r"unknown setting\(s\) \['n_sample'\] for sensitivity metric 'kl'"):
        compute_table(model, inputs(), space.layers, space.options, "kl", {"n_sample": 3}, progress=False)
    with pytest.raises(AutoqError, match=r"^setting output_kind='probs' of sensitivity metric 'kl' must be one of auto, logits, real$"):
        compute_table(model, inputs(), space.layers, space.options, "kl", {"output_kind": "probs"}, use_cache=False, progress=False)
    # refused with the other settings, before any model loads (it failed in the metric: `autoq sensitivity` left an empty --out)
    with pytest.raises(AutoqError, match=r"setting probe='both' of sensitivity metric 'hessian' must be one of joint, layerwise"):
        resolve_settings(get_metric("hessian"), {"probe": "both"})
    with pytest.raises(AutoqError, match=r"^setting min_iter=50 of sensitivity metric 'hessian' is above max_iter=40; raise max_iter \(--set max_iter=50\)"):
        resolve_settings(get_metric("hessian"), {"min_iter": 50})  # it stopped at max_iter with no word of min_iter
    assert resolve_settings(get_metric("hessian"), {"min_iter": 50, "max_iter": 50})["min_iter"] == 50
    assert resolve_settings(get_metric("hessian"), {"max_iter": 4})["max_iter"] == 4  # lowered alone: caps the default min_iter
    with pytest.raises(AutoqError, match="compute_table takes one list of options per layer: got 1 layers and 0 option lists"):
        compute_table(model, inputs(), space.layers, space.options[:0], "kl", use_cache=False, progress=False)  # a layer went unscored


def test_a_metric_that_leaves_a_pair_unscored_is_refused(monkeypatch):
    """Its table was cached, and failed only when it seeded a search ('no score for layer ...')."""
    from autoq.sensitivity import registry as metric_registry
    from autoq.sensitivity.registry import MetricOutput, register_metric
    from autoq.sensitivity.table import Entry

    monkeypatch.setattr(metric_registry, "_METRICS", metric_registry._METRICS.copy())
    register_metric("first-only", "scores each layer's first option")(
        lambda inputs, settings, progress=None: MetricOutput(tuple(Entry(layer.name, opts[0].name, 1.0) for layer, opts in zip(inputs.layers, inputs.options))))
    model = linear_model()
    space = space_for(model)
    with pytest.raises(AutoqError, match=r"'first-only' returned no entry for \d+ \(layer, option\) pair\(s\) it was asked to score"):
        compute_table(model, inputs(), space.layers, space.options, "first-only", use_cache=False, progress=False)


def test_gradient_metrics_read_hidden_states_as_real_outputs():
    """``auto`` decides on the raw output: ``last_hidden_state`` is real-valued, not logits."""
    model = Masked().eval()
    gen = torch.Generator().manual_seed(3)
    batch = {"x": torch.randn(4, 5, 40, generator=gen), "attention_mask": torch.ones(4, 5, dtype=torch.long)}
    space = SearchSpace.build(load_preset("default"), find_layers(model))
    tables = [compute_table(model, [batch], space.layers, space.options, "fisher", {**ALL_ROWS, "draws": 3, "output_kind": kind}, use_cache=False, progress=False)
              for kind in ("auto", "real")]
    assert tables[0].entries == tables[1].entries


class Wrapped(nn.Module):
    """A regressor whose one column comes bare, in a dict, or in a Hugging Face output (``num_labels=1``)."""

    def __init__(self, wrap: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.f, self.wrap = nn.Sequential(nn.Linear(40, 16), nn.Tanh(), nn.Linear(16, 1)), wrap

    def forward(self, x):
        y = self.f(x)
        if self.wrap == "dict":
            return {"logits": y}
        return SequenceClassifierOutput(logits=y) if self.wrap == "hf" else y


@pytest.mark.parametrize("wrap", ["bare", "dict", "hf"])
@pytest.mark.parametrize("metric", ["kl", "fisher", "hessian"])
def test_a_one_column_output_is_a_regression_not_a_one_class_softmax(metric, wrap):
    from autoq.sensitivity.inputs import resolve_output_kind

    assert resolve_output_kind("auto", torch.zeros(8, 1)) == "real" and resolve_output_kind("auto", torch.zeros(8)) == "real"
    assert resolve_output_kind("auto", torch.zeros(8, 2)) == "logits"
    assert resolve_output_kind("auto", {"logits": torch.zeros(8, 1)}) == "real"
    assert resolve_output_kind("auto", {"logits": torch.zeros(8, 3)}) == "logits"
    model = Wrapped(wrap).eval()
    space = space_for(model)
    table = compute_table(model, inputs(), space.layers, space.options, metric, {**ALL_ROWS, **({"max_iter": 12} if metric == "hessian" else {})},
                          use_cache=False, progress=False)
    assert all(e.score > 0 for e in table.entries if e.option != "fp16")  # a softmax over one class scored every option 0


class Classifier(nn.Module):
    """A four-class classifier whose logits come bare, as the first of a tuple, or named."""

    def __init__(self, wrap: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.f, self.wrap = nn.Sequential(nn.Linear(40, 16), nn.Tanh(), nn.Linear(16, 4)), wrap

    def forward(self, x):
        y = self.f(x)
        return {"tuple": (y, y.detach().sum()), "list": [y], "dict": {"logits": y}}.get(self.wrap, y)


@pytest.mark.parametrize("metric", ["kl", "fisher", "hessian"])
def test_logits_in_a_tuple_score_as_bare_logits(metric):
    """A classifier returning ``(logits, aux)`` (or a Hugging Face LM with return_dict=False) was scored as a real-valued
    output, half its squared error: 8,000x the KL of the same model returning bare logits, and another layer ranking."""
    settings = {**ALL_ROWS, **({"max_iter": 12} if metric == "hessian" else {})}
    scores = {}
    for wrap in ("bare", "tuple", "list", "dict"):
        model = Classifier(wrap).eval()
        space = space_for(model)
        table = compute_table(model, inputs(), space.layers, space.options, metric, settings, use_cache=False, progress=False)
        scores[wrap] = [e.score for e in table.entries]
    assert scores["tuple"] == pytest.approx(scores["bare"]) and scores["list"] == pytest.approx(scores["bare"])
    assert scores["dict"] == pytest.approx(scores["bare"])


def test_a_class_the_reference_masks_out_adds_nothing_to_kl():
    """A -inf logit (a masked class) has probability 0 in both: it adds 0, not NaN (0 * (-inf - -inf))."""
    from autoq.sensitivity.inputs import divergence

    ref = torch.tensor([[2.0, 0.5, float("-inf")]])
    out = torch.tensor([[1.9, 0.6, float("-inf")]])
    expected = divergence(out[:, :2], ref[:, :2], "logits")
    got = divergence(out, ref, "logits")
    assert torch.isfinite(got).all() and torch.allclose(got, expected) and float(got) > 0


class MaskedLast(nn.Module):
    """A classifier whose last class is masked out with a -inf logit (``mask=False``: the same, unmasked)."""

    def __init__(self, mask: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.mask = nn.Linear(6, 8), nn.Linear(8, 4), mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.b(torch.tanh(self.a(x)))
        return out.masked_fill(torch.tensor([False, False, False, True]), float("-inf")) if self.mask else out


def test_sqnr_leaves_a_masked_class_out_of_the_signal_and_refuses_nan():
    """sqnr squared the -inf logit into the signal (infinite: every option scored 0, and an all-zero table seeded the
    ILP with 'nothing matters'); a NaN in the reference made the signal NaN, and NaN > 0 being false, 0 again."""
    model = MaskedLast().eval()
    space = space_for(model)
    x = torch.randn(24, 6, generator=torch.Generator().manual_seed(1))
    masked = compute_table(model, [x], space.layers, space.options, "sqnr", use_cache=False, progress=False)
    unmasked = MaskedLast(mask=False).eval()
    plain = compute_table(unmasked, [x], space.layers, space.options, "sqnr", use_cache=False, progress=False)
    scores = {(e.layer, e.option): e.score for e in masked.entries}
    assert any(s > 0 for s in scores.values()) and all(s >= 0 for s in scores.values())
    assert len(scores) == len(plain.entries)
    nan_out = NanRow().eval()
    for metric in ("sqnr", "mse", "kl"):
        with pytest.raises(AutoqError, match="is nan"):
            compute_table(nan_out, [x], space.layers, space.options, metric, use_cache=False, progress=False)
    x[3, 2] = float("nan")  # in the data: refused before any metric runs, naming the batch
    for metric in metric_names():
        with pytest.raises(AutoqError, match=r"^calibration batch 0 contains NaN or Inf values \(\d+ of \d+\); drop or clean that batch"):
            compute_table(unmasked, [x], space.layers, space.options, metric, use_cache=False, progress=False)


class NanRow(MaskedLast):
    """Its output holds a NaN the model makes from finite data (an overflow, say)."""

    def __init__(self) -> None:
        super().__init__(mask=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x).clone()
        out[3, 2] = float("nan")
        return out


class WithUnused(nn.Module):
    """Has a layer the output never uses (like MiniLM's pooler under ``last_hidden_state``)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.used, self.unused = nn.Linear(6, 3), nn.Linear(6, 3)

    def forward(self, x):
        return self.used(x)


@pytest.mark.parametrize("metric", metric_names())
def test_a_layer_the_output_does_not_use_scores_zero(metric):
    model = WithUnused().eval()
    space = space_for(model)
    table = compute_table(model, inputs(features=6), space.layers, space.options, metric, {**ALL_ROWS, **({"max_iter": 12} if metric == "hessian" else {})},
                          use_cache=False, progress=False)
    unused = {e.option: e.score for e in table.entries if e.layer == "unused"}
    assert set(unused) == {c.name for c in space.options[space.names.index("unused")]}  # every option scored: all() of none is true
    assert all(score == 0 for score in unused.values())
    assert any(e.score > 0 for e in table.entries if e.layer == "used")


def test_a_layer_the_data_never_reaches_takes_data_free_options_in_a_table():
    """With data-driven options in the space, the capture for them stopped every metric ("the layer saw no input"),
    though with data-free options alone the same layer scores 0."""
    from autoq.evaluate.cache import uncalled_layers
    from autoq.model import mark_unreached

    model, data = WithUnused().eval(), inputs(features=6)
    layers = find_layers(model)
    full = SearchSpace.build(load_preset("full"), layers)
    with pytest.raises(AutoqError, match=r"layer 'unused': a layer the model never calls on the calibration batches, so data-driven methods "
                                         r"cannot run on it; give it a data-free method \(rtn-mse, say\), or skip it"):
        compute_table(model, data, full.layers, full.options, "kl", use_cache=False, progress=False)
    uncalled = uncalled_layers(model, full.layers, full.options, data)
    assert uncalled == ["unused"]
    marked = SearchSpace.build(load_preset("full"), mark_unreached(layers, uncalled))  # as a search and `autoq sensitivity` build it
    table = compute_table(model, data, marked.layers, marked.options, "kl", use_cache=False, progress=False)
    unused = {e.option: e.score for e in table.entries if e.layer == "unused"}
    assert set(unused) == {c.name for c in marked.options[marked.names.index("unused")]} and len(unused) > 1
    assert all(score == 0 for score in unused.values()) and not any(":gptq" in option for option in unused)
    assert any(":gptq" in e.option for e in table.entries if e.layer == "used")


def test_softmax_residuals_have_the_softmax_fisher_as_covariance():
    from autoq.sensitivity.gradient import softmax_residuals

    logits = torch.tensor([[4.0, 0.0, -1.0, 2.0], [9.0, 0.0, 0.0, 0.0]], dtype=torch.float64)  # the second 99.95% sure
    r = softmax_residuals(logits.repeat(20000, 1), torch.Generator().manual_seed(0)).view(20000, 2, 4)
    p = torch.softmax(logits, -1)
    for row in range(2):
        cov = r[:, row].T @ r[:, row] / r.shape[0]
        assert torch.allclose(cov, torch.diag(p[row]) - torch.outer(p[row], p[row]), atol=3e-3)
    assert torch.allclose(r.sum(-1), torch.zeros(20000, 2, dtype=torch.float64), atol=1e-12)  # a softmax moves along sum-zero directions


def test_fisher_of_a_confident_classifier_is_close_to_the_exact_one_with_few_draws():
    """The exact diagonal Fisher sums every class's squared gradient weighted by its probability. With 4 draws of
    sampled labels, a classifier this sure of its answers got 0.00-3.2x of it over 6 seeds (almost every draw is the
    answer itself, whose gradient is tiny); the softmax residuals get 0.9-1.2x."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 5)).eval()
    with torch.no_grad():
        model[2].bias[0] += 7  # every row 99.5% sure
    batches = [torch.randn(16, 12, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    x = torch.cat(batches)
    assert float(torch.softmax(model(x).detach(), -1).max(-1).values.min()) > 0.99
    params = [model[0].weight, model[2].weight]
    exact = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    for row in x:
        logits = model(row[None])[0]
        probs = torch.softmax(logits.detach().double(), -1)
        for y in range(5):
            grads = torch.autograd.grad(-torch.log_softmax(logits, -1)[y], params, retain_graph=True)
            for e, g in zip(exact, grads):
                e += probs[y] * g.double() ** 2
    space = space_for(model)
    for seed in range(6):
        table = compute_table(model, batches, space.layers, space.options, "fisher", {**ALL_ROWS, "draws": 4, "seed": seed}, use_cache=False, progress=False)
        for name, e in zip(("0", "2"), exact):
            assert table.stats(name)["fisher_trace"] == pytest.approx(float(e.sum()) / len(x), rel=0.3)


def test_fisher_of_an_fp16_model_keeps_its_small_entries():
    """The float64 Fisher diagonal is scored in float64: cast to an fp16 model's dtype on the way, entries below
    6e-8 (small inputs, wide layers) flushed to 0 and so did the layer's every score."""
    torch.manual_seed(0)
    half = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10)).half().eval()
    full = copy.deepcopy(half).float()  # the same weights in float32
    gen = torch.Generator().manual_seed(1)
    xs = [0.0005 * torch.randn(32, 64, generator=gen) for _ in range(2)]
    space = space_for(half)
    t16 = compute_table(half, [x.half() for x in xs], space.layers, space.options, "fisher", use_cache=False, progress=False)
    t32 = compute_table(full, xs, space.layers, space.options, "fisher", use_cache=False, progress=False)
    for layer in t16.layers:
        for option in t16.options:
            if option != "fp16":  # measured: within 0.5%
                assert t16.score(layer, option) == pytest.approx(t32.score(layer, option), rel=0.05)


@pytest.mark.parametrize("metric", ["fisher", "hessian"])
def test_the_gradient_metrics_bar_covers_the_scoring_of_every_layer(metric):
    """The bar counted the gradient passes only: on SmolLM2's fisher table it sat full for the 80% of the time that
    quantizing and scoring 210 x 13 (layer, option) pairs took."""
    import io

    from tqdm import tqdm

    from autoq.sensitivity.inputs import Inputs
    from autoq.sensitivity.registry import resolve_settings

    model = mlp()
    space = space_for(model)
    batches = tuple(torch.randn(16, 6, generator=torch.Generator().manual_seed(i)) for i in range(2))
    inputs = Inputs(model, batches, tuple(space.layers), tuple(tuple(o) for o in space.options), None, None).with_stats()
    info = get_metric(metric)
    settings = resolve_settings(info, {"max_iter": 3, "min_iter": 2} if metric == "hessian" else {"draws": 2})
    seen = []

    class Bar(tqdm):
        def update(self, n=1):
            seen.append((self.desc, self.n + n, self.total))
            return super().update(n)

    with Bar(total=info.n_steps(inputs, settings), desc=f"autoq sensitivity {metric}", file=io.StringIO()) as bar:
        info.fn(inputs, settings, bar)
    scoring = [s for s in seen if "scoring layers" in s[0]]
    assert [n for _, n, _ in scoring] == list(range(1, len(space.layers) + 1)) and scoring[-1][2] == len(space.layers)


@pytest.mark.parametrize("metric", ["kl", "mse"])
def test_a_model_whose_output_samples_gets_a_note_that_its_forward_scores_are_noise(metric):
    """Dropout forced on in eval mode: int8 scored below fp16, two runs disagreed, and nothing said so."""

    class Noisy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = mlp()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.dropout(self.body(x), 0.3, training=True)

    torch.manual_seed(0)
    data = [torch.randn(8, 6) for _ in range(2)]
    for model, noted in ((Noisy(), True), (mlp(), False)):
        space = space_for(model)
        table = compute_table(model, data, space.layers, space.options, metric, progress=False, use_cache=False)
        assert any("differs between two unquantized passes" in n for n in table.notes) is noted


@pytest.mark.parametrize("metric", ["kl", "mse", "hessian"])
def test_an_fp16_model_of_more_positions_than_fp16_counts_scores_as_in_fp32(metric):
    """The positions were counted in the model's dtype: 16 rows of 4,200 tokens summed to inf in fp16, and every option
    scored 0 (hessian's default rows_per_batch=32 of 2,048-token rows reaches it too)."""
    torch.manual_seed(0)
    full = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4)).eval()
    space = SearchSpace.build(load_preset("default"), find_layers(full))
    options = [o[:2] for o in space.options]
    x = torch.randn(16, 4200, 8, generator=torch.Generator().manual_seed(1))  # 67,200 positions > fp16's 65,504
    settings = {"max_iter": 3, "min_iter": 2} if metric == "hessian" else {}
    scores = {}
    for name, model, batch in (("fp32", full, x), ("fp16", copy.deepcopy(full).half(), x.half())):
        table = compute_table(model, [batch], space.layers, options, metric, settings, use_cache=False, progress=False)
        scores[name] = torch.tensor([e.score for e in table.entries])
    assert (scores["fp16"] > 0).all()
    assert torch.allclose(scores["fp16"], scores["fp32"], rtol=0.01)


def test_an_image_shaped_output_is_real_valued_not_a_softmax_over_its_width():
    """A segmenter's (B, classes, H, W) logits were read as logits over W: kl compared pixel columns (its two layers'
    ratio moved from 1.11 to 1.70)."""
    from autoq.sensitivity.inputs import resolve_output_kind

    assert resolve_output_kind("auto", torch.zeros(2, 5, 6, 7)) == "real"
    assert resolve_output_kind("auto", {"logits": torch.zeros(2, 5, 6, 7)}) == "real"  # Segformer's, channels first
    assert resolve_output_kind("auto", torch.zeros(2, 12, 32)) == "logits"  # a language model's (B, T, vocabulary)
    assert resolve_output_kind("logits", torch.zeros(2, 5, 6, 7)) == "logits"  # as asked
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 5, 1)).eval()
    space = SearchSpace.build(load_preset("default"), find_layers(model))
    batches = [torch.randn(2, 3, 6, 7, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    table = compute_table(model, batches, space.layers, [o[:2] for o in space.options], "kl", use_cache=False, progress=False)
    assert all(e.score >= 0 for e in table.entries) and any(e.score > 0 for e in table.entries)


def test_fisher_trace_stderr_matches_the_spread_over_seeds():
    """The reported standard error of a layer's Fisher trace is the spread its estimate shows across seeds."""
    model = mlp(seed=4)
    gen = torch.Generator().manual_seed(7)
    batches = [torch.randn(16, 6, generator=gen) for _ in range(4)]
    space = space_for(model)
    tables = [compute_table(model, batches, space.layers, space.options, "fisher", {**ALL_ROWS, "draws": 2, "seed": seed},
                            use_cache=False, progress=False) for seed in range(24)]
    for name in space.names:
        traces = torch.tensor([t.stats(name)["fisher_trace"] for t in tables], dtype=torch.float64)
        reported = sum(t.stats(name)["fisher_trace_stderr"] for t in tables) / len(tables)
        assert 0.6 < float(traces.std()) / reported < 1.6


def test_fisher_notes_a_noisy_trace_and_the_settings_that_shrink_it():
    model = mlp(seed=4)
    gen = torch.Generator().manual_seed(7)
    batches = [torch.randn(16, 6, generator=gen) for _ in range(4)]
    space = space_for(model)

    def notes(draws, use=batches):
        return compute_table(model, use, space.layers, space.options, "fisher", {**ALL_ROWS, "draws": draws}, use_cache=False, progress=False).notes

    one = notes(1, batches[:1])  # one draw of one batch: no spread to estimate from
    assert len(one) == 1 and "one pass" in one[0] and "draws=N" in one[0]
    few = notes(1)  # 4 passes: a trace's standard error is about 30% of it
    assert len(few) == 1 and "standard error of" in few[0] and "not rows_per_batch" in few[0]
    assert notes(32) == ()


class _LeftPaddedAttention(nn.Module):
    """One causal attention head over token embeddings; ``fill`` masks the keys: -inf leaves a left-padded query row
    no key at all, and softmax makes it NaN (at a padded position), ``finfo.min`` a uniform row."""

    def __init__(self, fill: float):
        super().__init__()
        torch.manual_seed(0)
        self.fill = fill
        self.emb, self.head = nn.Embedding(11, 8), nn.Linear(8, 11)
        self.q, self.k, self.v = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, input_ids, attention_mask):
        x = self.emb(input_ids)
        length = x.shape[1]
        scores = self.q(x) @ self.k(x).transpose(1, 2) / 8 ** 0.5
        allowed = torch.tril(torch.ones(length, length, dtype=torch.bool)) & attention_mask.bool()[:, None, :]
        return self.head(scores.masked_fill(~allowed, self.fill).softmax(-1) @ self.v(x))


def _left_padded_batch() -> dict:
    ids = torch.randint(0, 11, (4, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(4, 6, dtype=torch.long)
    mask[0, :2] = 0
    mask[2, :3] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("metric", ["fisher", "hessian"])
def test_gradient_metrics_name_nan_at_padded_positions_as_the_cause(metric):
    """Fisher said a score 'is nan' and hessian blamed an overflow: a padded row's NaN poisons the backward pass."""
    batch = _left_padded_batch()
    settings = {"max_iter": 3, "min_iter": 2} if metric == "hessian" else {"draws": 2}
    def table(fill):
        model = _LeftPaddedAttention(fill).eval()
        space = space_for(model)
        return compute_table(model, [batch], space.layers, space.options, metric, settings, use_cache=False, progress=False)

    with pytest.raises(AutoqError, match=r"NaN: the model.s full-precision output is NaN at 5 padded position\(s\).*torch.finfo\(dtype\).min.*kl, sqnr, mse"):
        table(float("-inf"))
    assert all(math.isfinite(e.score) for e in table(torch.finfo(torch.float32).min).entries)


@pytest.mark.parametrize("metric", ["kl", "mse", "sqnr"])
def test_forward_metrics_do_not_call_nan_at_padding_or_masked_logits_noise(metric):
    """The determinism check compared NaN (a padded row) and -inf (a masked class: inf - inf) unequal to themselves and
    noted that the output 'differs between two unquantized passes', blaming dropout."""
    model = _LeftPaddedAttention(float("-inf")).eval()
    with torch.no_grad():
        model.head.bias[3] = float("-inf")  # a class masked out everywhere
    space = space_for(model)
    table = compute_table(model, [_left_padded_batch()], space.layers, space.options, metric, use_cache=False, progress=False)
    assert not any("differs between two unquantized passes" in n for n in table.notes)
    assert all(math.isfinite(e.score) for e in table.entries)
