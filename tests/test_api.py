"""The Python API on a user's own model: built-in proxy, user metric, and bad input."""

from __future__ import annotations

import copy
import dataclasses
import re
import warnings

import numpy as np
import optuna
import pytest
import torch
from torch import nn

import autoq
from autoq.errors import AutoqError, AutoqWarning


def tiny_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 8)).eval()


def batches(n: int = 6, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(16, 32, generator=g) for _ in range(n)]


def test_search_with_builtin_proxy_and_no_mlflow():
    model = tiny_mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = autoq.search(model, batches(), budget="5bits", n_trials=15, tracking_uri=None, storage=None, progress=False)
    assert len(result.points) == 15
    assert all(p.effective_bits <= 5 for p in result.points)
    assert 0 < result.best.quality <= 1.0 + 1e-9
    assert result.reference_quality == pytest.approx(1.0)
    # the search leaves the user's weights untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    quantized = result.apply(copy.deepcopy(model))
    assert not torch.equal(quantized[0].weight, model[0].weight)


@pytest.mark.parametrize("make", [lambda: optuna.samplers.RandomSampler(seed=1),
                                  lambda: optuna.samplers.NSGAIISampler(population_size=4, seed=1)], ids=["random", "nsga2"])
def test_one_sampler_instance_gives_the_same_search_each_time_it_is_passed(make):
    """A reused SearchConfig's sampler went on from the first search's random state: the second search was another.
    NSGAIISampler holds a lock deepcopy refused, and was reused unsaid (its second generation differed)."""
    config = autoq.SearchConfig(budget="5bits", n_trials=10, tracking_uri=None, storage=None, progress=False, seed_from="none",
                                n_fill_seeds=0, max_uniform_seeds=0, sampler=make())  # every trial the sampler's
    with warnings.catch_warnings():
        warnings.simplefilter("error", AutoqWarning)  # copied, not reused with a warning
        first, second = (autoq.search(tiny_mlp(), batches(), config=config) for _ in range(2))
    fresh = autoq.search(tiny_mlp(), batches(), config=dataclasses.replace(config, sampler=make()))
    assert [p.assignment for p in first.points] == [p.assignment for p in second.points] == [p.assignment for p in fresh.points]
    assert len({p.assignment for p in first.points}) > 1  # a search whose points differ: the test could fail


def test_a_sampler_that_cannot_be_copied_is_used_as_given_with_a_warning():
    """It was reused unsaid, so a second search with it would not repeat the first."""
    import sqlite3

    class Connected(optuna.samplers.RandomSampler):
        def __init__(self):
            super().__init__(seed=1)
            self.connection = sqlite3.connect(":memory:")  # deepcopy refuses it

    with pytest.warns(AutoqWarning, match=r"^Connected could not be copied \(.*\): this search uses the instance itself"):
        result = autoq.search(tiny_mlp(), batches(), budget="5bits", n_trials=3, tracking_uri=None, storage=None, progress=False,
                              sampler=Connected())
    assert len(result.points) == 3


def test_a_plug_in_samplers_own_lock_or_study_is_not_copied_apart():
    """The copy walked every object the sampler reached (a study's storage, the modules behind it) and replaced a
    user's shared lock with a private one; only Optuna's own samplers' locks are made anew."""
    import threading

    from autoq.engine.strategy import sampler_factory

    shared = threading.Lock()

    class Guarded(optuna.samplers.TPESampler):
        def __init__(self):
            super().__init__(seed=1)
            self.gpu_lock = shared

    given = Guarded()
    with pytest.warns(AutoqWarning, match=r"^Guarded could not be copied"):
        assert sampler_factory(given)(0) is given  # as given, its lock shared as it was
    nsga = optuna.samplers.NSGAIISampler(population_size=4, seed=1)
    copied = sampler_factory(nsga)(0)
    assert copied is not nsga and copied._thread_lock is not nsga._thread_lock


def test_a_config_object_takes_its_set_fields_and_keywords_beside_it_win():
    config = autoq.SearchConfig(budget="5bits", n_trials=3, tracking_uri=None, storage=None, progress=False, seed_from="none")
    result = autoq.search(tiny_mlp(), batches(), config=config, n_trials=2, budget="6bits")
    assert len(result.points) == 2 and result.budget.text == "6bits"
    assert autoq.search(tiny_mlp(), batches(), config=config).budget.text == "5bits"
    with pytest.raises(AutoqError, match=r"config must be an autoq.SearchConfig, got dict; pass its fields as keywords"):
        autoq.search(tiny_mlp(), batches(), config={"n_trials": 2})


