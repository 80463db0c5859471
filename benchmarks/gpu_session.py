"""Everything a lent GPU is for, in one call: check autoq's kernels there and measure them.

Run it on the GPU machine (the device tool; it needs only torch and Triton, which that
machine's ``python3`` has, so autoq goes on ``PYTHONPATH`` instead of being installed):

    python3 benchmarks/gpu_session.py [--out DIR] [--deadline-s 450] [--steps floor,llama,table,tests] [--timing rotate]

Steps, each in its own process with a share of the deadline, so one that hangs loses
nothing already written (the two benchmarks first compile their several hundred kernels on every
core, ``autoq.kernels.precompile``; one at a time that takes about 10 minutes on a 2-core CPU):

1. ``benchmarks/gemv_floor.py``: batch 1 at the LLaMA-7B shapes, fp16 against the autotuned W4
   GEMV and every GEMV tile, and an empty call, each timed both ways (L2 flushed, and calls
   rotating over copies of the weights) -> ``gemv_floor_<device>.json``.
2. ``benchmarks/kernels_llama.py``: LLaMA-7B layer shapes at batch 1, 16, 128: speedup over
   torch fp16, bandwidth against the device's, then every kernel against float64 on the GPU
   -> ``kernels_<device>[_rotate].json``.
3. ``autoq kernels bench`` at the default model's layer shapes, in the default search
   space's formats, merged with step 2's table -> ``<preset>.json``: commit it as
   ``autoq/latency/tables/<preset>.json`` and ``--device <preset>`` reads it.
4. ``tests/kernels`` on the compiled kernels, one fixed block configuration each
   (``AUTOQ_AUTOTUNE=0``: autotuning every odd test shape would take the whole lease) and every
   autotune tile in ``test_autotune_tiles.py``, in several processes where pytest-xdist is
   installed; the CPU-only compile checks are left out. The GPU timing tests (marker ``gpu_timing``)
   run first and alone. ``-v`` logs each test as it ends, so a step cut off by its deadline still
   says which passed.

``--timing`` (``flush``, the default, or ``rotate``) is how steps 2 and 3 time each case
(``autoq.kernels.timing``); the table says which. Writes at most 8 files under ``--out``
(``$OUT`` on the device machine): the three JSON files, ``nvidia_smi.txt``, one log per step.
Without a GPU it says so and exits 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# all-MiniLM-L6-v2 (the default model): q/k/v/o and pooler 384x384, intermediate 1536x384, output 384x1536.
# The GPU machine does not have its weights; tests/benchmarks/test_gpu_session.py checks these against the model.
DEFAULT_MODEL_SHAPES = "384x384,1536x384,384x1536"
# The default search space's formats (2-8 bits per channel and g128, asymmetric) and the symmetric ones
# that the LLaMA benchmark and W8A8 read; the table interpolates the rest by roofline ratio.
TABLE_FORMATS = ",".join(  # the most used first, in case the deadline cuts the run short
    [f"int{b}-{g}-asym" for b in (4, 8, 3, 2, 5, 6) for g in ("g128", "ch")] + ["int4-g128-sym", "int8-ch-sym"]
)
# of the deadline, in the order the steps run; on 2026-12-04 (500 s) the floor (more tiles) and the tests (more tests)
# were cut off at 0.2 and 0.15, while the default model's table, already committed, took 134 s of its 162
STEP_SHARES = {"floor": 0.25, "llama": 0.35, "table": 0.2, "tests": 0.2}


def importable_tree(parent: Path | None = None) -> Path:
    """A folder to put on PYTHONPATH where ``autoq.kernels`` (and the other mapped packages) resolve without pip."""
    site = Path(tempfile.mkdtemp(prefix="autoq-site-", dir=parent))
    shutil.copytree(REPO / "autoq", site / "autoq")
    for sub in ("kernels", "sensitivity", "search_spaces"):  # pyproject.toml's package-dir mapping
        (site / "autoq" / sub).symlink_to(REPO / sub, target_is_directory=True)
    return site


def step_env(site: Path) -> dict[str, str]:
    """The steps' environment: ``site`` first on the path, compiled kernels, unbuffered output.

    The steps also run with ``site`` as their working directory (:func:`run_step`): ``python -m`` puts the working
    directory first on the path, and the repository's own ``autoq/`` lacks the mapped ``kernels/``. On
    2026-11-30 ``python -m autoq`` and ``python -m pytest`` failed so on the GPU machine, run from the repository.
    (``PYTHONSAFEPATH`` would keep the working directory off the path too, but only from Python 3.11.)
    """
    return {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "PYTHONUNBUFFERED": "1",
            "TRITON_INTERPRET": "0"}


def xdist_args(cpus: int | None = None) -> list[str]:
    """pytest-xdist's ``-n`` where it is installed (the GPU image has it): each test process compiles its own kernels."""
    if importlib.util.find_spec("xdist") is None:
        return []
    return ["-n", str(max(1, min(8, (cpus or os.cpu_count() or 1) // 2)))]


def shell_output(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
        return proc.stdout + proc.stderr + "\n"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{' '.join(cmd)}: {exc}\n"


def run_step(name: str, cmd: list[str], env: dict, site: Path, log: Path, timeout: float, append: bool = False) -> int:
    """Run one step in the importable tree ``site`` (see :func:`step_env`) with its output in ``log`` (after what it
    holds, with ``append``), then print the log's end; a timeout is exit 124, not an exception."""
    print(f"\n== {name}: {' '.join(cmd)} (at most {timeout:.0f} s)", flush=True)
    start = time.perf_counter()
    with log.open("a" if append else "w") as fh:
        try:
            code = subprocess.run(cmd, cwd=site, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout, check=False).returncode
        except subprocess.TimeoutExpired:
            code = 124
    lines = [line for line in log.read_text(errors="replace").splitlines() if "%|" not in line]  # no progress bars
    print("\n".join(lines[-40:]))
    print(f"== {name}: exit {code} after {time.perf_counter() - start:.0f} s", flush=True)
    return code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu-results"), help="output folder (default: $OUT, else gpu-results)")
    parser.add_argument("--deadline-s", type=float, default=450.0, help="wall-clock seconds for all the steps (default: 450)")
    parser.add_argument("--steps", default=",".join(STEP_SHARES), help=f"which steps, in order (default: {','.join(STEP_SHARES)})")
    parser.add_argument("--timing", choices=("flush", "rotate"), default="flush",  # kernels.table.TIMINGS: autoq is not on the path yet
                        help="how the llama and table steps time a case (default: flush)")
    args = parser.parse_args()
    steps = [step.strip() for step in args.steps.split(",") if step.strip()]
    if not steps or set(steps) - set(STEP_SHARES):
        parser.error(f"--steps takes some of {', '.join(STEP_SHARES)}; got {args.steps!r}")
    start = time.perf_counter()
    out = Path(args.out).resolve()

    import torch

    if not torch.cuda.is_available():  # before the folder is made: a refusal left an empty one behind
        print("gpu_session: error: no CUDA GPU is visible here (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem", "--format=csv"]
    smi = "".join(shell_output(cmd) for cmd in (query, ["nvidia-smi"]))
    (out / "nvidia_smi.txt").write_text(smi)
    print(smi.split("\n\n")[0], flush=True)

    site = importable_tree()
    try:
        return run_steps(args, steps, out, site, start)
    finally:
        shutil.rmtree(site, ignore_errors=True)  # a copy of autoq/: nothing to keep


def run_steps(args: argparse.Namespace, steps: list[str], out: Path, site: Path, start: float) -> int:
    """The steps, in order, each in the importable tree ``site``; 0 when every step exited 0."""
    import torch

    sys.path.insert(0, str(site))
    env = step_env(site)
    from autoq.cli.kernels import device_slug
    from autoq.kernels.table import LatencyTable
    from autoq.latency.devices import preset_for

    slug = device_slug(torch.cuda.get_device_name(0))
    preset = preset_for(torch.cuda.get_device_name(0))
    table_name = f"{preset.name if preset else slug}.json"
    llama_json = out / f"kernels_{slug}{'' if args.timing == 'flush' else '_' + args.timing}.json"

    def share(step: str) -> float:
        """This step's part of the time left, by its share among the steps not yet run: time a step leaves unused goes on."""
        left = args.deadline_s - (time.perf_counter() - start)
        later = steps[steps.index(step):]
        return max(10.0, left * STEP_SHARES[step] / sum(STEP_SHARES[s] for s in later))

    codes = {}
    if "floor" in steps:
        codes["floor"] = run_step("batch-1 W4 floor, both timings", [sys.executable, str(REPO / "benchmarks/gemv_floor.py"), "--out",
                                                                     str(out / f"gemv_floor_{slug}.json")], env, site, out / "floor.log", share("floor"))
    if "llama" in steps:
        limit = share("llama")  # the benchmark stops starting cases at 80% of it and writes what it has; the kill is a backstop
        codes["llama"] = run_step("LLaMA-7B shapes", [sys.executable, str(REPO / "benchmarks/kernels_llama.py"), "--out", str(llama_json),
                                                      "--max-seconds", f"{0.8 * limit:.0f}", "--timing", args.timing], env, site, out / "llama.log", limit)
    if "table" in steps:
        merge: list[str] = []
        if llama_json.is_file():  # start the committed table from the llama step's rows, then add the default model's shapes
            LatencyTable.from_dict(json.loads(llama_json.read_text())["table"]).save(out / table_name)
            merge = ["--merge"]
        limit = share("table")
        codes["table"] = run_step(
            "default model's table",
            [sys.executable, "-m", "autoq", "kernels", "bench", "--model", "none", "--shapes", DEFAULT_MODEL_SHAPES,
             "--formats", TABLE_FORMATS, "--rep-ms", "50", "--max-seconds", f"{0.8 * limit:.0f}", "--timing", args.timing,
             "--out", str(out / table_name), *merge],
            env, site, out / "table.log", limit)
    if "tests" in steps:
        limit, began = share("tests"), time.perf_counter()
        pytest = [sys.executable, "-m", "pytest", str(REPO / "tests/kernels"), "--rootdir", str(REPO), "-v", "--tb=short", "-p", "no:cacheprovider"]
        # the timing tests alone first: on 2026-12-04 one measured another process's kernels beside its own (p20 -11.5 us)
        timed = run_step("kernel timing tests on the GPU, alone", [*pytest, "-n", "0", "-m", "gpu_timing"],
                         {**env, "AUTOQ_AUTOTUNE": "0"}, site, out / "tests.log", min(60.0, limit / 3))
        rest = run_step(
            "kernel tests on the GPU",
            [*pytest, *xdist_args(), "-m", "not gpu_timing",
             "--deselect", "tests/kernels/test_compile_check.py", "--deselect", "tests/kernels/test_precompile.py"],
            {**env, "AUTOQ_AUTOTUNE": "0"}, site, out / "tests.log", max(10.0, limit - (time.perf_counter() - began)), append=True)
        codes["tests"] = timed or rest
    print(f"\ngpu_session: {time.perf_counter() - start:.0f} s; exit codes {codes}; files in {out}: "
          f"{', '.join(sorted(p.name for p in out.iterdir()))}")
    return 0 if all(c == 0 for c in codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
