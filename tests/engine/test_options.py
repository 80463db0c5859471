"""Options of the wrong kind are one clear error before anything loads, as a pipeline passing its own config expects."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import autoq
from autoq.engine import SearchConfig
from autoq.errors import AutoqError


@pytest.mark.parametrize(("options", "needle"), [
    ({"n_trials": "5"}, "n_trials (--n-trials) must be a whole number (at least 1), got str '5'"),
    ({"n_trials": 2.5}, "n_trials (--n-trials) must be a whole number (at least 1), got float 2.5"),  # crashed in the ILP, minutes in
    ({"n_trials": True}, "n_trials (--n-trials) must be a whole number"),
    ({"timeout": "10"}, "timeout (--timeout) must be a number of seconds"),
    ({"skip": 3}, "skip must be a regular expression or a list of them, got int 3"),
    ({"skip": ["pooler", 3]}, "3 is a int"),
    ({"pins": 5}, "pins must be a mapping"),
    ({"pins": [("a", "b", "c")]}, "pins must be a mapping {pattern: choice}"),
    ({"progress": "no"}, "progress must be True or False, got str 'no'"),  # read as true
    ({"max_uniform_seeds": -1}, "max_uniform_seeds must be 0 or more, got -1"),
    ({"cpus_per_trial": "2", "backend": "ray"}, "cpus_per_trial (--cpus-per-trial) must be a number of CPUs, got str '2'"),
    ({"timeout": True}, "timeout (--timeout) must be a number of seconds (or None: no limit), got bool True"),  # was 1 s
    ({"batch": 2**31}, "must be at most 2147483647 (2**31 - 1), got 2147483648"),
    ({"seed_from": 3}, "seed_from must be a str (or None), got int 3"),
    ({"device": 3}, "device must be a str (or None), got int 3"),
    # were read as left out: study_name='' started a new search where a resume was meant
    ({"study_name": ""}, "study_name is '': give one, or None for the default"),
    ({"mlflow_parent_run_id": " "}, "mlflow_parent_run_id is ' ': give one, or None for no parent"),
    ({"seed_from": ""}, "seed_from is '': give one, or 'auto' for the default (a sensitivity table), None for no table (random budget-filling seeds)"),  # None is no table
    # failed after the model loaded, in the space loader or MLflow ('int' object has no attribute 'startswith')
    ({"space": None}, "space must be a non-empty str, got NoneType None"),
    ({"space": 3}, "space must be a non-empty str, got int 3"),
    ({"tracking_uri": 3}, "tracking_uri must be a non-empty str (or None), got int 3"),
    ({"experiment": 3}, "experiment must be a non-empty str, got int 3"),
    # one layer pinned to two choices: the last was taken silently (the CLI refused it)
    ({"pins": ["6=fp16", "6=int8-ch-asym:rtn-mse"]}, "pattern '6' is pinned twice, to 'fp16' and to 'int8-ch-asym:rtn-mse'"),
    ({"pins": [("6", "fp16"), ("6", "int8-ch-asym:rtn-mse")]}, "pattern '6' is pinned twice"),
    ({"space": "does-not-exist.yaml"}, "search-space file 'does-not-exist.yaml' does not exist"),  # before any model loads
    ({"n_trials": None}, "n_trials (--n-trials) must be a whole number (at least 1), got NoneType None"),  # only max_uniform_seeds' None is no limit
    ({"cpus_per_trial": None, "backend": "ray"}, "cpus_per_trial (--cpus-per-trial) must be a number of CPUs, got NoneType None"),  # only timeout's None is none
    ({"batch": 10**40}, "batch (--batch: rows of activations per forward, for latency) must be at most 2147483647 (2**31 - 1), "
                        "got a number of 41 digits"),
    # a pattern that is no regular expression, refused before the model loads (minutes for a Hugging Face model)
    ({"skip": "*"}, "invalid skip pattern '*'"),
    ({"pins": {"*": "fp16"}}, "invalid pin pattern '*'"),
    ({"pins": "=fp16"}, "cannot parse pin '=fp16'; expected PATTERN=CHOICE"),  # no pattern
    ({"plugins": ("",)}, "plugins must be module names or .py files (str), got ('',)"),
])
def test_a_wrong_kind_is_one_clear_error(options, needle):
    with pytest.raises(AutoqError) as info:
        SearchConfig(**{"tracking_uri": None, "storage": None, **options})
    assert needle in str(info.value)


def test_kinds_a_pipeline_passes_are_taken_and_normalised():
    config = SearchConfig(tracking_uri=None, storage=None, n_trials=np.int64(7), skip="pooler", pins=["attn=fp16", "fc=int8-ch-asym:rtn-mse"],
                          max_uniform_seeds=None, progress=np.False_, timeout=np.float32(30))
    assert config.n_trials == 7 and type(config.n_trials) is int and config.skip == ("pooler",)
    assert config.progress is False and type(config.timeout) is float and config.timeout == 30.0
    assert config.pins == (("attn", "fp16"), ("fc", "int8-ch-asym:rtn-mse"))  # the command line's form, as --pin gives it
    assert SearchConfig(tracking_uri=None, storage=None, experiment=None).experiment == "autoq"  # None: the default (os.environ.get)
    assert SearchConfig(tracking_uri=None, storage=None, pins={"a": "fp16"}).pins == (("a", "fp16"),)
    assert SearchConfig(tracking_uri=None, storage=None, device="h100", batch=2**31 - 1).batch == 2**31 - 1  # the largest batch a kernel takes


def test_least_values_one_pin_and_one_plug_in_are_taken_as_given():
    """0 retries, fill seeds and uniform seeds are the least each option takes; one pin or plug-in may be one string,
    as one skip pattern may; a study name holding both kinds of quote is refused only where MLflow filters runs by it."""
    config = SearchConfig(tracking_uri=None, storage=None, max_retries=0, n_fill_seeds=0, max_uniform_seeds=0, pins="attn=fp16",
                          plugins="autoq.builtin", study_name="""a'b"c""")
    assert (config.max_retries, config.n_fill_seeds, config.max_uniform_seeds) == (0, 0, 0)
    assert config.pins == (("attn", "fp16"),) and config.plugins == ("autoq.builtin",) and config.study_name == """a'b"c"""
    assert SearchConfig(tracking_uri=None, storage=None, plugins=["autoq.builtin"]).plugins == ("autoq.builtin",)  # a tuple, as skip is


