"""A checkout's folders do not shadow installed packages: its kernels/ stood in for Hugging Face's ``kernels``, which
transformers 5.25 imports, and every Hugging Face model failed to load under ``python -m pytest`` run in the checkout
(where Hugging Face's package is not installed, ``kernels`` may still resolve to nothing: the tests allow that)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from autoq.checkout import checkout_root

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import importlib.util, sys
def where():
    spec = importlib.util.find_spec("kernels")
    return "none" if spec is None else spec.origin
before = where()
import kernels  # the checkout's, as transformers' probe found it
from autoq.checkout import unshadow_installed_packages
unshadow_installed_packages()
print(before)
print(where())
print("kernels" in sys.modules)
print(sys.path[-1])
"""


def test_the_checkouts_kernels_folder_stops_shadowing_an_installed_package():
    assert checkout_root() == ROOT
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == str(ROOT / "kernels" / "__init__.py")  # run in the checkout, Python finds its folder first
    assert out[1] != out[0]  # Hugging Face's kernels where installed (a venv in the checkout too), else none: never the folder
    assert out[2] == "False"  # the shadow imported before is forgotten
    assert out[3] == ""  # the checkout stays on sys.path, last: a user's own module there is still found


def test_importing_autoq_in_the_checkout_lets_installed_packages_come_first():
    """A snippet or notebook in the checkout imports autoq, then loads a Hugging Face model."""
    probe = "import autoq, importlib.util; spec = importlib.util.find_spec('kernels'); print('none' if spec is None else spec.origin)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[-1] != str(ROOT / "kernels" / "__init__.py")


def test_python_m_autoq_in_the_checkout_imports_no_shadow():
    probe = ("import runpy, sys; sys.argv = ['autoq', '--version']\n"
             "try:\n    runpy.run_module('autoq', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "import importlib.util; spec = importlib.util.find_spec('kernels'); print('none' if spec is None else spec.origin)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[-1] != str(ROOT / "kernels" / "__init__.py")
