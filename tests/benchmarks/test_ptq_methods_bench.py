"""benchmarks/ptq_methods.py's bookkeeping: a partial run keeps the committed rows it did not measure, its options
parse or say what is wrong, and every CPU benchmark's JSON names the machine (benchmarks/provenance.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import provenance as their neighbour
    import ptq_methods

    yield ptq_methods
    sys.modules.pop("ptq_methods", None)


def test_a_partial_run_keeps_the_rows_it_did_not_measure(bench, tmp_path):
    """A run of one method wrote only its own rows: the committed table lost the other 30."""
    out = tmp_path / "ptq.json"
    rows = [{"model": "m", "format": f, "method": k, "quality": 0.5} for f in ("int3", "int4") for k in ("rtn-minmax", "gptq")]
    out.write_text(json.dumps({"meta": {"note": "by hand"}, "rows": rows}))
    kept, meta = bench._earlier(out, {("m", "int4", "gptq"), ("m", "int4", "rtn-minmax")})
    assert [(r["format"], r["method"]) for r in kept] == [("int3", "rtn-minmax"), ("int3", "gptq")] and meta == {"note": "by hand"}
    assert bench._earlier(tmp_path / "none.json", set()) == ([], {})


def test_ada_iters_takes_name_equals_steps_or_says_so(bench):
    """The docstring's '--ada-iters 100' ended in a ValueError traceback."""
    assert bench._model_steps("minilm=100") == ("minilm", 100)
    with pytest.raises(argparse.ArgumentTypeError, match="'100' is not NAME=STEPS"):
        bench._model_steps("100")


def test_provenance_names_the_cpu_the_date_and_the_commit(bench):
    from provenance import provenance

    run = provenance()
    assert set(run) >= {"machine", "date", "autoq_commit", "torch", "python"}
    assert not run["machine"].startswith(("x86_64,", "(")) and run["autoq_commit"] != ""  # a CPU name, not only the architecture


GPU_ONLY = {"gemm_sass.py", "gemv_floor.py", "gemv_sass.py", "gpu_session.py", "kernels_llama.py", "provenance.py"}


def test_every_cpu_benchmark_writes_its_provenance_into_its_json():
    """The docstring's claim, checked: precompile.py (no GPU needed) wrote only the architecture and the CPU count."""
    from pathlib import Path

    scripts = sorted(p for p in (Path(__file__).resolve().parents[2] / "benchmarks").glob("*.py") if p.name not in GPU_ONLY)
    assert len(scripts) >= 15
    missing = [p.name for p in scripts if "provenance()" not in p.read_text()]
    assert not missing, f"benchmarks that write no provenance() into their JSON: {missing}"
