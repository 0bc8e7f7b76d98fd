#!/usr/bin/env python3
"""Interleaved pairs of `maskscape bench hvp` and PyTorch's CPU HVP benchmark.

A shared machine's speed drifts by a third over a day, so two runs an hour apart do
not compare. This alternates the two benchmarks, ours then PyTorch's, and takes each
ratio within its pair; it prints every pair and the medians (the README's CPU table
was made this way).

    python3 scripts/cpu-vs-pytorch.py --config opt-mini --batch 4 --dtype f32 --pairs 6 \\
        --python VENV/bin/python

PyTorch's figure is its double-backward HVP (forward + gradient with create_graph +
gradient of <g, v>), the median of --reps runs; ours are the medians of --reps runs
of each phase, and F is one forward's matrix products (see README, bench hvp).
"""
import argparse
from pathlib import Path
import re
import statistics
import subprocess
import sys

OURS = ["forward", "gradient", "hvp", "masked hvp", "forward products (F)"]


def ours(args):
    out = subprocess.run(
        [args.maskscape, "bench", "hvp", "--config", args.config, "--batch", str(args.batch),
         "--seq", str(args.seq), "--dtype", args.dtype, "--reps", str(args.reps)],
        capture_output=True, text=True, check=True).stdout
    times = {}
    for phase in OURS:
        found = re.search(r"^\s*" + re.escape(phase) + r"\s+([\d.]+)", out, re.M)
        if not found:
            sys.exit(f"no '{phase}' row in the output of maskscape:\n{out}")
        times[phase] = float(found.group(1))
    return times


def pytorch(args):
    dtype = {"f32": "float32", "f64": "float64"}[args.dtype]
    out = subprocess.run(
        [args.python, args.torch_bench, "--configs", args.config, "--dtypes", dtype,
         "--reps", str(args.reps), "--no-check", "--max-load", "99"],
        capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in out.splitlines() if line.startswith(args.config + " ")]
    if not rows:
        sys.exit(f"no '{args.config}' row in the output of the PyTorch benchmark:\n{out}")
    # columns: config dtype batch seq params fwd_ms grad_ms hvp_ms other_cpu
    return float(rows[0][7].replace(",", ""))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--maskscape", default="target/release/maskscape")
    p.add_argument("--python", default="python3", help="a Python with torch and transformers")
    p.add_argument("--torch-bench", default=str(Path(__file__).with_name("torch_cpu_bench.py")),
                   help="PyTorch's CPU benchmark (default: the copy beside this script)")
    p.add_argument("--config", default="opt-mini", help="opt-mini or opt-125m")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--dtype", choices=["f32", "f64"], default="f32")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--pairs", type=int, default=6)
    args = p.parse_args()
    if args.seq != 64:
        sys.exit("--seq: PyTorch's benchmark times 64 tokens only")
    pairs = []
    for i in range(args.pairs):
        a, b = ours(args), pytorch(args)
        pairs.append((a, b))
        f = a["forward products (F)"]
        print(f"pair {i}: ours full {a['hvp']:.1f} ms, masked {a['masked hvp']:.1f} ms, "
              f"F {f:.2f} ms | PyTorch {b:.1f} ms ({b / f:.1f} F) | "
              f"full/PyTorch {a['hvp'] / b:.3f}, masked/PyTorch {a['masked hvp'] / b:.3f}",
              flush=True)
    med = statistics.median
    for name, key in [("full", "hvp"), ("masked", "masked hvp")]:
        ratios = [a[key] / b for a, b in pairs]
        print(f"{name} HVP / PyTorch's: median {med(ratios):.3f} "
              f"(min {min(ratios):.3f}, max {max(ratios):.3f}); ours {med(a[key] for a, _ in pairs):.1f} ms")
    f = med(a["forward products (F)"] for a, _ in pairs)
    torch = med(b for _, b in pairs)
    print(f"F {f:.2f} ms; PyTorch's HVP {torch:.1f} ms = {torch / f:.1f} F")


if __name__ == "__main__":
    main()