def test_user_metric_is_what_gets_maximised():
    model = tiny_mlp()
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        target = model(x)

    def neg_mse(m: nn.Module) -> float:
        with torch.no_grad():
            return -float(((m(x) - target) ** 2).mean())

    result = autoq.search(model, batches(), neg_mse, budget="4.5bits", n_trials=12, tracking_uri=None, storage=None, progress=False)
    assert result.best.quality == max(p.quality for p in result.points)
    assert result.best.quality <= 0
    assert result.metric.startswith("user-defined")


def test_a_model_in_train_mode_is_given_back_in_train_mode():
    model = nn.Sequential(nn.Linear(32, 64), nn.Dropout(0.1), nn.Linear(64, 8)).train()
    model[2].eval()  # per module, as set
    autoq.search(model, batches(), budget="6bits", n_trials=2, seed_from="none", tracking_uri=None, storage=None, progress=False)
    assert [m.training for m in model.modules()] == [True, True, True, False]


@pytest.mark.filterwarnings("ignore:.*score above the unquantized model")  # -output**2 is no quality: said, and not the point here
def test_a_users_evaluate_sees_the_model_in_eval_mode_with_gradients_as_they_are():
    """It saw the model as the caller left it: in train mode, dropout scored the unquantized model -0.07 where it is 0
    (and warned of a loss maximized), and batch norm's running statistics were updated from the quantized models'.
    Gradients stay on: a robustness metric (FGSM) takes the input's."""
    model = nn.Sequential(nn.Linear(32, 64), nn.BatchNorm1d(64), nn.Dropout(0.5), nn.Linear(64, 8)).train()
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(5))
    seen = []

    def evaluate(m: nn.Module) -> float:
        seen.append((m.training, torch.is_grad_enabled()))
        return -float(m(x).pow(2).mean().detach())

    autoq.search(model, batches(), evaluate, budget="6bits", n_trials=3, seed_from="none", tracking_uri=None, storage=None, progress=False)
    assert seen and set(seen) == {(False, True)}

    def robust(m: nn.Module):  # takes the input's gradient (FGSM-like), through the weights: they got .grad too
        xs = x.clone().requires_grad_(True)
        loss = m(xs).pow(2).mean()
        loss.backward()
        return -m(xs + 0.01 * xs.grad.sign()).pow(2).mean()  # a tensor that needs grad: float() of it warned

    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*requires_grad=True to a scalar")
        autoq.search(model, batches(), robust, budget="6bits", n_trials=2, seed_from="none", tracking_uri=None, storage=None, progress=False)
    assert all(p.grad is None for p in model.parameters())  # the caller's model holds no gradient it did not have
    for p in model.parameters():  # a model mid-training: its gradients come back as they were, not added into
        p.grad = torch.ones_like(p)
    autoq.search(model, batches(), robust, budget="6bits", n_trials=2, seed_from="none", tracking_uri=None, storage=None, progress=False)
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())
    assert all(torch.equal(model.state_dict()[k], v) for k, v in stats.items())
    assert all(m.training for m in model.modules())  # given back as it was


def test_weight_normed_layers_are_left_out_with_a_note(capsys):
    """A trial's quantized weight never reached a weight-normed layer (its forward computes the weight), so its
    quality was the float layer's."""
    model = tiny_mlp()
    nn.utils.parametrizations.weight_norm(model[2])
    result = autoq.search(model, batches(), budget="6bits", n_trials=2, seed_from="none", tracking_uri=None, storage=None, progress=False)
    assert all([name for name, _ in p.assignment.items()] == ["0", "4"] for p in result.points)
    assert "1 layer(s) whose weight a parametrization computes (weight_norm, spectral_norm) left unquantized: '2'" in capsys.readouterr().err