def test_calibration_as_one_tensor_or_a_wrong_holdout_is_refused_and_apply_checks_its_arguments():
    model = torch.nn.Sequential(torch.nn.Linear(16, 4))
    with pytest.raises(AutoqError, match="not one tensor, whose 64 rows would each be a batch; split it"):
        autoq.search(model, torch.randn(64, 16), tracking_uri=None, storage=None)
    data = [torch.randn(8, 16) for _ in range(4)]
    with pytest.raises(AutoqError, match="holdout must be between 0 and 1, got '0.5'"):
        autoq.search(model, data, holdout="0.5", tracking_uri=None, storage=None)
    result = autoq.search(model, data, budget="6bits", n_trials=2, seed_from="none", tracking_uri=None, storage=None, progress=False)
    with pytest.raises(AutoqError, match="apply quantizes an nn.Module in place; got str"):
        result.apply("digits-cnn")
    with pytest.raises(AutoqError, match="point must be a Point of this result .* got dict"):
        result.apply(model, {"0": "int4-ch-asym:rtn-mse"})


def test_files_given_as_paths_are_taken_as_a_model_is(tmp_path):
    """space=Path(...) was refused ("space must be a non-empty str, got PosixPath"), as were seed_from and device,
    though model=, autoq.export and autoq.load take a Path."""
    from pathlib import Path

    import autoq.latency
    from autoq.search_spaces import load_preset

    space = tmp_path / "space.yaml"
    space.write_text(Path(load_preset.__globals__["__file__"]).with_name("per-channel.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    table = sorted((Path(autoq.latency.__file__).parent / "tables").glob("*.json"))[0]  # a committed latency table
    (tmp_path / "scores.json").write_text("{}", encoding="utf-8")  # read when the search seeds, not here
    config = SearchConfig(space=space, seed_from=tmp_path / "scores.json", device=table, budget="3ms", tracking_uri=None)
    assert (config.space, config.seed_from, config.device) == (str(space), str(tmp_path / "scores.json"), str(table))


@pytest.mark.parametrize(("options", "said"), [
    ({"tracking_uri": "sqlite:///{ro}/mlflow.db"}, r"^Optuna storage \(auto: beside the MLflow store\) sqlite:///{ro}/optuna.db: the folder "
     r"'{ro}' is not writable; pass a --tracking-uri \(tracking_uri=\) in a folder you can write to: the Optuna storage follows it$"),
    ({"tracking_uri": None}, r"^Optuna storage \(auto: in the working folder\) sqlite:///{ro}/optuna.db: the folder '{ro}' is not "
     r"writable; run from a folder you can write to, or pass a --storage \(storage=\) URL in one$"),
    ({"tracking_uri": None, "storage": "sqlite:///{ro}/o.db"}, r"^Optuna storage sqlite:///{ro}/o.db: the folder '{ro}' is not writable; "
     r"pass a --storage \(storage=\) URL in a folder you can write to$"),
    ({"tracking_uri": "sqlite:///{ro}/mlflow.db", "storage": None}, r"^MLflow tracking store sqlite:///{ro}/mlflow.db: the folder '{ro}' "
     r"is not writable; pass a --tracking-uri \(tracking_uri=\) in a folder you can write to$"),
])
def test_a_store_that_cannot_be_written_names_the_option_that_moves_it(options, said, tmp_path, monkeypatch):
    """The automatic Optuna storage's refusal said "pass a URL", naming no option: a --storage alone then met the same
    refusal for the MLflow store beside it, and with no MLflow store it was still said to be beside one."""
    import os
    import re
    from pathlib import Path

    ro = tmp_path / "ro"
    ro.mkdir()
    monkeypatch.chdir(ro)
    access = os.access  # as root, permissions stop no write: the check's own os.access answers as for another user's folder
    monkeypatch.setattr(os, "access", lambda path, mode: access(path, mode) and not (mode & os.W_OK and Path(path).absolute() == ro))
    options = {key: value.format(ro=ro) if isinstance(value, str) else value for key, value in options.items()}
    with pytest.raises(AutoqError, match=said.format(ro=re.escape(str(ro)))):
        autoq.search(torch.nn.Sequential(torch.nn.Linear(8, 8)), [torch.randn(2, 8)] * 2, budget="4.5bits", n_trials=1, progress=False, **options)
