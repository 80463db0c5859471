"""Benchmark: W8A8 on SmolLM2-135M, plain round-to-nearest against SmoothQuant, by held-out perplexity.

Weights int8 symmetric per output channel; activations int8 static per tensor
(calibrated range) or dynamic per token, on every linear layer but the tied
``lm_head``. ``smoothquant`` uses alpha = 0.5; ``smoothquant-search`` picks alpha per
layer from 0.3-0.8 by the W8A8 output error on calibration rows. Writes JSON to
``benchmarks/results/w8a8_smoothquant.json``.

    python benchmarks/w8a8_smoothquant.py [--n-eval-tokens 2048]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from provenance import OUT_HELP, out_file, provenance

from autoq.builtin.smollm2 import perplexity, smollm2_workload
from autoq.choice import Assignment, LayerChoice
from autoq.evaluate import QuantCache
from autoq.model import find_layers
from autoq.model.capture import CalibrationStats

CHOICES = (
    "int8-ch-sym:rtn-minmax",
    "int8-ch-sym:rtn-minmax+a8-tensor",
    "int8-ch-sym:smoothquant+a8-tensor",
    "int8-ch-sym:smoothquant-search+a8-tensor",
    "int8-ch-sym:rtn-minmax+a8-token",
    "int8-ch-sym:smoothquant+a8-token",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-eval-tokens", type=int, default=2048,
                        help="held-out tokens the perplexity is measured on, sequences of 128 (default: 2048)")
    parser.add_argument("--n-calibration-tokens", type=int, default=2048,
                        help="calibration tokens for the activation ranges and SmoothQuant's scales, sequences of 128 (default: 2048)")
    parser.add_argument("--out", type=out_file, default=str(Path(__file__).parent / "results" / "w8a8_smoothquant.json"), help=OUT_HELP)
    args = parser.parse_args()
    wl = smollm2_workload(n_calibration_tokens=args.n_calibration_tokens, n_eval_tokens=args.n_eval_tokens)
    layers = find_layers(wl.model, wl.skip)
    cache = QuantCache(wl.model, CalibrationStats(wl.model, layers, wl.calibration))
    batches = wl.evaluate.batches
    reference = perplexity(wl.model, batches)
    rows = [{"choice": "fp32", "perplexity": reference, "increase": 0.0}]
    print(f"fp32 perplexity {reference:.3f} on {args.n_eval_tokens} held-out tokens", flush=True)
    for name in CHOICES:
        choice = LayerChoice.from_name(name)
        t0 = time.perf_counter()
        with cache.apply(Assignment(tuple((layer.name, choice) for layer in layers))) as model:
            ppl = perplexity(model, batches)
        rows.append({"choice": name, "perplexity": ppl, "increase": ppl / reference - 1, "seconds": time.perf_counter() - t0})
        print(f"{name:<36} perplexity {ppl:8.3f}  ({100 * (ppl / reference - 1):+.1f}%)", flush=True)
    by = {r["choice"]: r for r in rows}
    smooth = min((by["int8-ch-sym:smoothquant+a8-tensor"], by["int8-ch-sym:smoothquant-search+a8-tensor"]), key=lambda r: r["perplexity"])
    plain = by["int8-ch-sym:rtn-minmax+a8-tensor"]
    summary = {"model": wl.name, "best_smoothquant": smooth["choice"], "n_eval_tokens": args.n_eval_tokens, "reference_perplexity": reference,
               "smoothquant_a8_tensor_within_5pct": smooth["increase"] <= 0.05,
               "plain_a8_tensor_worse": plain["perplexity"] > smooth["perplexity"],
               **provenance()}
    print(f"\n{smooth['choice']}: {100 * smooth['increase']:+.1f}% perplexity (within 5%: {summary['smoothquant_a8_tensor_within_5pct']}); "
          f"plain W8A8 per-tensor: {100 * plain['increase']:+.1f}%")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