def test_a_multihead_attention_model_searches_data_driven_methods_without_failures():
    """nn.MultiheadAttention reads its out_proj's weight without calling it, so no input reaches a hook there: the
    statistics of every layer were captured together and all failed on it, so every trial with GPTQ anywhere failed."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)).eval()
    data = [torch.randn(4, 5, 16, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    result = autoq.search(model, data, budget="8bits", space="full", n_trials=4, seed_from="none", pins={"linear": "int4-ch-asym:gptq"},
                          tracking_uri=None, storage=None, progress=False)
    assert result.n_failed == 0 and len(result.points) == 4
    assert all(p.assignment["0.linear1"].method == "gptq" for p in result.points)
    assert {p.assignment["0.self_attn.out_proj"].method for p in result.points} <= {"rtn-mse", "rtn-lp", "none"}  # never data-driven


def test_model_with_nothing_to_quantize():
    with pytest.raises(AutoqError, match="no quantizable layer"):
        autoq.search(nn.Sequential(nn.ReLU()), batches(), budget="4bits", tracking_uri=None, storage=None)


def test_nan_in_weights_names_the_layer():
    model = tiny_mlp()
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    with pytest.raises(AutoqError, match="'2.weight' holds NaN"):
        autoq.search(model, batches(), budget="4bits", tracking_uri=None, storage=None)
    # outside the searched layers too: a skipped layer's NaN passed the search (its reference scored NaN logits), and
    # only its export refused it
    with pytest.raises(AutoqError, match=r"the model's '2.weight' holds NaN or Inf: its outputs would be NaN"):
        autoq.search(model, batches(), lambda m: 1.0, budget="5bits", skip=["^2$"], tracking_uri=None, storage=None)
    model = tiny_mlp()
    model.register_buffer("running", torch.tensor([float("nan")]))
    with pytest.raises(AutoqError, match=r"the model's buffer 'running' holds NaN"):
        autoq.search(model, batches(), lambda m: 1.0, budget="5bits", tracking_uri=None, storage=None)


def test_nan_in_calibration_names_the_batch():
    data = batches()
    data[1][0, 0] = float("inf")
    with pytest.raises(AutoqError, match="batch 1"):
        autoq.search(tiny_mlp(), data, lambda m: 1.0, budget="4bits", tracking_uri=None, storage=None)


def test_nan_in_a_held_out_batch_names_the_callers_batch():
    """Without evaluate the last quarter is held out to score fidelity, and was not checked: NaN there was named as the
    model's output on "held-out batch 0 of 2", and an Inf behind a saturating first layer went unseen."""
    data = batches()
    data[4] = torch.full_like(data[4], float("nan"))
    with pytest.raises(AutoqError, match=r"^calibration batch 4 contains NaN or Inf values \(\d+ of \d+\); drop or clean that batch"):
        autoq.search(tiny_mlp(), data, budget="4bits", tracking_uri=None, storage=None)
    data = batches()
    data[5][0, 0] = float("inf")
    with pytest.raises(AutoqError, match=rf"^calibration batch 5 contains NaN or Inf values \(1 of {data[5].numel()}\); drop or clean that batch"):
        autoq.search(nn.Sequential(nn.Hardtanh(), tiny_mlp()), data, budget="5bits", tracking_uri=None, storage=None)


@pytest.mark.parametrize(("calibration", "says"), [(5, "got int '5'"), ("data.pt", "got str 'data.pt'"),
                                                   ({"x": torch.zeros(2, 8)}, "got dict .*one dict is one batch: put it in a list")])
def test_calibration_that_is_no_sequence_of_batches_is_refused(calibration, says):
    """autoq.search(model, 5, evaluate=...) raised TypeError: 'int' object is not iterable; a dict's keys became batches."""
    with pytest.raises(AutoqError, match=f"calibration must be a sequence of batches .*, {says}"):
        autoq.search(tiny_mlp(), calibration, lambda m: 1.0, budget="4bits", tracking_uri=None, storage=None)


