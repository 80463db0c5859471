"""Done-when 1: Hutchinson per-layer traces against exact Hessians on a small MLP and a small CNN."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_models import cnn, labelled, mlp, space_for, task_loss
from torch import nn
from torch.func import functional_call

from autoq.errors import AutoqError
from autoq.sensitivity import SensitivityTable, compute_table
from autoq.sensitivity.gradient import divergence_loss, hutchinson
from autoq.sensitivity.inputs import Inputs


def exact_traces(model: nn.Module, names: list[str], loss_of_model) -> list[float]:
    """Trace of each layer's diagonal Hessian block, from the full block formed by autograd."""
    params = dict(model.named_parameters())
    traces = []
    for name in names:
        key = f"{name}.weight"
        w0 = params[key].detach().clone()

        def f(w, key=key):
            return loss_of_model(lambda x: functional_call(model, {**params, key: w}, (x,)))

        h = torch.autograd.functional.hessian(f, w0)
        traces.append(float(h.reshape(w0.numel(), w0.numel()).diagonal().sum()))
    return traces


@pytest.mark.parametrize("make, shape, probe", [(mlp, (6,), "joint"), (mlp, (6,), "layerwise"), (cnn, (1, 6, 6), "layerwise")], ids=["mlp-joint", "mlp-layerwise", "cnn-layerwise"])
def test_hutchinson_matches_exact_traces_on_the_task_loss(make, shape, probe):
    model = make()
    batches = labelled(shape, classes=model[-1].out_features)
    space = space_for(model)
    total = sum(len(b[1]) for b in batches)

    def loss_of_model(forward):
        return sum(task_loss(forward(x), (x, y)) * len(y) / total for x, y in batches)

    exact = exact_traces(model, space.names, loss_of_model)
    table = compute_table(model, batches, space.layers, space.options, "hessian",
                          {"tol": 0.01, "max_iter": 4000, "min_iter": 50, "n_samples": None, "rows_per_batch": None, "probe": probe},
                          loss=task_loss, progress=False)
    for name, truth in zip(space.names, exact):
        stats = table.stats(name)
        assert stats["trace"] == pytest.approx(truth, rel=0.05), name
        assert abs(stats["trace"] - truth) <= 3 * stats["trace_stderr"], (name, stats, truth)
        assert 0 < stats["trace_stderr"] <= 0.03 * abs(stats["trace"])


def test_hutchinson_on_the_kl_to_full_precision_matches_exact():
    """Without labels the loss is the KL to the full-precision logits: zero gradient, Hessian = Fisher."""
    model = mlp(seed=3)
    batches = tuple(x for x, _ in labelled((6,), 4, seed=5))
    space = space_for(model)
    inputs = Inputs(model, batches, space.layers, space.options)
    loss = divergence_loss(inputs, batches, "auto")
    exact = exact_traces(model, space.names, lambda fwd: sum(loss(_Call(fwd), b, i) for i, b in enumerate(batches)))
    params = [m.weight for m in inputs.modules()]
    traces, ses, iters = hutchinson(model, params, batches, loss, tol=0.01, max_iter=4000, min_iter=50, seed=0)
    assert iters < 4000 or max(s / t for s, t in zip(ses, traces)) <= 0.02
    for t, se, truth in zip(traces, ses, exact):
        assert t == pytest.approx(truth, rel=0.05)
        assert abs(t - truth) <= 3 * se


def _mlp_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], i: int) -> torch.Tensor:
    return task_loss(model(batch[0]), batch)


# tol=inf: a positive number the settings accept, met even by one probe's infinite standard error
@pytest.mark.parametrize(("min_iter", "tol", "iters"), [(7, 1e9, 7), (1, 1e9, 2), (1, math.inf, 2)])
def test_hutchinson_takes_at_least_min_iter_probes_and_two_for_a_standard_error(min_iter, tol, iters):
    """A tolerance any estimate meets stops at ``min_iter`` (two at least: one probe has no standard error), never
    before: stopped at 3 probes, a few-probe trace can swap two layers' ranks."""
    model = mlp(seed=3)
    batches = labelled((6,), classes=model[-1].out_features)
    params = [m.weight for m in model if isinstance(m, nn.Linear)]
    _, ses, used = hutchinson(model, params, batches, _mlp_loss, tol=tol, max_iter=40, min_iter=min_iter, seed=0)
    assert used == iters and all(0 < se < float("inf") for se in ses)


