#!/usr/bin/env python3
"""Interleaved pairs of `maskscape bench train` and PyTorch's masked AdamW step.

As scripts/cpu-vs-pytorch.py does for the HVP: ours (median of --reps steps, with
F, one forward's products at the batch's shapes, timed in the same run), then
PyTorch's step on the same batch (median of --reps), the ratio taken within each
pair so the machine's drift cancels; prints every pair and the medians.

    python3 scripts/train-vs-pytorch.py --config opt-125m --pairs 5 --python VENV/bin/python
"""
import argparse
from pathlib import Path
import re
import statistics
import subprocess
import sys
import tempfile

PHASES = ["masked AdamW step", "masked gradient", "forward products (F)"]


def ours(args, batch):
    out = subprocess.run(
        [args.maskscape, "bench", "train", "--config", args.config, "--examples", str(args.examples),
         "--ratio", str(args.ratio), "--dtype", args.dtype, "--reps", str(args.reps),
         "--dump-batch", batch],
        capture_output=True, text=True, check=True).stdout
    times = {}
    for phase in PHASES:
        found = re.search(r"^\s*" + re.escape(phase) + r"\s+([\d.]+)", out, re.M)
        if not found:
            sys.exit(f"no '{phase}' row in the output of maskscape:\n{out}")
        times[phase] = float(found.group(1))
    return times


def pytorch(args, batch):
    dtype = {"f32": "float32", "f64": "float64"}[args.dtype]
    out = subprocess.run(
        [args.python, args.torch_bench, "--batch", batch, "--config", args.config, "--dtype", dtype,
         "--reps", str(args.reps)],
        capture_output=True, text=True, check=True).stdout
    found = re.search(r"^step_ms ([\d.]+)", out, re.M)
    if not found:
        sys.exit(f"no step_ms line in the output of the PyTorch benchmark:\n{out}")
    return float(found.group(1))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--maskscape", default="target/release/maskscape")
    p.add_argument("--python", default="python3", help="a Python with torch and transformers")
    p.add_argument("--torch-bench", default=str(Path(__file__).with_name("torch_train_step_bench.py")))
    p.add_argument("--config", default="opt-125m", help="opt-mini or opt-125m")
    p.add_argument("--examples", type=int, default=8)
    p.add_argument("--ratio", type=float, default=1e-3)
    p.add_argument("--dtype", choices=["f32", "f64"], default="f32")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--pairs", type=int, default=5)
    args = p.parse_args()
    pairs = []
    with tempfile.TemporaryDirectory() as tmp:
        batch = str(Path(tmp) / "batch.safetensors")
        for i in range(args.pairs):
            a = ours(args, batch)
            b = pytorch(args, batch)
            pairs.append((a, b))
            f = a["forward products (F)"]
            s = a["masked AdamW step"]
            print(f"pair {i}: ours step {s:.1f} ms ({s / f:.2f} F), masked gradient "
                  f"{a['masked gradient']:.1f} ms, F {f:.1f} ms | PyTorch {b:.1f} ms ({b / f:.2f} F) "
                  f"| ours/PyTorch {s / b:.3f}", flush=True)
    med = statistics.median
    ratios = [a["masked AdamW step"] / b for a, b in pairs]
    in_f = [a["masked AdamW step"] / a["forward products (F)"] for a, _ in pairs]
    print(f"step / PyTorch's: median {med(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f}); "
          f"step in F: median {med(in_f):.2f} (range {min(in_f):.2f}-{max(in_f):.2f})")


if __name__ == "__main__":
    main()
