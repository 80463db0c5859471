"""OutputFidelity and its helpers: calling models, picking outputs, pooling, NaN checks."""

from __future__ import annotations

import copy
import weakref
from collections import OrderedDict

import pytest
import torch
from torch import nn

from autoq.errors import AutoqError
from autoq.evaluate import (
    OutputFidelity,
    call_model,
    check_finite_batches,
    mean_pooled,
    primary_output,
)


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4)).eval()


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.a = nn.Linear(8, 4)
        self.b = nn.Linear(3, 4)

    def forward(self, x, y):
        return (self.a(x) + self.b(y), None)


class Encoder(nn.Module):
    """Keyword inputs, dict output like a Hugging Face model."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.embed = nn.Embedding(10, 6)
        self.proj = nn.Linear(6, 6)

    def forward(self, input_ids, attention_mask):
        hidden = self.proj(self.embed(input_ids))
        return {"last_hidden_state": hidden, "pooler_output": hidden[:, 0]}


def perturb(model: nn.Module, scale: float = 0.3) -> None:
    gen = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.add_(scale * torch.randn(p.shape, generator=gen))


# ---------------------------------------------------------------- OutputFidelity


def test_unchanged_model_scores_one():
    model = mlp()
    torch.manual_seed(5)
    fidelity = OutputFidelity(model, [torch.randn(4, 8), torch.randn(3, 8)])
    assert fidelity(model) == pytest.approx(1.0, abs=1e-9)


def test_rows_that_stay_all_zero_score_one():
    """A model ending in a ReLU gives all-zero rows; cosine(0, 0) is 0, so the unquantized model scored 0.19 against itself."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU()).eval()
    with torch.no_grad():
        model[0].bias.fill_(-3.0)  # most rows all zero
    data = [torch.randn(16, 8, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    assert (model(torch.cat(data)) == 0).all(dim=1).float().mean() > 0.5
    fidelity = OutputFidelity(model, data)
    assert fidelity(model) == pytest.approx(1.0, abs=1e-9)
    with torch.no_grad():
        model[0].bias.fill_(0.0)  # now every row differs: the rows that were zero score 0, not 1
    assert fidelity(model) < 0.6


def test_perturbed_model_scores_less():
    model = mlp()
    torch.manual_seed(5)
    fidelity = OutputFidelity(model, [torch.randn(4, 8), torch.randn(3, 8)])
    perturb(model)
    score = fidelity(model)
    assert -1.0 <= score < 1.0 - 1e-6


def test_bigger_perturbation_scores_lower():
    torch.manual_seed(5)
    batches = [torch.randn(16, 8)]
    scores = []
    for scale in (0.01, 0.1, 1.0):
        model = mlp()
        fidelity = OutputFidelity(model, batches)
        perturb(model, scale)
        scores.append(fidelity(model))
    assert scores[0] > scores[1] > scores[2]


def test_score_is_mean_over_examples():
    model = mlp()
    torch.manual_seed(5)
    batches = [torch.randn(2, 8), torch.randn(3, 8)]
    fidelity = OutputFidelity(model, batches)
    with torch.no_grad():
        refs = [model(b) for b in batches]
    perturb(model)
    with torch.no_grad():
        outs = [model(b) for b in batches]
    cos = torch.cat([torch.nn.functional.cosine_similarity(o.double(), r.double(), dim=1) for o, r in zip(outs, refs)])
    assert fidelity(model) == pytest.approx(float(cos.mean()), abs=1e-9)



def test_non_finite_outputs_name_the_held_out_batch():
    """A quality of NaN alone does not say where to look: the reference's and a trial's NaN outputs name their batch."""
    model = mlp()
    batches = [torch.randn(4, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    bad = batches[2].clone()
    bad[1, 3] = float("nan")
    with pytest.raises(AutoqError, match="unquantized model's output on held-out batch 2 of 3 holds NaN or Inf .*weights are finite"):
        OutputFidelity(model, batches[:2] + [bad])
    fidelity = OutputFidelity(model, batches)
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")  # every batch: the first is named
    with pytest.raises(AutoqError, match="quantized model's output on held-out batch 0 of 3"):
        fidelity(model)

class CountsLiveOutputs(nn.Module):
    """Records, at each forward, how many of its earlier outputs are still alive."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.f, self.outputs, self.alive = nn.Linear(8, 64), [], []

    def forward(self, x):
        self.alive.append(sum(ref() is not None for ref in self.outputs))
        out = self.f(x)
        self.outputs.append(weakref.ref(out))
        return out


def test_a_trial_holds_one_batchs_output_at_a_time():
    """Beside the references, which it keeps: a language model's logits on every held-out batch at once doubled the
    memory of each evaluation."""
    model = CountsLiveOutputs()
    batches = [torch.randn(4, 8, generator=torch.Generator().manual_seed(i)) for i in range(5)]
    fidelity = OutputFidelity(model, batches)
    model.outputs, model.alive = [], []
    assert fidelity(model) == pytest.approx(1.0)
    assert model.alive == [0, 0, 0, 0, 0]


class Regressor(nn.Module):
    """One value per example, as ``(B, 1)`` or flattened to ``(B,)``."""

    def __init__(self, flat: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.f, self.flat = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1)), flat

    def forward(self, x):
        y = self.f(x)
        return y[:, 0] if self.flat else y


@pytest.mark.parametrize("flat", [True, False])
def test_one_value_per_example_is_scored_by_r_squared_not_cosine(flat):
    """A cosine of two one-value rows is +-1: every change that keeps the sign scored a perfect 1.0."""
    model = Regressor(flat).eval()
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(32, 8, generator=gen) for _ in range(2)]
    fid = OutputFidelity(model, batches)
    assert fid.scalar and "R^2" in fid.description
    assert fid(model) == pytest.approx(1.0)
    refs = torch.cat(fid.reference).reshape(-1).double()
    scores = []
    for scale in (0.01, 0.1, 0.5):
        moved = copy.deepcopy(model)
        perturb(moved, scale)
        with torch.no_grad():
            outs = torch.cat([moved(b) for b in batches]).reshape(-1).double()
        r2 = 1 - float((outs - refs).pow(2).sum() / (refs - refs.mean()).pow(2).sum())
        assert fid(moved) == pytest.approx(r2)
        scores.append(fid(moved))
    assert 1.0 > scores[0] > scores[1] > scores[2]
    assert not OutputFidelity(mlp(), batches).scalar and "cosine" in OutputFidelity(mlp(), batches).description


def test_a_reference_of_one_constant_value_is_scored_against_its_square():
    """Every reference output 5.0: R^2's spread is zero, so the score is 1 - SSE / sum(ref^2), near 1 for an output
    0.01 off (not 0, which ranked a nearly exact model with a broken one)."""
    model, moved = nn.Linear(4, 1), nn.Linear(4, 1)
    with torch.no_grad():
        model.weight.zero_(), model.bias.fill_(5.0), moved.weight.zero_(), moved.bias.fill_(5.01)
    batches = [torch.randn(8, 4, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    fid = OutputFidelity(model, batches)
    assert fid.scalar and fid(model) == 1.0
    assert 1 - fid(moved) == pytest.approx(0.01**2 / 5.0**2, rel=1e-2)  # the error over the sum of squares, not their mean


def test_tuple_batches():
    model = TwoInputs()
    torch.manual_seed(5)
    batches = [(torch.randn(4, 8), torch.randn(4, 3)), [torch.randn(2, 8), torch.randn(2, 3)]]
    fidelity = OutputFidelity(model, batches)
    assert fidelity(model) == pytest.approx(1.0, abs=1e-9)
    perturb(model)
    assert fidelity(model) < 1.0 - 1e-6


def test_dict_batches_and_mean_pooled_readout():
    model = Encoder()
    torch.manual_seed(5)
    ids = torch.randint(0, 10, (3, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    batches = [{"input_ids": ids, "attention_mask": mask}]
    fidelity = OutputFidelity(model, batches, readout=mean_pooled)
    assert fidelity.reference[0].shape == (3, 6)
    assert fidelity(model) == pytest.approx(1.0, abs=1e-9)
    perturb(model)
    assert fidelity(model) < 1.0 - 1e-6


def test_empty_batches_raise():
    with pytest.raises(AutoqError, match="at least one"):
        OutputFidelity(mlp(), [])


@pytest.mark.parametrize("outputs", [4, 1])  # cosine, and R^2 (one value per example)
def test_held_out_batches_without_rows_are_refused(outputs):
    """R^2 over no examples read 1.0 for every assignment (a search called its all-2-bit point perfect), and the mean
    cosine of none divided by zero; a held-out part with rows beside an empty batch is measured as before."""
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, outputs)).eval()
    with pytest.raises(AutoqError, match=r"^the 2 held-out calibration batches hold no examples .* pass batches with rows"):
        OutputFidelity(model, [torch.randn(0, 8), torch.randn(0, 8)])
    fidelity = OutputFidelity(model, [torch.randn(0, 8), torch.randn(5, 8)])
    assert fidelity(model) == pytest.approx(1.0, abs=1e-9)
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed[2].weight.mul_(-1)
    assert fidelity(changed) < 0.5


def test_a_batch_the_model_cannot_take_is_named():
    good, bad = torch.randn(3, 8), torch.randn(3, 7)
    with pytest.raises(AutoqError, match=r"the model fails on held-out batch 1 of 2 \(RuntimeError: .*\); each batch must be") as info:
        OutputFidelity(mlp(), [good, bad])
    assert isinstance(info.value.__cause__, RuntimeError)  # the model's own traceback stays reachable


def test_an_inputs_and_labels_pair_gets_a_hint_to_pass_the_inputs():
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(torch.randn(6, 8), torch.randint(0, 4, (6,))), batch_size=3)
    with pytest.raises(AutoqError, match=r"pass the inputs alone, e.g. \[x for x, _ in loader\]"):
        OutputFidelity(mlp(), list(loader))
    assert OutputFidelity(mlp(), [x for x, _ in loader])(mlp()) == pytest.approx(1.0)  # the inputs alone run


def test_reference_is_not_affected_by_later_changes():
    model = mlp()
    torch.manual_seed(5)
    fidelity = OutputFidelity(model, [torch.randn(4, 8)])
    ref = fidelity.reference[0].clone()
    perturb(model)
    fidelity(model)
    assert torch.equal(fidelity.reference[0], ref)


# ---------------------------------------------------------------- call_model


def test_call_model_dispatch():
    seen = []

    def fn(*args, **kwargs):
        seen.append((args, kwargs))
        return 0

    class Wrap(nn.Module):
        def forward(self, *args, **kwargs):
            return fn(*args, **kwargs)

    wrap = Wrap()
    t = torch.ones(1)
    call_model(wrap, t)
    call_model(wrap, (t, t))
    call_model(wrap, [t])
    call_model(wrap, {"x": t})
    assert [(len(a), sorted(k)) for a, k in seen] == [(1, []), (2, []), (1, []), (0, ["x"])]


# ---------------------------------------------------------------- primary_output


def test_primary_output_preferences():
    a, b, c = torch.zeros(1), torch.ones(1), torch.full((1,), 2.0)
    assert primary_output(a) is a
    assert primary_output({"hidden": a, "last_hidden_state": b, "logits": c}) is c
    assert primary_output({"hidden": a, "last_hidden_state": b}) is b
    assert primary_output(OrderedDict(hidden=a, other=b)) is a
    assert primary_output({"logits": None, "x": "text", "y": b}) is b
    assert primary_output((None, "text", b, c)) is b
    assert primary_output([a, b]) is a


@pytest.mark.parametrize("output", [{}, {"a": None, "b": "x"}, (), (None, 3), [None], 5, "text", None])
def test_primary_output_without_tensor_raises(output):
    with pytest.raises(AutoqError, match="tensor"):
        primary_output(output)


# ---------------------------------------------------------------- mean_pooled


def test_mean_pooled_respects_mask():
    torch.manual_seed(0)
    hidden = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    pooled = mean_pooled({"last_hidden_state": hidden}, {"attention_mask": mask})
    assert torch.allclose(pooled[0], hidden[0, :2].mean(0))
    assert torch.allclose(pooled[1], hidden[1].mean(0))
    changed = hidden.clone()
    changed[0, 2:] = 1000.0  # padding positions
    again = mean_pooled({"last_hidden_state": changed}, {"attention_mask": mask})
    assert torch.equal(again, pooled)
    changed[0, 1] += 1.0  # a real token
    assert not torch.allclose(mean_pooled({"last_hidden_state": changed}, {"attention_mask": mask})[0], pooled[0])


def test_mean_pooled_all_padding_is_finite():
    hidden = torch.randn(1, 3, 2)
    pooled = mean_pooled(hidden, {"attention_mask": torch.zeros(1, 3, dtype=torch.long)})
    assert torch.equal(pooled, torch.zeros(1, 2))


# ---------------------------------------------------------------- check_finite_batches


def test_check_finite_batches_passes_on_clean_data():
    check_finite_batches([torch.randn(2, 3), (torch.randn(2), torch.arange(3)), {"ids": torch.arange(4), "x": torch.ones(2)}])


@pytest.mark.parametrize(
    "bad",
    [
        torch.tensor([1.0, float("nan")]),
        (torch.ones(2), torch.tensor([float("inf")])),
        {"ids": torch.arange(2), "x": torch.tensor([[float("-inf")]])},
        {"xs": [torch.ones(2), torch.tensor([float("nan")])]},  # nested: one level deep was checked
    ],
)
def test_check_finite_batches_names_the_batch(bad):
    batches = [torch.ones(2), torch.zeros(3), bad]
    with pytest.raises(AutoqError, match="calibration batch 2"):
        check_finite_batches(batches)


def test_check_finite_batches_uses_the_label():
    with pytest.raises(AutoqError, match="held-out batch 0"):
        check_finite_batches([torch.tensor([float("nan")])], what="held-out")


def test_check_finite_batches_ignores_integer_tensors():
    check_finite_batches([torch.tensor([1, 2, 3]), {"ids": torch.tensor([0])}])


def test_an_integer_output_is_passed_over_for_the_first_floating_one():
    """Class ids first, logits second: the ids were compared, a quality of rounded sums."""
    ids, logits = torch.tensor([1, 2]), torch.randn(2, 3)
    assert primary_output([ids, logits]) is logits and primary_output({"pred": ids, "score": logits}) is logits
    with pytest.raises(AutoqError, match="holds only torch.int64 tensors, no floating-point one to compare; pass evaluate="):
        primary_output((ids,))


def test_a_model_returning_class_ids_alone_is_refused_as_its_tuple_is():
    """A forward ending in argmax: the cosine of two vectors of class ids was scored as the quality (0.455)."""
    model = nn.Sequential(nn.Linear(16, 8), nn.Flatten())
    predicts = type("Predicts", (nn.Module,), {"forward": lambda self, x: model(x).argmax(-1)})()
    with pytest.raises(AutoqError, match="holds only torch.int64 tensors, no floating-point one to compare; pass evaluate="):
        OutputFidelity(predicts, [torch.randn(4, 16), torch.randn(3, 16)])


def test_batch_rows_reads_nested_batches():
    from autoq.sensitivity.inputs import batch_rows

    assert batch_rows({"xs": [torch.ones(5, 2), torch.ones(5, 3)]}) == 5


def test_padding_positions_do_not_count():
    """The API's default quality compared padded positions too: one model scored 0.631 right-padded and 0.714 left-padded
    against 0.617 on its real tokens."""
    model, changed = Encoder(), Encoder()
    perturb(changed)
    ids = torch.randint(0, 10, (3, 5), generator=torch.Generator().manual_seed(0))
    real = [{"input_ids": ids, "attention_mask": torch.ones(3, 5, dtype=torch.long)}]

    def padded(left: bool) -> list[dict]:
        pad = torch.full((3, 4), 7)
        both = torch.cat([pad, ids], 1) if left else torch.cat([ids, pad], 1)
        mask = torch.cat([torch.zeros(3, 4), torch.ones(3, 5)] if left else [torch.ones(3, 5), torch.zeros(3, 4)], 1).long()
        return [{"input_ids": both, "attention_mask": mask}]

    on_real = OutputFidelity(model, real)(changed)
    # the toy encoder attends nothing: a token's state is its own, wherever the padding is
    assert OutputFidelity(model, padded(left=False))(changed) == pytest.approx(on_real, abs=1e-9)
    assert OutputFidelity(model, padded(left=True))(changed) == pytest.approx(on_real, abs=1e-9)
    # a tuple batch [ids, mask] (a DataLoader over a TensorDataset), its mask where forward takes it: padding counted
    as_tuples = [[b["input_ids"], b["attention_mask"]] for b in padded(left=False)]
    assert OutputFidelity(model, as_tuples)(changed) == pytest.approx(on_real, abs=1e-9)


def test_a_pooled_output_as_wide_as_the_padded_length_is_not_masked():
    """A (batch, features) embedding of 8 features on batches padded to 8 tokens had features masked as if tokens."""
    class Pooled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(3)
            self.embed, self.proj = nn.Embedding(10, 8), nn.Linear(8, 8)

        def forward(self, input_ids, attention_mask):
            return self.proj(self.embed(input_ids).mean(1))

    model, broken = Pooled(), Pooled()
    with torch.no_grad():
        broken.proj.weight[6:] = 0  # features 6 and 7 lost
        broken.proj.bias[6:] = 0
    mask = torch.cat([torch.ones(4, 5), torch.zeros(4, 3)], 1).long()
    batches = [{"input_ids": torch.randint(0, 10, (4, 8), generator=torch.Generator().manual_seed(1)), "attention_mask": mask}]
    assert OutputFidelity(model, batches)(broken) < 0.99


def test_a_loss_first_in_a_tuple_output_is_not_taken_for_the_output():
    """A Hugging Face (loss, logits) tuple, labels in the batch: the 0-dim loss was compared, as 'R^2 (one value per
    example)' of two numbers."""
    from autoq.evaluate import primary_output

    logits = torch.randn(2, 5)
    assert primary_output((torch.tensor(0.3), logits)) is logits
    score = torch.tensor(1.0)
    assert primary_output({"score": score}) is score  # one value per batch (of one example) is compared, as before


def test_nan_at_padding_positions_drops_out_with_them():
    """NaN * 0 is NaN: a model's NaN at a masked position failed the whole search as 'the unquantized model's output
    holds NaN or Inf', though the padding drops out of the comparison."""
    from autoq.evaluate import mean_pooled
    from autoq.evaluate.fidelity import unpadded_output

    hidden = torch.ones(2, 3, 4)
    hidden[1, 2] = float("nan")
    batch = {"attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]])}
    assert torch.isfinite(unpadded_output({"last_hidden_state": hidden}, batch)).all()
    assert torch.equal(mean_pooled({"last_hidden_state": hidden}, batch), torch.ones(2, 4))
