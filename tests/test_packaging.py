"""What ``pyproject.toml`` promises: a real wheel carries every module and data file, and every lower bound is the release
``.ci/lowest`` installs.

``pyproject.toml`` maps ``kernels/``, ``sensitivity/`` and ``search_spaces/`` into ``autoq`` and lists the
packages by hand, so a new subpackage left off the list still imports in an editable install (what the tests run
from) and is missing from a real one. Building the wheel is the check that sees it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
MAPPED = {"autoq": "autoq", "kernels": "autoq/kernels", "sensitivity": "autoq/sensitivity", "search_spaces": "autoq/search_spaces"}
DATA_SUFFIXES = (".py", ".yaml", ".json", "py.typed")


def source_files(tracked: list[str]) -> set[str]:
    """Every tracked module and data file of the package (from ``tracked``, the repository's files), as its path inside the wheel."""
    files = set()
    for path in tracked:
        top, _, rest = path.partition("/")
        if top in MAPPED and (path.endswith(DATA_SUFFIXES) or path == "autoq/latency/tables/README.md"):
            files.add(f"{MAPPED[top]}/{rest}")
    return files


def test_wheel_holds_every_module_and_data_file(tmp_path):
    if not (REPO / ".git").exists():
        pytest.skip("needs the git checkout to list the tracked files")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split("\0")
    src = tmp_path / "src"  # a copy of the tracked files: a build in the checkout leaves build/, whose stale files could ship
    for path in tracked:
        if path and (REPO / path).is_file():
            (src / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / path, src / path)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(src)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    assert "would be ignored" not in build.stderr, build.stderr[-2000:]  # setuptools' warning for an unlisted package
    (wheel,) = tmp_path.glob("autoq-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    expected = source_files(tracked)
    assert {"autoq/kernels/triton_wq_gemv.py", "autoq/search_spaces/default.yaml", "autoq/sensitivity/__init__.py", "autoq/py.typed"} <= expected
    assert not expected - shipped, f"tracked but not in the wheel: {sorted(expected - shipped)}"


def lower_bounds(requirements: list[str]) -> dict[str, Version]:
    """Each requirement's ``>=`` version by canonical name; a name with two different bounds (say in two extras) fails."""
    bounds: dict[str, Version] = {}
    for text in requirements:
        req = Requirement(text)
        (floor,) = [Version(s.version) for s in req.specifier if s.operator == ">="] or [None]
        assert floor, f"{text}: every dependency needs a lower bound for .ci/lowest to install"
        name = canonicalize_name(req.name)
        assert bounds.setdefault(name, floor) == floor, f"{name} has two lower bounds: {bounds[name]} and {floor}"
    return bounds


def test_lowest_constraints_pin_every_lower_bound():
    """``.ci/lowest-constraints.txt`` pins exactly the installed metadata's lower bounds (pyproject.toml's, at install)."""
    floors = lower_bounds(requires("autoq") or [])
    pins = {}
    for line in (REPO / ".ci" / "lowest-constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[canonicalize_name(req.name)] = Version(spec.version)
    assert {"torch", "triton", "optuna", "mlflow", "ray", "pytest"} <= set(floors)
    assert pins == floors


def test_readme_states_the_torch_and_triton_range_pyproject_gives():
    readme = (REPO / "README.md").read_text()
    torch_low, torch_high = re.search(r"Any torch from ([\d.]+) to ([\d.]+) works", readme).groups()
    triton_low = re.search(r"Triton ([\d.]+) is the oldest", readme).group(1)
    specs = {canonicalize_name(Requirement(r).name): Requirement(r).specifier for r in requires("autoq") or []}
    assert {(s.operator, Version(s.version)) for s in specs["torch"]} == {(">=", Version(torch_low)), ("<=", Version(torch_high))}
    assert {(s.operator, Version(s.version)) for s in specs["triton"]} == {(">=", Version(triton_low))}
    assert re.search(rf"oldest torch\s+whose Linux wheels go with it is {re.escape(torch_low)}\b", readme)


WITHOUT_TRITON = """
import sys

class NoTriton:  # macOS and Windows: Triton publishes Linux wheels only
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "triton":
            raise ImportError(f"No module named {name!r}")

sys.meta_path.insert(0, NoTriton())
import torch
import autoq

result = autoq.search("digits-cnn", budget="4.5bits", n_trials=3, tracking_uri=None, storage=None, progress=False)
autoq.export("digits-cnn", result.best, "exported")
print(tuple(autoq.load("exported")(torch.zeros(2, 1, 8, 8)).shape))
"""


def test_triton_is_required_on_linux_alone_and_autoq_runs_without_it(tmp_path):
    """An unconditional triton requirement made `pip install autoq` fail on macOS and Windows ("No matching distribution
    found for triton"), where its CPU path (search, export, load) needs none."""
    (triton,) = [Requirement(r) for r in requires("autoq") or [] if canonicalize_name(Requirement(r).name) == "triton"]
    assert triton.marker is not None
    assert triton.marker.evaluate({"sys_platform": "linux"}) and not triton.marker.evaluate({"sys_platform": "darwin"})
    assert not triton.marker.evaluate({"sys_platform": "win32"})
    done = subprocess.run([sys.executable, "-c", WITHOUT_TRITON], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.split("\n")[-2] == "(2, 10)", done.stderr[-2000:]