def test_bad_options_are_refused():
    with pytest.raises(AutoqError, match=r"unknown option\(s\) 'n_trailz' \(did you mean 'n_trials'\?\)"):
        autoq.search(tiny_mlp(), batches(), budget="4bits", n_trailz=3)
    # search's own keywords are options too: a typo of one listed the config's fields alone, without it
    with pytest.raises(AutoqError, match=r"'evalute' \(did you mean 'evaluate'\?\); valid options: \[.*'evaluate', .*'holdout'"):
        autoq.search(tiny_mlp(), batches(), evalute=lambda m: 1.0)
    with pytest.raises(AutoqError, match="at least 2 calibration batches"):
        autoq.search(tiny_mlp(), batches(1), budget="4bits", tracking_uri=None, storage=None)
    with pytest.raises(AutoqError, match="feasible range"):
        autoq.search(tiny_mlp(), batches(), budget="2.01bits", tracking_uri=None, storage=None)
    with pytest.raises(AutoqError, match="below 2 bits a weight, the fewest any option .* stores .* no assignment of any model meets it"):
        autoq.search(tiny_mlp(), batches(), budget="1bits", tracking_uri=None, storage=None)
    with pytest.raises(AutoqError, match=r"unknown sampler 'annealing'; choose one of tpe, nsga2, random \(a plug-in.s sampler is known once its module is imported: --plugin MODULE .*\), or pass an optuna.samplers.BaseSampler"):
        autoq.search(tiny_mlp(), batches(), budget="4bits", sampler="annealing", tracking_uri=None, storage=None)
    with pytest.raises(AutoqError, match="unknown sampler <class 'optuna.samplers._tpe.sampler.TPESampler'>"):  # the class, not an instance
        autoq.search(tiny_mlp(), batches(), budget="4bits", sampler=optuna.samplers.TPESampler, tracking_uri=None, storage=None)
    with pytest.raises(AutoqError, match=r"CmaEsSampler optimizes one objective, and autoq's study has 2 .*: pass a multi-objective sampler"):
        autoq.search(tiny_mlp(), batches(), budget="4bits", sampler=optuna.samplers.CmaEsSampler(seed=1), tracking_uri=None, storage=None)
    with pytest.raises(AutoqError, match="no quantizable layer named|match no quantizable layer"):
        autoq.search(tiny_mlp(), batches(), budget="4bits", pins={"nonexistent": "fp16"}, tracking_uri=None, storage=None)
    # logged as text: metric=3 raised TypeError once the study was made (it was left behind), and passed without MLflow
    with pytest.raises(AutoqError, match=r"metric must be a str \(what the quality is called in the summary and MLflow\) or None, got int 3"):
        autoq.search(tiny_mlp(), batches(), budget="4bits", metric=3, tracking_uri=None, storage=None)
    with pytest.raises(AutoqError, match=r"name must be a str .* got int 3"):
        autoq.search(tiny_mlp(), batches(), budget="4bits", name=3, tracking_uri=None, storage=None)


def test_what_goes_with_a_module_is_refused_with_a_builtin_and_holdout_with_evaluate(tmp_path):
    """name, metric and holdout with a built-in were dropped without a word (its own name and metric were logged), and
    holdout=7 with evaluate passed; a folder as a Path was "not a torch.nn.Module"."""
    with pytest.raises(AutoqError, match=r"^name and holdout go with an nn.Module; 'digits-cnn' \(a built-in or a Hugging Face folder\) brings "
                                         r"its own data, metric and name: pass model=<your nn.Module> with calibration batches"):
        autoq.search("digits-cnn", name="mine", holdout=0.5, tracking_uri=None, storage=None)
    with pytest.raises(AutoqError, match=r"^metric goes with an nn.Module; the default model \("):
        autoq.search(metric="accuracy", tracking_uri=None, storage=None)
    with pytest.raises(AutoqError, match=r"^holdout=7 sets the batches the output-fidelity proxy holds out; with evaluate"):
        autoq.search(tiny_mlp(), batches(), lambda m: 1.0, holdout=7, tracking_uri=None, storage=None)
    missing = tmp_path / "no-such-model"
    with pytest.raises(AutoqError, match=f"^model path {re.escape(repr(str(missing)))} does not exist; pass a local Hugging Face model directory"):
        autoq.search(missing, tracking_uri=None, storage=None)
    with pytest.raises(AutoqError, match=r"^model must be a torch.nn.Module, a built-in name or a Hugging Face folder \(str or path\), got int 5$"):
        autoq.search(5, [torch.zeros(1)], tracking_uri=None, storage=None)


def test_a_metric_that_is_not_one_number_is_refused_with_what_it_must_return():
    class Sized:  # one element, as a 1x1 DataFrame has, and no .item() to read it with: refused, not an AttributeError
        size = 1

    refused = (("good", "str 'good'"), ("0.5", "str '0.5'"), ({"acc": 0.9}, "dict {'acc': 0.9}"), (torch.ones(3), "Tensor tensor([1., 1., 1.])"),
               (Sized(), "Sized <"))
    for value, shown in refused:  # a string of a number too: float() read it
        with pytest.raises(AutoqError, match=f"evaluate\\(model\\) must return one number.*returned {re.escape(shown)}"):
            autoq.search(tiny_mlp(), batches(), lambda m, v=value: v, budget="5bits", n_trials=2, tracking_uri=None, storage=None, progress=False)
    for one in (torch.tensor(0.5), np.array([0.5])):  # a one-element tensor or array is a number (the array was refused)
        accepted = autoq.search(tiny_mlp(), batches(), lambda m, v=one: v, budget="5bits", n_trials=2, tracking_uri=None, storage=None,
                                progress=False)
        assert accepted.reference_quality == 0.5 and {p.quality for p in accepted.points} == {0.5}


