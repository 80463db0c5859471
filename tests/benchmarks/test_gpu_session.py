"""benchmarks/gpu_session.py, the one call a lent GPU gets: it measures what the default search needs.

The GPU machine has neither the default model's weights nor the search stack, so the script
carries the default model's layer shapes and the default space's formats as constants;
these tests keep them true. The script's GPU steps themselves can only run on a GPU.
"""

from __future__ import annotations

import importlib.util
import os
import re
import site as sitecustom
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


def test_its_steps_import_the_tree_and_find_the_repository(session, tmp_path):
    """The steps run in the importable tree, so that ``python -m`` finds it before the repository's ``autoq/`` (which
    lacks the mapped ``kernels/``) on any Python, and name the repository's files by absolute path. ``-S`` leaves out
    this environment's editable install, as on the GPU machine, which has none; its packages (torch) come in
    through ``PYTHONPATH`` instead."""
    site = session.importable_tree(tmp_path)
    env = {**session.step_env(site), "PYTHONPATH": os.pathsep.join([str(site), *sitecustom.getsitepackages()])}
    proc = subprocess.run([sys.executable, "-S", "-m", "autoq", "kernels", "bench", "--help"], cwd=site, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--rep-ms" in proc.stdout
    collect = [sys.executable, "-S", "-m", "pytest", str(session.REPO / "tests/kernels/test_formats.py"), "--rootdir", str(session.REPO),
               "--collect-only", "-q", "-p", "no:cacheprovider"]
    proc = subprocess.run(collect, cwd=site, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and " collected" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_the_gpu_timing_tests_are_the_ones_its_tests_step_runs_alone():
    """On 2026-12-04 a timing test ran beside seven processes' kernels on the same GPU and measured -11.5 us: the
    tests step runs ``-m gpu_timing`` alone, then the rest; every test that times the GPU must carry the marker."""
    base = [sys.executable, "-m", "pytest", "tests/kernels", "--collect-only", "-q", "-n", "0", "-p", "no:cacheprovider"]
    repo = str(Path(SCRIPT).parents[1])
    alone = subprocess.run([*base, "-m", "gpu_timing"], cwd=repo, capture_output=True, text=True, timeout=300).stdout
    rest = subprocess.run([*base, "-m", "not gpu_timing"], cwd=repo, capture_output=True, text=True, timeout=300).stdout
    timed = {line for line in alone.splitlines() if "::" in line}
    assert len(timed) >= 3 and all(t.startswith("tests/kernels/test_timing.py::") for t in timed), alone
    assert not timed & {line for line in rest.splitlines() if "::" in line} and "test_gemv_floor_sweep" in rest
    source = Path(SCRIPT).read_text()
    assert '"-n", "0", "-m", "gpu_timing"' in source and '"-m", "not gpu_timing"' in source


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_without_a_gpu_it_says_so_and_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "results")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA GPU" in proc.stderr
    assert not (tmp_path / "results").exists()  # the refusal made an empty folder for results it never wrote


def test_its_steps_run_in_order_with_shares_of_the_deadline(tmp_path):
    """The orchestration, with CUDA claimed in the driver only: each benchmark step then refuses (no GPU in its
    process) and says so in its log; the shares, commands and files are those a GPU machine gets."""
    fake = ("import runpy, sys, torch; torch.cuda.is_available = lambda: True; torch.cuda.get_device_name = lambda i=0: 'NVIDIA H200'; "
            f"sys.argv = ['gpu_session.py', '--out', {str(tmp_path)!r}, '--deadline-s', '1000', '--steps', 'floor,llama,table', "
            "'--timing', 'rotate']; "
            f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")
    scratch = tmp_path / "scratch"  # where the importable tree goes: removed at the end, as on a crash
    scratch.mkdir()
    proc = subprocess.run([sys.executable, "-c", fake], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TMPDIR": str(scratch)})
    assert proc.returncode == 1, proc.stdout + proc.stderr  # every step failed: no GPU where they ran
    assert not [p for p in scratch.iterdir() if p.name.startswith("autoq-site-")]
    out = proc.stdout
    floor = out.index("== batch-1 W4 floor, both timings: ")
    llama = out.index("== LLaMA-7B shapes: ")
    table = out.index("== default model's table: ")
    assert floor < llama < table and "kernel tests" not in out
    # a long deadline: the steps fail at once here, and the seconds a loaded machine takes between them (30 s seen) move
    # the shares of what is left by little
    assert re.search(r"gemv_floor_nvidia-h200\.json \(at most (3[01]\d) s\)", out)  # 0.25 / (0.25 + 0.35 + 0.2) of 1000 s
    stop, limit = map(float, re.search(r"kernels_nvidia-h200_rotate\.json --max-seconds (\d+) --timing rotate \(at most (\d+) s\)",
                                       out).groups())
    assert 600 <= limit <= 636 and abs(stop - 0.8 * limit) <= 1  # 0.35 / (0.35 + 0.2) of what is left
    assert "--timing rotate --out " + str(tmp_path / "h200.json") in out
    assert {p.name for p in tmp_path.iterdir()} == {"scratch", "nvidia_smi.txt", "floor.log", "llama.log", "table.log"}
    for log in ("floor.log", "llama.log", "table.log"):
        assert "needs a CUDA GPU" in (tmp_path / log).read_text()
    bad = subprocess.run([sys.executable, str(SCRIPT), "--steps", "llama,bogus"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--steps takes some of floor, llama, table, tests" in bad.stderr


def test_kernel_tests_spread_over_processes_only_where_xdist_is_installed(session):
    if importlib.util.find_spec("xdist") is None:
        assert session.xdist_args(16) == []
    else:
        assert session.xdist_args(16) == ["-n", "8"] and session.xdist_args(64) == ["-n", "8"] and session.xdist_args(1) == ["-n", "1"]
