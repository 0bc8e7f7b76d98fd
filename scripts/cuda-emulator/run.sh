#!/usr/bin/env bash
# Runs every CUDA-emulator check (see README.md). Needs g++ (C++20) and a python with
# numpy and torch: PYTHON=/path/to/python scripts/cuda-emulator/run.sh [test ...]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"
cd "$HERE"
mkdir -p build
"$PYTHON" gen.py
pids=()
for real in float double; do
    g++ -std=c++20 -O1 -shared -fPIC -pthread -Wall -Wno-unused-function -Wno-unknown-pragmas \
        -o "build/libemu_$real.so" "build/emu_$real.cpp" &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done  # a failed build stops here (set -e)
rm -f build/launched_*.txt
if [ $# -gt 0 ]; then tests=("$@"); else tests=(test_*.py); fi
failed=()
for t in "${tests[@]}"; do
    echo "== $t"
    if ! PYTHONWARNINGS=ignore::FutureWarning "$PYTHON" "$t"; then failed+=("$t"); fi
done
# Every kernel of the program must be launched by some test.
if [ $# -eq 0 ]; then
    if ! "$PYTHON" -c '
import json, pathlib, sys
b = pathlib.Path("build")
ks = set(json.loads((b / "kernels.json").read_text()))
done = set().union(*(set(p.read_text().split()) for p in b.glob("launched_*.txt")))
missing = sorted(ks - done)
print("kernels launched: %d of %d" % (len(ks & done), len(ks)))
if missing: print("NOT TESTED: " + " ".join(missing)); sys.exit(1)
'; then failed+=("coverage"); fi
fi
if [ ${#failed[@]} -gt 0 ]; then echo "FAILED: ${failed[*]}"; exit 1; fi
echo "all emulator checks passed"