def test_failing_metric_is_recorded_not_fatal():
    calls = {"n": 0}

    def flaky(m: nn.Module) -> float:
        calls["n"] += 1
        if calls["n"] in (3, 4):
            raise RuntimeError("boom")
        return float("nan") if calls["n"] == 5 else 0.5

    # max_retries=0: a failed trial counts as evaluated at once (retries: tests/engine/test_trials.py)
    with pytest.warns(AutoqWarning, match=r"trial 1 failed \(RuntimeError: boom\); the search goes on: it counts its assignment failed"):
        result = autoq.search(tiny_mlp(), batches(), flaky, budget="5bits", n_trials=8, max_retries=0, tracking_uri=None, storage=None,
                              progress=False)
    assert result.n_failed == 3
    assert len(result.points) == 5


def test_pins_hold_in_every_point():
    result = autoq.search(tiny_mlp(), batches(), budget="6bits", pins={"^4$": "fp16"}, n_trials=10, tracking_uri=None, storage=None, progress=False)
    assert all(p.assignment["4"].name == "fp16" for p in result.points)


def test_search_leaves_third_party_logging_as_it_was():
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO)
    logging.getLogger("mlflow").setLevel(logging.INFO)
    try:
        autoq.search(tiny_mlp(), batches(), budget="5bits", n_trials=3, tracking_uri=None, storage=None, progress=False)
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
        assert logging.getLogger("mlflow").level == logging.INFO
    finally:
        logging.getLogger("mlflow").setLevel(logging.NOTSET)


def test_a_large_holdout_still_leaves_a_batch_to_calibrate_on():
    from autoq.api import make_workload

    torch.manual_seed(0)
    workload = make_workload(nn.Sequential(nn.Linear(8, 4)), [torch.randn(4, 8) for _ in range(4)], None, holdout=0.9)
    assert len(workload.calibration) == 1 and len(workload.evaluate.batches) == 3  # 0.9 of 4 held out every batch
    # holdout is the share held out, rounded up: 0.25 of 6 batches holds out 2, calibrates on 4
    workload = make_workload(nn.Sequential(nn.Linear(8, 4)), [torch.randn(4, 8) for _ in range(6)], None, holdout=0.25)
    assert len(workload.calibration) == 4 and len(workload.evaluate.batches) == 2
    # a share strictly between 0 and 1: holdout=1 would hold out every batch (it is not "one batch")
    with pytest.raises(AutoqError, match="^holdout must be between 0 and 1, got 1$"):
        make_workload(nn.Sequential(nn.Linear(8, 4)), [torch.randn(4, 8) for _ in range(4)], None, holdout=1)


def test_a_resume_with_another_holdout_is_refused_as_other_data(tmp_path):
    """The fingerprint hashed the batches end to end, the same for every split: a resume with holdout=0.5 after 0.25
    went on, and its frontier mixed qualities measured on 2 and on 4 held-out batches."""
    from autoq.api import make_workload

    model, data = tiny_mlp(), batches(8)
    quarter, half = (make_workload(model, data, None, holdout=h).data_fingerprint for h in (0.25, 0.5))
    assert quarter != half and quarter == make_workload(model, data, None, holdout=0.25).data_fingerprint
    common = dict(budget="6bits", seed_from="none", study_name="h", storage=f"sqlite:///{tmp_path}/optuna.db", tracking_uri=None,
                  progress=False)
    autoq.search(model, data, holdout=0.25, n_trials=2, **common)
    with pytest.raises(AutoqError, match=r"cannot resume 'h' with other settings: data_fingerprint .*the last 4 held out.* \(stored: "
                                         r".*the last 2 held out"):
        autoq.search(model, data, holdout=0.5, n_trials=4, resume=True, **common)
    assert len(autoq.search(model, data, holdout=0.25, n_trials=3, resume=True, **common).points) == 3


