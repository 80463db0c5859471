"""Benchmark: the memory one `OutputFidelity` evaluation (a trial's quality, the API's default) takes beside its references.

The default quality of ``autoq.search(model, batches)`` keeps the unquantized model's output on every held-out batch
and compares each trial's outputs with them. For a language model those are logits over the vocabulary:
``batches x batch x tokens x vocab`` floats. Each size runs in a fresh process: a one-layer "LM" (an embedding and a
linear head to the vocabulary), its references built, then one evaluation, reporting the references' size and the
process's peak resident memory above what it held with the references built (``ru_maxrss``). On this 2-core x86
CPU (2026-12-02), vocabulary 32,000, batches of 4 x 128 tokens, at 2 and 8 batches (125 and 500 MB of references):
before, an evaluation held every batch's output and compared them in float64 at once: 736 and 1,080 MB above the
references; since, one batch at a time and the cosine a row at a time: 267 and 252 MB.

    python benchmarks/fidelity_memory.py [--vocab 32000] [--batches 2 8] [--out benchmarks/results/fidelity_memory.json]

Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

from provenance import OUT_HELP, count, out_file, provenance

BATCH, TOKENS = 4, 128


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(vocab: int, n_batches: int) -> dict[str, float]:
    """In this process: build the references, then evaluate once; the peak above the references' high-water mark."""
    import torch

    from autoq.evaluate import OutputFidelity

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(vocab, 64), torch.nn.Linear(64, vocab)).eval()
    batches = [torch.randint(0, vocab, (BATCH, TOKENS)) for _ in range(n_batches)]
    fidelity = OutputFidelity(model, batches)
    references = sum(r.numel() * r.element_size() for r in fidelity.reference) / 2**20
    before = _rss_mb()
    quality = fidelity(model)
    return {"vocab": vocab, "batches": n_batches, "references_mb": round(references, 1),
            "evaluation_peak_mb": round(max(0.0, _rss_mb() - before), 1), "quality": quality}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=count, default=32000, help="vocabulary size: the length of each logits row (default: 32000)")
    parser.add_argument("--batches", type=count, nargs="+", default=[2, 8],
                        help="held-out batch counts, each measured in its own process; a batch is 4 x 128 tokens (default: 2 8)")
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=out_file, default=str(Path(__file__).parent / "results" / "fidelity_memory.json"), help=OUT_HELP)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    rows = []
    for n in args.batches:
        done = subprocess.run([sys.executable, __file__, "--child", str(args.vocab), str(n)], capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{'vocab':>6} {'batches':>8} {'references (MB)':>16} {'evaluation peak (MB)':>21}")
    for row in rows:
        print(f"{row['vocab']:>6} {row['batches']:>8} {row['references_mb']:>16.1f} {row['evaluation_peak_mb']:>21.1f}")
    Path(args.out).write_text(json.dumps({**provenance(), "batch": BATCH, "tokens": TOKENS, "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
