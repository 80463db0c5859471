"""Compile the kernels a benchmark will launch before it launches them, on every CPU core.

An autotuned kernel compiles each candidate tile the first time a new format and shape is
launched, one after another. Measuring the default formats at LLaMA-7B's and the default
model's shapes makes about a thousand such compilations (0.4-0.6 s each on this project's
CPU machine): more than a short GPU lease. :func:`precompile` runs them first, in parallel
worker processes, into Triton's on-disk cache; the launches then load them from there.

The workers need no GPU. Each compiles for a given target (the GPU's, read in the parent)
through a compile-only Triton driver, with ``meta`` tensors in place of data, by calling the
kernels' own entry points with ``compile_only=True``: they specialize and compile exactly
what a launch of those shapes would, and so share its cache entries. The same code runs on
a machine without a GPU, which is how the tests check it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import torch

from autoq.errors import AutoqError
from autoq.kernels.capability import interpreting, triton_installed


@dataclass(frozen=True)
class Target:
    """What to compile for, as Triton names it: backend (``cuda``), architecture (``90``), warp size."""

    backend: str = "cuda"
    arch: int = 90
    warp_size: int = 32

    @classmethod
    def current(cls) -> Target:
        """The target Triton compiles for on this machine (its GPU's); an ``AutoqError`` without a GPU."""
        from triton.runtime.driver import driver

        try:
            target = driver.active.get_current_target()
        except RuntimeError as exc:
            raise AutoqError(f"Triton finds no GPU to compile for here ({exc}); name a target instead, "
                             "e.g. Target('cuda', 90, 32) for Hopper") from None
        return cls(target.backend, int(target.arch), int(target.warp_size))


@dataclass(frozen=True)
class PrecompileCase:
    """One kernel (registry name) in one format (``QuantSpec`` name) at these ``(N, K)`` shapes and batch sizes.

    ``device`` holds the stand-in tensors: ``meta`` (no memory) unless a test wants real allocations."""

    kernel: str
    spec: str
    shapes: tuple[tuple[int, int], ...]
    batches: tuple[int, ...]
    dtype: str = "float16"
    device: str = "meta"


@dataclass(frozen=True)
class PrecompileReport:
    """How precompiling went: cases, worker processes, seconds, new entries in Triton's cache, failed cases."""

    cases: int
    workers: int
    seconds: float
    compiled: int
    failures: tuple[str, ...] = ()

    def summary(self) -> str:
        failed = f"; {len(self.failures)} failed, first: {self.failures[0]}" if self.failures else ""
        return (f"precompiled {self.compiled} kernels for {self.cases} cases in {self.seconds:.0f} s "
                f"with {self.workers} processes{failed}")


def _compile_only_driver(target: Target):
    """A Triton driver that compiles for ``target`` and launches nothing: enough for ``kernel.warmup``."""
    from triton.backends.compiler import GPUTarget
    from triton.backends.driver import DriverBase

    class CompileOnlyDriver(DriverBase):
        @classmethod
        def is_active(cls) -> bool:
            return False

        def get_current_target(self):
            return GPUTarget(target.backend, target.arch, target.warp_size)

        def get_current_device(self) -> str:  # Triton keeps compiled kernels per device: one key per target, no GPU's
            return f"compile-only:{target.backend}:{target.arch}"

        def get_current_stream(self, device=None) -> int:
            return 0

        def get_active_torch_device(self) -> torch.device:
            return torch.device("meta")

        def map_python_to_cpp_type(self, ty: str) -> str:
            raise AutoqError("the compile-only Triton driver launches nothing, so it maps no argument types")

        def get_benchmarker(self):
            raise AutoqError("the compile-only Triton driver cannot time kernels: it compiles them and runs none")

        def __getattr__(self, name: str):  # launching, device memory: none of it here (AttributeError keeps hasattr working)
            raise AttributeError(f"the compile-only Triton driver has no {name!r}: it compiles kernels and runs none")

    return CompileOnlyDriver()


def _require_compiler(what: str) -> None:
    if interpreting():
        raise AutoqError(f"{what} needs TRITON_INTERPRET unset or 0: the interpreter runs kernels without compiling them")


@contextlib.contextmanager
def compiling_for(target: Target) -> Iterator[None]:
    """Within it, Triton launches in this process compile for ``target`` and run nothing (no GPU needed).

    The kernels' ``compile_only=True`` entry points then return what they compiled, exactly as a launch
    specializes it; :mod:`autoq.kernels.compile_check` reads their machine code this way."""
    from triton.runtime.driver import driver

    _require_compiler("compiling kernels")
    previous = getattr(driver, "_active", None)  # None: Triton picks its default driver when next asked (none without a GPU)
    driver.set_active(_compile_only_driver(target))
    try:
        yield
    finally:
        driver.set_active(previous)


def compile_launches(case: PrecompileCase) -> None:
    """Compile, in this process, every kernel ``case`` launches (Triton's active driver decides the target)."""
    from autoq.kernels.registry import get_kernel
    from autoq.quant import QuantSpec

    info, spec, dtype = get_kernel(case.kernel), QuantSpec.from_name(case.spec), getattr(torch, case.dtype)
    if not info.supports(spec):
        raise AutoqError(f"kernel {case.kernel!r} does not read {spec.name}")
    for n, k in case.shapes:
        weight = info.empty(spec, (n, k), case.device)
        for m in case.batches:
            info.run(torch.empty(m, k, dtype=dtype, device=case.device), weight, "triton", compile_only=True)


def _init_worker(target: Target) -> None:
    """Worker start: compile (never interpret) for ``target``; Triton is first imported here, after the switch."""
    os.environ["TRITON_INTERPRET"] = "0"
    from triton.runtime.driver import driver

    driver.set_active(_compile_only_driver(target))


def _run_case(case: PrecompileCase) -> str | None:
    try:
        compile_launches(case)
    except Exception as exc:  # reported, not raised: the launch compiles what precompiling missed
        return f"{case.kernel} {case.spec}: {type(exc).__name__}: {exc}"
    return None


def triton_cache_dir() -> Path:
    """Triton's on-disk kernel cache, as Triton resolves it (``TRITON_CACHE_DIR``, ``TRITON_HOME``, ``~/.triton/cache``)."""
    from triton import knobs

    return Path(knobs.cache.dir)


def cache_entries() -> int:
    """Compiled kernels in Triton's cache: one folder each."""
    folder = triton_cache_dir()
    return sum(1 for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else 0


def precompile(cases: Sequence[PrecompileCase], target: Target, workers: int | None = None, progress: bool = True) -> PrecompileReport:
    """Compile every case's kernels for ``target`` in ``workers`` processes (default: one per core, at most one per case).

    Failures are reported, not raised: whatever was not precompiled compiles when it is launched."""
    if not triton_installed():
        raise AutoqError("precompiling kernels needs Triton; install it with 'pip install triton'")
    _require_compiler("precompiling")
    if workers is not None and workers < 1:
        raise AutoqError(f"precompile workers must be at least 1, got {workers}")
    from autoq.progress import progress_bar

    cases = list(cases)
    workers = max(1, min(workers or os.cpu_count() or 1, len(cases)))
    before, start = cache_entries(), time.perf_counter()
    failures: list[str] = []
    try:  # spawn, not fork: a forked child would inherit the parent's CUDA context and its imported, interpreted kernels
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                                 initargs=(target,)) as pool, progress_bar(total=len(cases), desc="precompile", unit="case",
                                                                           disable=not progress) as bar:
            futures = {pool.submit(_run_case, case): case for case in cases}
            for future in as_completed(futures):
                try:
                    failure = future.result()
                except BrokenProcessPool as exc:  # a worker died (or failed to start): its cases compile at launch
                    failure = f"{futures[future].kernel} {futures[future].spec}: worker process failed: {exc}"
                if failure is not None:
                    failures.append(failure)
                bar.update(1)
    except OSError as exc:  # no processes or semaphores here (a sandbox without /dev/shm, say): compile at launch
        failures.append(f"could not start worker processes: {exc}")
    return PrecompileReport(len(cases), workers, time.perf_counter() - start, cache_entries() - before, tuple(failures))