def test_apply_and_export_refuse_other_calibration_batches_than_the_searchs(mlflow_uri, tmp_path):
    """Without evaluate the search calibrates on the first three quarters of the batches; passing all of them to apply
    or export rebuilt other GPTQ weights than the search scored (0.9972 for a point it measured at 0.9934), silently."""
    model, data = tiny_mlp(), batches(8)
    result = autoq.search(model, data, budget="8bits", n_trials=2, seed_from="none", pins={".*": "int4-ch-asym:gptq"},
                          tracking_uri=mlflow_uri, storage=None, progress=False)
    assert result.n_calibration == 6 and result.calibration_digest
    with pytest.raises(AutoqError, match=r"these 8 calibration batches are not the 6 the search calibrated on .*pass calibration=batches\[:6\]"):
        result.apply(copy.deepcopy(model), calibration=data)
    applied = result.apply(copy.deepcopy(model), calibration=data[:6])
    from_iterator = result.apply(copy.deepcopy(model), calibration=iter(data[:6]))  # read once, as the search reads one
    assert all(torch.equal(a, b) for a, b in zip(applied.state_dict().values(), from_iterator.state_dict().values()))
    best = result.best.run_id
    with pytest.raises(AutoqError, match="not the 6 the search calibrated on"):
        autoq.export(model, best, tmp_path / "q", calibration=data, tracking_uri=mlflow_uri, progress=False)
    autoq.export(model, best, tmp_path / "q", calibration=data[:6], tracking_uri=mlflow_uri, progress=False)
    reloaded = autoq.SearchResult.from_mlflow(result.parent_run_id, mlflow_uri)
    assert (reloaded.calibration_digest, reloaded.n_calibration) == (result.calibration_digest, 6)


def test_a_numpy_seed_is_taken_and_a_bad_one_refused():
    """A pipeline's numpy integer is a seed like any (stored and compared as an int); negative, too large or not an
    integer is one line, not numpy's traceback after the model has loaded."""
    import numpy as np

    assert autoq.SearchConfig(seed=np.int64(7), tracking_uri=None).seed == 7
    assert type(autoq.SearchConfig(seed=np.int64(7), tracking_uri=None).seed) is int
    for bad in (-1, 2**32, 1.5, True):
        with pytest.raises(AutoqError, match="seed \\(--seed\\) must be an integer from 0 to 2\\*\\*32 - 1"):
            autoq.SearchConfig(seed=bad, tracking_uri=None)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_an_evaluate_that_returns_a_loss_is_warned_about(sign, capsys):
    """A loss was maximized without a word: the unquantized model scored 0 and 'best' was the most damaged point."""
    model, data = tiny_mlp(), batches()
    with torch.no_grad():
        reference = [model(x) for x in data]

    def evaluate(m):
        with torch.no_grad():
            return sign * float(sum((m(x) - r).pow(2).mean() for x, r in zip(data, reference)))

    with warnings.catch_warnings(record=True) as caught:  # an AutoqWarning, which a pipeline can filter or escalate
        warnings.simplefilter("always")
        autoq.search(model, data, evaluate=evaluate, budget="5bits", n_trials=6, seed_from="none", tracking_uri=None, storage=None,
                     progress=False)
    warned = [w for w in caught if issubclass(w.category, AutoqWarning) and "quantized points score above the unquantized model (0;" in str(w.message)]
    assert bool(warned) == (sign > 0)  # -loss is the documented way, and says nothing
    assert "score above" not in capsys.readouterr().err  # a warning, not a print a pipeline cannot catch


def test_apply_and_export_refuse_one_tensor_as_calibration_as_search_does(tmp_path):
    """result.apply(model, calibration=x) raised 'Boolean value of Tensor with more than one value is ambiguous'; an
    export took each of its rows for a batch."""
    model, data = tiny_mlp(), batches(4)
    result = autoq.search(model, data, lambda m: 1.0, budget="8bits", n_trials=1, seed_from="none", pins={".*": "int4-ch-asym:gptq"},
                          tracking_uri=None, storage=None, progress=False)
    one_tensor = r"calibration must be a sequence of batches \(a list of tensors, a DataLoader\), not one tensor, whose 64 rows"
    with pytest.raises(AutoqError, match=one_tensor):
        result.apply(copy.deepcopy(model), calibration=torch.cat(data))
    with pytest.raises(AutoqError, match=one_tensor):
        autoq.export(model, result.best, tmp_path / "q", calibration=torch.cat(data), progress=False)
    assert not (tmp_path / "q").exists()
    with pytest.raises(AutoqError, match=r"not one numpy array, whose 64 rows would each be a batch; split it, e.g. "
                                         r"list\(torch.from_numpy\(x\).split\(32\)\)"):  # its rows were batches, and row 0 was blamed
        autoq.search(model, torch.cat(data).numpy(), budget="8bits", tracking_uri=None, storage=None, progress=False)


