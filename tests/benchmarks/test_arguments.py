"""The benchmark scripts' options: a count below 1 or a malformed ``--configs`` is a usage error naming the form, not a
ZeroDivisionError, an empty ``max()`` or an unpacking ValueError after the model has loaded."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def scripts(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import provenance as their neighbour
    import provenance
    import throughput

    yield provenance, throughput
    for name in ("provenance", "throughput"):
        sys.modules.pop(name, None)


def test_a_count_is_a_whole_number_of_at_least_one(scripts):
    provenance, _ = scripts
    assert provenance.count("3") == 3
    with pytest.raises(argparse.ArgumentTypeError, match="0 is below 1; give a count of at least 1"):
        provenance.count("0")
    with pytest.raises(argparse.ArgumentTypeError, match="'2.5' is not a whole number"):
        provenance.count("2.5")


@pytest.mark.parametrize("text", ["optuna", "ray:0", "ray:x", "dask:2", "optuna:1,"])
def test_throughput_configs_are_backend_colon_workers(scripts, text):
    _, throughput = scripts
    assert throughput._configs("optuna:1,ray:2") == [("optuna", 1), ("ray", 2)]
    with pytest.raises(argparse.ArgumentTypeError, match=r"give BACKEND:WORKERS items, comma-separated"):
        throughput._configs(text)


def test_out_makes_its_folder_before_the_run_and_refuses_a_folder(scripts, tmp_path):
    """'--out new/x.json' measured for the whole run, then failed to write (FileNotFoundError): the result was lost."""
    provenance, _ = scripts
    target = tmp_path / "new" / "deeper" / "x.json"
    assert provenance.out_file(str(target)) == str(target) and target.parent.is_dir()
    with pytest.raises(argparse.ArgumentTypeError, match=r"is a folder; give the JSON file to write"):
        provenance.out_file(str(tmp_path))
    (tmp_path / "file").write_text("")
    with pytest.raises(argparse.ArgumentTypeError, match=r"cannot make the folder of .*; give a path you can write"):
        provenance.out_file(str(tmp_path / "file" / "x.json"))  # its folder would be inside a file


@pytest.mark.parametrize("script", ["gemv_sass", "gemm_sass", "gemv_floor"])
def test_the_gpu_scripts_take_out_through_out_file(script, monkeypatch, tmp_path, capsys):
    """Their --out was written as given at the end: a missing folder was a FileNotFoundError once every tile had been
    compiled (gemv_floor's, after its first GPU row). A folder is now refused as the arguments are read."""
    import importlib

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    module = importlib.import_module(script)
    try:
        monkeypatch.setattr(sys, "argv", [f"{script}.py", "--out", str(tmp_path)])  # gemv_floor reads sys.argv
        with pytest.raises(SystemExit) as exc:
            module.main(*([] if script == "gemv_floor" else [["--out", str(tmp_path)]]))
        assert exc.value.code == 2 and "is a folder; give the JSON file to write" in capsys.readouterr().err
    finally:
        for name in (script, "provenance"):
            sys.modules.pop(name, None)