def test_hutchinson_stops_at_exactly_max_iter_short_of_its_tolerance() -> None:
    """A tolerance never met stops after max_iter probes, not one more."""
    model = mlp(seed=3)
    params = [m.weight for m in model if isinstance(m, nn.Linear)]
    _, _, used = hutchinson(model, params, labelled((6,), 4), _mlp_loss, tol=1e-12, max_iter=3, min_iter=1, seed=0)
    assert used == 3


def test_hutchinson_standard_error_of_two_probes_is_half_their_difference() -> None:
    """The standard error is the sample deviation over sqrt(n): for two probes s1, s2 it is |s1 - s2| / 2."""
    model = mlp(seed=3)
    params = [m.weight for m in model if isinstance(m, nn.Linear)]
    batches = labelled((6,), 4)
    first, _, one = hutchinson(model, params, batches, _mlp_loss, tol=1e-12, max_iter=1, min_iter=1, seed=0)
    mean, ses, two = hutchinson(model, params, batches, _mlp_loss, tol=1e-12, max_iter=2, min_iter=1, seed=0)
    assert (one, two) == (1, 2)
    for s1, m, se in zip(first, mean, ses):  # the same seed draws the same first probe: s2 = 2 * mean - s1
        assert se == pytest.approx(abs(m - s1), rel=1e-9)


class _Call(nn.Module):
    """A module that runs ``fn``: lets a loss written for modules run with substituted weights."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def test_hessian_score_is_trace_per_weight_times_squared_perturbation():
    model = mlp()
    batches = labelled((6,), 4)
    space = space_for(model)
    table = compute_table(model, batches, space.layers, space.options, "hessian", {"max_iter": 20, "n_samples": None, "rows_per_batch": None},
                          loss=task_loss, progress=False)
    inputs = Inputs(model, tuple(batches), space.layers, space.options)
    for layer, module, options in zip(space.layers, [model[0], model[2], model[4]], space.options):
        stats = table.stats(layer.name)
        for choice, delta in inputs.perturbations(layer, module, options):
            expected = stats["trace"] / module.weight.numel() * float(delta.double().pow(2).sum())
            entry = table.entry(layer.name, choice.name)
            assert entry.score == pytest.approx(expected, rel=1e-9)
            assert entry.stderr == pytest.approx(stats["trace_stderr"] / module.weight.numel() * float(delta.double().pow(2).sum()), rel=1e-9)


def test_a_negative_trace_estimate_scores_zero_not_below_the_other_options():
    """A negative trace (noise, or a loss curving down) would make a layer's coarsest option look best to the ILP."""
    model = mlp()
    batches = labelled((6,), 4)
    space = space_for(model)

    def concave(output, batch):  # negative curvature everywhere: every trace is negative
        return -output.pow(2).mean()

    table = compute_table(model, batches, space.layers, space.options, "hessian", {"max_iter": 12, "n_samples": None, "rows_per_batch": None},
                          loss=concave, use_cache=False, progress=False)
    assert all(table.stats(layer.name)["trace"] < 0 for layer in space.layers)  # the estimates are kept as they are
    assert {e.score for e in table.entries} == {0.0}


def test_an_estimate_stopped_short_of_its_tolerance_says_so(capsys):
    """At max_iter the estimate may be far from tol (13-80% per layer on digits-cnn with the defaults) without a word:
    layers closer than that are ranked by noise."""
    model = mlp()
    batches = labelled((6,), 4)
    space = space_for(model)
    settings = {"n_samples": None, "rows_per_batch": None, "min_iter": 2}
    table = compute_table(model, batches, space.layers, space.options, "hessian", {**settings, "max_iter": 3, "tol": 1e-4},
                          loss=task_loss, use_cache=False, progress=False)
    err = capsys.readouterr().err
    worst = max(table.stats(layer.name)["trace_stderr"] / abs(table.stats(layer.name)["trace"]) for layer in space.layers)
    shown = f"{100 * worst:.2g}%" if worst < 0.1 else f"{100 * worst:.0f}%"
    assert f"hessian stopped at max_iter=3 with a trace's standard error up to {shown} of it" in err and "tol=0.0001" in err
    from autoq.sensitivity.gradient import _share

    assert [_share(r) for r in (0.0029, 0.012, 0.456, 0.99)] == ["0.29%", "1.2%", "46%", "99%"]  # '0%' was below a tol of 0.002
    compute_table(model, batches, space.layers, space.options, "hessian", {**settings, "max_iter": 3, "tol": 1e6}, loss=task_loss,
                  use_cache=False, progress=False)
    assert "hessian stopped" not in capsys.readouterr().err  # within tol at its last iteration: nothing to say