def test_a_model_or_data_on_the_meta_device_is_refused_by_search_apply_and_export(tmp_path):
    """torch's 'Tensor.item() cannot be called on meta tensors' or 'Cannot copy out of meta tensor', or an error that
    blamed the batches: a model made under torch.device('meta') holds no weights to quantize."""
    no_values = r"^the model's '0.weight' is on the 'meta' device, which holds shapes but no values; load the weights first"
    with pytest.raises(AutoqError, match=no_values):
        autoq.search(tiny_mlp().to("meta"), batches(4), budget="8bits", tracking_uri=None, storage=None)
    with pytest.raises(AutoqError, match=r"^calibration batch 0 is on the 'meta' device, which holds shapes but no values"):
        autoq.search(tiny_mlp(), [b.to("meta") for b in batches(4)], budget="8bits", tracking_uri=None, storage=None)
    result = autoq.search(tiny_mlp(), batches(4), lambda m: 1.0, budget="8bits", n_trials=1, seed_from="none", tracking_uri=None,
                          storage=None, progress=False)
    with pytest.raises(AutoqError, match=no_values):
        result.apply(tiny_mlp().to("meta"))
    with pytest.raises(AutoqError, match=no_values):
        autoq.export(tiny_mlp().to("meta"), result.best, tmp_path / "q", progress=False)
    assert not (tmp_path / "q").exists()


def test_a_torch_compiled_model_is_searched_and_exported_by_its_own_layer_names(tmp_path):
    """A search of torch.compile(model) named its layers '_orig_mod.0', ...: its export loaded into neither the model
    (no layer '_orig_mod.0') nor a compiled one (refused), and exporting the model itself said its weights differed."""
    model, data = tiny_mlp(), batches(4)
    compiled = torch.compile(model, backend="eager")  # the wrapper alone: no compiler needed
    result = autoq.search(compiled, data, budget="5bits", n_trials=3, seed_from="none", tracking_uri=None, storage=None, progress=False)
    assert set(result.best.assignment) == {"0", "2", "4"}
    applied = result.apply(copy.deepcopy(model))
    out = autoq.export(model, result.best, tmp_path / "plain", progress=False)  # the weights the search scored
    autoq.export(compiled, result.best, tmp_path / "compiled", progress=False)
    for folder in (out, tmp_path / "compiled"):
        loaded = autoq.load(folder, model=tiny_mlp())
        torch.testing.assert_close(loaded(data[0]), applied(data[0]), rtol=2e-2, atol=2e-3)
    in_place = result.apply(torch.compile(copy.deepcopy(model), backend="eager"))  # quantized in the module it holds
    torch.testing.assert_close(in_place(data[0]), applied(data[0]))


def test_a_float8_parameter_outside_the_searched_layers_is_checked_without_failing():
    """torch.isfinite has no float8 kernel: the up-front check raised NotImplementedError."""
    model = tiny_mlp()
    model.register_parameter("fp8", nn.Parameter(torch.ones(4).to(torch.float8_e4m3fn), requires_grad=False))
    result = autoq.search(model, batches(), lambda m: 1.0, budget="6bits", n_trials=1, seed_from="none", tracking_uri=None, storage=None,
                          progress=False)
    assert len(result.points) == 1
    model.fp8.data[0] = float("nan")
    with pytest.raises(AutoqError, match=r"the model's 'fp8' holds NaN or Inf"):
        autoq.search(model, batches(), lambda m: 1.0, budget="6bits", tracking_uri=None, storage=None)


def test_dir_and_help_show_the_lazy_entry_points():
    """``search`` and ``SearchConfig`` load on first use (PEP 562): ``dir(autoq)``, ``help(autoq)`` and tab completion
    left them out, the two names a user looks for first."""
    import pydoc

    assert {"search", "SearchConfig", "export", "load", "__version__"} <= set(dir(autoq))
    assert set(autoq.__all__) <= set(dir(autoq))
    text = pydoc.render_doc(autoq, renderer=pydoc.plaintext)
    assert "search(" in text and "class SearchConfig" in text
