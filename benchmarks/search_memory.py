"""Benchmark: a search's peak memory against its model's, as trials try more formats.

The search caches every (layer, format) it has quantized, so that no trial quantizes a layer twice. Held as dense
fp32 weights, that cache grew by a copy of the model's linear weights per format tried; held as codes (a byte a
weight), by a quarter of one. A random Llama-like model (no download) is searched in a fresh process with the
min-max space of the SmolLM2 benchmarks (12 formats plus fp16, cheap to quantize), no seeds and no stores, and the
process's resident memory is sampled every 0.2 s. On this 2-core x86 CPU (2026-12-03), hidden 2048, MLP 5632, two
blocks (103M linear weights, 392 MiB; 856 MB resident before the search), 14 trials: peak 5,040 MB before, 2,372 and
2,408 MB after in two runs, the same best point (16.9 s against 14.8 and 14.7 s, on a machine shared with other jobs;
dequantizing each trial's codes took 35-170 ms a MiniLM trial of 4-10 s).

    python benchmarks/search_memory.py [--hidden 2048] [--mlp 5632] [--blocks 2] [--trials 14] [--out ...json]

Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from provenance import OUT_HELP, out_file, provenance

SPACE = Path(__file__).parent / "smollm2_space.yaml"


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


def child(hidden: int, mlp: int, blocks: int, trials: int) -> dict[str, float]:
    """In this process: build the model, then search while a thread samples the resident memory."""
    import autoq  # noqa: I001  first: run from a checkout on sys.path, it puts the installed `kernels` (transformers') before its folder
    import torch
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=blocks, num_attention_heads=hidden // 128,
                         num_key_value_heads=hidden // 128, vocab_size=1000, max_position_embeddings=256)
    model = LlamaModel(config).eval()
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    gen = torch.Generator().manual_seed(1)
    batches = [{"input_ids": torch.randint(0, 1000, (2, 32), generator=gen)} for _ in range(4)]
    peak, done = [_rss_mb()], threading.Event()
    before = peak[0]

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.2)

    threading.Thread(target=sample, daemon=True).start()
    start = time.perf_counter()
    result = autoq.search(model, batches, budget="4.5bits", n_trials=trials, space=str(SPACE), seed_from="none",
                          tracking_uri=None, storage=None, progress=False)
    wall = time.perf_counter() - start
    done.set()
    return {"linear_weights_mib": round(linear * 4 / 2**20), "before_mb": round(before), "peak_mb": round(max(peak[0], _rss_mb())),
            "trials": trials, "wall_s": round(wall, 1), "best_quality": round(result.best.quality, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=2048,
                        help="hidden size of the random Llama-like model (a multiple of 128; default: 2048)")
    parser.add_argument("--mlp", type=int, default=5632, help="its MLP (intermediate) size (default: 5632)")
    parser.add_argument("--blocks", type=int, default=2, help="its decoder blocks (default: 2)")
    parser.add_argument("--trials", type=int, default=14, help="trials of the search (default: 14)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=out_file, default=str(Path(__file__).parent / "results" / "search_memory.json"), help=OUT_HELP)
    args = parser.parse_args()
    if args.hidden < 128 or args.hidden % 128:
        parser.error(f"--hidden must be a multiple of 128 (heads of 128, as LLaMA's), got {args.hidden}")
    sizes = (args.hidden, args.mlp, args.blocks, args.trials)
    if args.child:
        print(json.dumps(child(*sizes)))
        return
    done = subprocess.run([sys.executable, __file__, "--child", *(f"--{k}={v}" for k, v in zip(("hidden", "mlp", "blocks", "trials"), sizes))],
                          capture_output=True, text=True)
    if done.returncode:  # the child's own error, not CalledProcessError's exit status alone
        sys.exit(f"search_memory: the measuring process failed (exit {done.returncode}):\n{done.stderr.strip()}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{'linear weights (MiB)':>21} {'before search (MB)':>19} {'peak (MB)':>10} {'trials':>7} {'wall (s)':>9} {'best':>7}")
    print(f"{row['linear_weights_mib']:>21} {row['before_mb']:>19} {row['peak_mb']:>10} {row['trials']:>7} {row['wall_s']:>9} "
          f"{row['best_quality']:>7}")
    Path(args.out).write_text(json.dumps({**provenance(), "hidden": args.hidden, "mlp": args.mlp, "blocks": args.blocks, **row}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
