"""benchmarks/gpu_session.py, the one call a lent GPU gets: it measures what the default search needs.

The GPU machine has neither the default model's weights nor the search stack, so the script
carries the default model's layer shapes and the default space's formats as constants;
these tests keep them true. The script's GPU steps themselves can only run on a GPU.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autoq.builtin import load_workload
from autoq.kernels.bench import model_shapes, parse_formats, parse_shapes
from autoq.model import find_layers
from autoq.search_spaces import load_preset
from autoq.space import SearchSpace

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_session.py"


@pytest.fixture(scope="module")
def session():
    spec = importlib.util.spec_from_file_location("gpu_session", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def minilm():
    return load_workload("minilm").model


def test_it_measures_the_default_models_shapes(session, minilm):
    assert set(parse_shapes(session.DEFAULT_MODEL_SHAPES)) == set(model_shapes(minilm))


def test_it_measures_every_format_of_the_default_space(session, minilm):
    space = SearchSpace.build(load_preset("default"), find_layers(minilm))
    searched = {c.weight.name for options in space.options for c in options if not c.weight.is_half}
    assert searched <= {s.name for s in parse_formats(session.TABLE_FORMATS)}


def test_its_autoq_tree_resolves_the_mapped_packages_without_pip(session, tmp_path):
    site = session.importable_tree(tmp_path)
    code = "import autoq.kernels.bench, autoq.sensitivity.registry, autoq.search_spaces; print(autoq.kernels.bench.__file__)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=site, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(site / "autoq" / "kernels" / "bench.py")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_without_a_gpu_it_says_so_and_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA GPU" in proc.stderr
