"""Conformance of every registered kernel (autoq.kernels.registry), and that importing autoq never imports Triton."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from autoq.errors import AutoqError
from autoq.kernels.capability import interpreting
from autoq.kernels.registry import get_kernel, kernel_names, kernels_for
from autoq.quant import QuantSpec, quantize

DEVICE = torch.device("cpu" if interpreting() else "cuda")
PROBE_FORMATS = ["int2-g32-asym", "int3-ch-sym", "int4-g128-asym", "int8-ch-sym", "int8-tensor-sym", "int5-g64-asym"]


@pytest.mark.parametrize("name", kernel_names())
def test_every_kernel_matches_float64_on_every_format_it_reads(name: str):
    info = get_kernel(name)
    gen = torch.Generator().manual_seed(len(name))
    formats = [QuantSpec.from_name(f) for f in PROBE_FORMATS if info.supports(QuantSpec.from_name(f))]
    assert formats, f"kernel {name} reads none of {PROBE_FORMATS}"
    for spec in formats:
        qt = quantize(torch.randn(40, 150, generator=gen), spec)
        weight = info.prepare(qt).to(DEVICE)
        w64 = qt.dequantize().double().to(DEVICE)
        for m in (1, 18):
            x = torch.randn(m, 150, generator=gen).half().to(DEVICE)
            ref = x.double() @ w64.T
            for backend in ("triton", "torch"):
                y = info.run(x, weight, backend=backend)
                assert y.shape == (m, 40) and y.dtype == torch.float16
                # relative to the largest output: fp16 rounding, plus per-token int8 activations for W8A8
                tol = 2e-2 if info.quantizes_activations else 2e-3
                assert (y.double() - ref).abs().max() <= tol * ref.abs().max(), (name, spec.name, m, backend)


def test_kernels_for_each_format():
    assert [k.name for k in kernels_for(QuantSpec.from_name("int4-g128-asym"))] == ["wq", "wq-gemm", "wq-gemv"]
    assert "w8a8" in [k.name for k in kernels_for(QuantSpec.from_name("int8-ch-sym"))]
    assert "w8a8" not in [k.name for k in kernels_for(QuantSpec.from_name("int8-g128-sym"))]
    assert kernels_for(QuantSpec.half()) == []
    with pytest.raises(AutoqError, match="unknown kernel 'marlin'; choose one of wq, wq-gemv, wq-gemm, w8a8"):
        get_kernel("marlin")


def test_importing_autoq_and_its_kernels_package_does_not_import_triton():
    code = ("import sys, autoq, autoq.kernels, autoq.kernels.ops, autoq.kernels.registry, autoq.kernels.bench, autoq.cli.kernels; "
            "assert 'triton' not in sys.modules, 'triton was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


BLOCK_SEARCH_DEPS = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('optuna', 'mlflow', 'ray'):
            raise ImportError(f'{name} is blocked: a GPU machine may have only torch and Triton')
sys.meta_path.insert(0, Block())
"""


def test_kernels_and_their_cli_need_neither_optuna_nor_mlflow_nor_ray():
    """A lent GPU machine has torch and Triton but not the search stack: measuring there must still work."""
    code = BLOCK_SEARCH_DEPS + (
        "import autoq, autoq.kernels.bench, autoq.export, autoq.tracking\n"
        "from autoq.cli import build_parser, main\n"
        "build_parser()\n"
        "assert main(['kernels', 'bench', '--model', 'none']) == 2  # a usage error on any machine, after the imports\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    with pytest.raises(subprocess.CalledProcessError):  # and the blocker does block: the search itself needs Optuna
        subprocess.run([sys.executable, "-c", BLOCK_SEARCH_DEPS + "import autoq; autoq.search"], check=True, timeout=120,
                       capture_output=True)


def test_autotuning_is_off_under_the_interpreter_and_with_autoq_autotune_0(monkeypatch):
    from autoq.kernels.capability import autotuning

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv("AUTOQ_AUTOTUNE", raising=False)
    assert not autotuning()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert autotuning()
    for off in ("0", "false", " No", "OFF"):  # as the docs' AUTOQ_AUTOTUNE=0, in any of the usual spellings
        monkeypatch.setenv("AUTOQ_AUTOTUNE", off)
        assert not autotuning(), off
    monkeypatch.setenv("AUTOQ_AUTOTUNE", "1")
    assert autotuning()


def test_triton_runs_on_cuda_tensors_and_on_cpu_ones_only_under_the_interpreter(monkeypatch):
    """No other device is usable, interpreter or not (a meta or mps tensor would reach a Triton launch)."""
    from autoq.kernels.capability import triton_usable

    for interpret, usable in (("1", {"cpu", "cuda"}), ("0", {"cuda"})):
        monkeypatch.setenv("TRITON_INTERPRET", interpret)
        assert {d for d in ("cpu", "cuda", "meta", "mps") if triton_usable(torch.device(d))} == usable, interpret


def test_the_interpreter_is_read_from_the_environment_as_triton_reads_it(monkeypatch):
    """' 1' was taken for the interpreter, which Triton then did not run (a traceback), and 'y' refused though Triton
    interprets with it: every value is compared with Triton's own reading of it."""
    from triton._C.libtriton import getenv_bool

    from autoq.kernels.capability import interpreting

    for value in ("1", " 1", "1 ", "y", "Y", "yes", "ON", "true", "t", "2", "0", "off", ""):
        monkeypatch.setenv("TRITON_INTERPRET", value)
        assert interpreting() == getenv_bool("TRITON_INTERPRET", False), value
    monkeypatch.delenv("TRITON_INTERPRET")
    assert not interpreting()


def test_a_kernel_whose_run_cannot_compile_only_is_refused_when_registered(monkeypatch):
    """docs/plugins.md gave run(x, packed, backend): such a kernel failed the bench's precompile on every format."""
    from autoq.kernels import registry
    from autoq.kernels.formats import PackedWeight, supports_weight_only

    monkeypatch.setattr(registry, "_KERNELS", registry._KERNELS.copy())

    def info(name, run):
        return registry.KernelInfo(name, "dense", supports_weight_only, PackedWeight.from_quantized, PackedWeight.empty, run)

    with pytest.raises(ValueError, match="kernel 'dense-deq': run must take compile_only"):
        registry.register_kernel(info("dense-deq", lambda x, packed, backend="auto": x))
    assert "dense-deq" not in kernel_names()
    registry.register_kernel(info("dense-ok", lambda x, packed, backend="auto", compile_only=False: x))
    registry.register_kernel(info("dense-kw", lambda x, packed, backend="auto", **options: x))
    registry.register_kernel(info("builtin-run", max))  # no signature to read: trusted, not refused
    assert {"dense-ok", "dense-kw", "builtin-run"} <= set(kernel_names())
    assert kernel_names() == sorted(kernel_names())


def test_the_weight_only_entries_name_their_kernel_and_pass_compile_only_on(monkeypatch):
    """``wq`` dispatches by batch (kernel auto: the GEMV at batch 1), ``wq-gemv`` and ``wq-gemm`` name theirs, and each
    passes ``compile_only`` to ``wq_linear`` (a precompile would launch the kernel)."""
    from autoq.kernels import ops

    calls = []
    monkeypatch.setattr(ops, "wq_linear", lambda x, w, backend, kernel, compile_only: calls.append((kernel, compile_only)))
    for name in ("wq", "wq-gemv", "wq-gemm"):
        get_kernel(name).run(None, None, "triton", compile_only=True)
    assert calls == [("auto", True), ("gemv", True), ("gemm", True)]
