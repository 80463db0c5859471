"""Benchmark: time and peak memory of ``autoq.load(out)`` rebuilding a Hugging Face model, next to ``from_pretrained``.

A LLaMA-like model (random weights, bf16, ~0.5B parameters by default) is saved as a checkpoint and exported with
every linear layer int4-g128; each load then runs in a fresh Python process, so its peak resident memory (VmHWM,
Linux) is its own. Until 2026-12-03 the rebuild constructed the model in fp32, filled every weight at random and cast
it: 7.5 s and 2.68 GB peak for the default model on a 2-core x86 CPU; built as ``from_pretrained`` builds it, 3.2 s
and 0.87 GB (``from_pretrained`` of the bf16 checkpoint: 2.0 s, 0.48 GB). On 2026-12-04, with every stored tensor
checked for NaN at load (a sum each: 2.53 s; 2.61 s with ``isnan().any()``), 2.5 s and 0.94 GB, ``from_pretrained``
1.5 s and 0.50 GB on a 2-core Intel Xeon, where the runs before were on a 2-core AMD EPYC. Later that day, with the
weights file's CRC-32 checked at load too: 3.09 s against 2.83 s without the check (0.26 s, 9%), ``from_pretrained``
1.88 s, on the same kind of machine, slower that hour (``results/load_time.json``).

    python benchmarks/load_time.py [--hidden 2048] [--layers 8] [--out benchmarks/results/load_time.json]

Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from provenance import OUT_HELP, count, out_file, provenance

_MEASURE = """
import json, sys, time
from pathlib import Path
import autoq, torch, transformers
start = time.perf_counter()
if sys.argv[1] == "autoq.load":
    model = autoq.load(sys.argv[2])
else:
    model = transformers.LlamaForCausalLM.from_pretrained(sys.argv[2], dtype=torch.bfloat16)
seconds = time.perf_counter() - start
hwm = next(int(line.split()[1]) * 1024 for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM"))
print(json.dumps({"seconds": seconds, "peak_rss_bytes": hwm}))
"""


def _measure(way: str, path: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", _MEASURE, way, str(path)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=2048,
                        help="hidden size of the LLaMA-like model (a multiple of 16: 16 heads; MLP 11/4 of it; default: 2048)")
    parser.add_argument("--layers", type=count, default=8, help="decoder layers of the model (default: 8; ~0.5B parameters at hidden 2048)")
    parser.add_argument("--out", type=out_file, default=str(Path(__file__).parent / "results" / "load_time.json"), help=OUT_HELP)
    args = parser.parse_args()
    if args.hidden < 16 or args.hidden % 16:
        parser.error(f"--hidden {args.hidden}: give a positive multiple of 16 (the model's 16 attention heads share it)")

    import torch
    import transformers

    import autoq
    from autoq.choice import Assignment, LayerChoice
    from autoq.model import find_layers

    config = transformers.LlamaConfig(hidden_size=args.hidden, intermediate_size=args.hidden * 11 // 4, num_hidden_layers=args.layers,
                                      num_attention_heads=16, num_key_value_heads=4, vocab_size=32000, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).to(torch.bfloat16).eval()
    params = sum(p.numel() for p in model.parameters())
    point = Assignment(tuple((layer.name, LayerChoice.from_name("int4-g128-asym:rtn-minmax")) for layer in find_layers(model)))
    with tempfile.TemporaryDirectory() as scratch:
        model.save_pretrained(Path(scratch) / "checkpoint")
        out = autoq.export(model, point, Path(scratch) / "export", progress=False)
        del model
        unchecked = Path(scratch) / "unchecked"  # the same export without its CRC-32: what the checksum at load costs
        unchecked.mkdir()
        (unchecked / "model.safetensors").symlink_to(out / "model.safetensors")
        written = json.loads((out / "autoq_config.json").read_text())
        (unchecked / "autoq_config.json").write_text(json.dumps({k: v for k, v in written.items() if k != "file_crc32"}))
        rows = [{"way": way, **_measure(way.split(" ")[0], Path(scratch) / folder)}
                for way, folder in (("autoq.load", "export"), ("autoq.load (no CRC-32)", "unchecked"), ("from_pretrained", "checkpoint"))]
    print(f"LLaMA-like, {params / 1e9:.2f}B parameters, bf16; {len(point)} linear layers int4-g128")
    print(f"{'way':<24} {'seconds':>8} {'peak RSS GB':>12}")
    for row in rows:
        print(f"{row['way']:<24} {row['seconds']:>8.2f} {row['peak_rss_bytes'] / 1e9:>12.2f}")
    Path(args.out).write_text(json.dumps({**provenance(), "parameters": params, "hidden": args.hidden, "layers": args.layers,
                                          "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
