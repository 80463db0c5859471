"""A search records its plug-in PTQ methods' code: an export or a resume after the plug-in was edited is refused (an
export quantized with the new code under the old point's quality; a resume mixed two versions under one name)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from helpers import plugin_space
from torch import nn

import autoq
from autoq.errors import AutoqError
from autoq.ptq import registry

PLUGIN = '''
from autoq.ptq import get_method, register_method

CLIP = {clip}


@register_method("clip-user")
def clip_user(weight, spec, stats=None):
    limit = weight.abs().amax() * CLIP
    return get_method("rtn-minmax")(weight.clamp(-limit, limit), spec)
'''

SPACE = plugin_space("clip", ["clip-user", "rtn-minmax"])


def _register(tmp_path, monkeypatch, base, clip: float) -> None:
    """The plug-in file as it is now, imported afresh and registered (as a new process would)."""
    monkeypatch.setattr(registry, "_METHODS", base.copy())
    path = tmp_path / "clipplug.py"
    path.write_text(PLUGIN.format(clip=clip))
    spec = importlib.util.spec_from_file_location("clipplug", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


@pytest.fixture
def searched(tmp_path, monkeypatch):
    base = registry._METHODS.copy()
    _register(tmp_path, monkeypatch, base, 0.9)
    (tmp_path / "space.yaml").write_text(SPACE)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 48), nn.GELU(), nn.Linear(48, 8)).eval()
    g = torch.Generator().manual_seed(1)
    data = [torch.randn(16, 32, generator=g) for _ in range(4)]
    kwargs = dict(budget="8bits", space=str(tmp_path / "space.yaml"), seed_from="none", progress=False, study_name="clip",
                  tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    result = autoq.search(model, data, n_trials=4, **kwargs)
    return model, data, result, kwargs, lambda clip: _register(tmp_path, monkeypatch, base, clip)


def test_an_edited_plugin_method_is_refused_by_export_and_resume(searched, tmp_path):
    model, data, result, kwargs, register = searched
    point = next(p for p in result.points if any(c.method == "clip-user" for c in p.assignment.values()))
    register(0.3)  # the plug-in edited after the search
    with pytest.raises(AutoqError, match=r"plug-in PTQ method\(s\) clip-user is not what trial \d+'s search scored with"):
        autoq.export(model, point, tmp_path / "direct", calibration=data, progress=False)
    with pytest.raises(AutoqError, match=r"plug-in PTQ method\(s\) clip-user is not what trial \d+ \(run"):
        autoq.export(model, point.run_id, tmp_path / "by-run", tracking_uri=kwargs["tracking_uri"], calibration=data, progress=False)
    with pytest.raises(AutoqError, match=r"cannot resume 'clip': the code of plug-in PTQ method\(s\) clip-user is not what"):
        autoq.search(model, data, n_trials=6, resume=True, **kwargs)
    autoq.export(model, point.assignment, tmp_path / "unscored", calibration=data, progress=False)  # the way the error offers

    register(0.9)  # the plug-in as it was: both go on
    autoq.export(model, point, tmp_path / "direct", calibration=data, progress=False)
    resumed = autoq.search(model, data, n_trials=6, resume=True, **kwargs)
    assert len(resumed.points) == 6 and dict(resumed.best.searched.plugin_code) == dict(result.best.searched.plugin_code)
    assert set(dict(result.best.searched.plugin_code)) == {"clip-user"}  # autoq's own methods are not recorded


STATEFUL = '''
from autoq.ptq import get_method, register_method


class _Stats:
    def __init__(self):
        self.calls = 0


STATS = _Stats()


@register_method("counted")
def counted(weight, spec, stats=None, _memo={{}}):
    STATS.calls += 1
    _memo[tuple(weight.shape)] = STATS.calls
    return get_method("rtn-minmax")(weight, spec)
'''


def test_a_plugins_own_state_changing_as_it_runs_is_not_an_edit(tmp_path, monkeypatch):
    """A call counter and a memo default filled as the method ran: the export right after the search that scored it
    was refused as 'edited since'. The digest is taken once, before the method first runs."""
    monkeypatch.setattr(registry, "_METHODS", registry._METHODS.copy())
    path = tmp_path / "countplug.py"
    path.write_text(STATEFUL.format())
    spec = importlib.util.spec_from_file_location("countplug", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (tmp_path / "space.yaml").write_text(plugin_space("counted", ["counted"]))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 48), nn.GELU(), nn.Linear(48, 8)).eval()
    data = [torch.randn(16, 32, generator=torch.Generator().manual_seed(1)) for _ in range(4)]
    result = autoq.search(model, data, budget="8bits", space=str(tmp_path / "space.yaml"), n_trials=3, seed_from="none",
                          tracking_uri=None, storage=None, progress=False)
    assert module.STATS.calls > 0 and set(dict(result.best.searched.plugin_code)) == {"counted"}
    autoq.export(model, result.best, tmp_path / "out", calibration=data, progress=False)  # refused as edited, before
    assert (tmp_path / "out" / "model.safetensors").is_file()