@pytest.mark.parametrize("probe, offered", [("joint", True), ("layerwise", False)])
def test_the_note_offers_the_layerwise_probe_only_to_a_joint_run(probe, offered, capsys):
    """A layerwise run was told '(or probe=layerwise, no cross-layer noise)', the probe it had run with."""
    model = mlp()
    space = space_for(model)
    settings = {"n_samples": None, "rows_per_batch": None, "min_iter": 2, "max_iter": 3, "tol": 1e-4, "probe": probe}
    compute_table(model, labelled((6,), 4), space.layers, space.options, "hessian", settings, loss=task_loss, use_cache=False,
                  progress=False)
    err = capsys.readouterr().err
    assert "hessian stopped at max_iter=3" in err and ("or probe=layerwise" in err) == offered


def test_the_note_stays_with_the_table_and_is_shown_on_every_read(capsys, tmp_path, monkeypatch):
    """Only the run that computed the table said so: read from the cache, or from a file a search is seeded from, the
    ranking came without its warning that it is noise."""
    from autoq.builtin.workload import Workload
    from autoq.engine.seeding import seed_table

    monkeypatch.setenv("AUTOQ_CACHE_DIR", str(tmp_path / "cache"))
    model = mlp()
    space = space_for(model)
    batches = [b[0] for b in labelled((6,), 4)]
    settings = {"n_samples": None, "rows_per_batch": None, "min_iter": 2, "max_iter": 2, "tol": 1e-6}
    first = compute_table(model, batches, space.layers, space.options, "hessian", settings, progress=False)
    err = capsys.readouterr().err
    assert "hessian stopped at max_iter=2" in err and "--set max_iter=N" in err and len(first.notes) == 1
    assert "autoq sensitivity --metric" not in err  # 'autoq sensitivity' itself: its own --set
    again = compute_table(model, batches, space.layers, space.options, "hessian", settings, progress=False)  # from the cache
    assert again.notes == first.notes and "hessian stopped at max_iter=2" in capsys.readouterr().err
    for name in ("t.json", "t.csv"):
        assert SensitivityTable.load(first.save(tmp_path / name)).notes == first.notes
    workload = Workload("mlp", model, batches, lambda m: 1.0, "none")
    seed_table(workload, space, str(tmp_path / "t.json"), progress=False)
    err = capsys.readouterr().err
    assert "hessian stopped at max_iter=2" in err
    # a search has no --set: the note says where the settings go (it named an option 'autoq search' refused)
    assert "(settings of 'autoq sensitivity --metric hessian --set ...', run with this search's --model, --space and --skip: it " \
           "prints the search that seeds from its table, --seed-from DIR/<model>-<metric>.json)" in err


def test_a_nan_batch_stops_hutchinson_at_once_naming_the_batch():
    """NaN never met the tolerance, so every one of max_iter iterations ran (each a double backward over every batch)
    before the score was refused as 'hessian score ... is nan'."""
    model = mlp()
    batches = labelled((6,), classes=4, n_batches=3)
    batches[1][0][3, 2] = float("nan")
    params = [model[0].weight, model[2].weight]
    calls = []

    def loss(m, b, i):
        calls.append(i)
        return task_loss(m(b[0]), b)

    with pytest.raises(AutoqError, match=r"^hessian: a Hessian-vector product is NaN or Inf on batch 1 of the 3 batches of calibration rows it probes"):
        hutchinson(model, params, batches, loss, tol=0.01, max_iter=40, min_iter=10, seed=0, feed=lambda b: b[0])
    assert calls == [0, 1]  # batches 0 and 1 of the first iteration, not 40 x 3
