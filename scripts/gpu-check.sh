#!/usr/bin/env bash
# Every GPU check of the CUDA backend, from prebuilt binaries (the GPU machine has
# CUDA 13 and PyTorch but no Rust): nvidia-smi, the GPU tests, `verify` on the
# fixtures, the HVP benchmarks, a 100-step Lanczos probe, and PyTorch's baseline
# in the same run. About 8 minutes at most on an H100.
#
#   scripts/gpu-bundle.sh            # on the build machine: writes gpu-bundle/
#   scripts/gpu-check.sh             # on the GPU machine, in the repository root
#
# Reads the bundle from $BUNDLE (default gpu-bundle/); writes every log, and
# steps.tsv (step, exit status, seconds), under $OUT (default gpu-out/). A failed
# or timed-out step is recorded and the next one runs; the script exits non-zero
# when any step failed. ONLY=REGEX runs only the steps whose names match (include
# `unpack`).
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=${BUNDLE:-gpu-bundle}
out=${OUT:-gpu-out}
mkdir -p "$out"
out=$(cd "$out" && pwd)
# Binaries and the random checkpoint go to scratch space, not $OUT (which is
# copied back from the GPU machine).
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export bundle out work

status=0
# Every step's limit is cut to what is left of the whole run's budget.
deadline=$(($(date +%s) + ${BUDGET_S:-470}))
printf 'step\tstatus\tseconds\n' >"$out/steps.tsv"
# step NAME SECONDS COMMAND...: runs COMMAND (a program or a function of this
# script) under a timeout, logs to $out/NAME.log, records its status.
step() {
    local name=$1 limit=$2 start rc left
    shift 2
    if [[ -n ${ONLY:-} && ! $name =~ $ONLY ]]; then
        return 0
    fi
    start=$(date +%s)
    left=$((deadline - start))
    ((limit < left)) || limit=$left
    echo "== $name (at most ${limit}s)" >&2
    set +e
    if ((limit < 5)); then
        echo "skipped: the run's time budget is spent" >"$out/$name.log"
        rc=125
    elif declare -F "$1" >/dev/null; then
        timeout --kill-after=10 "$limit" bash -c "$(declare -f "$1"); $(printf '%q ' "$@")" \
            >"$out/$name.log" 2>&1
        rc=$?
    else
        timeout --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1
        rc=$?
    fi
    set -e
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - start))" >>"$out/steps.tsv"
    if ((rc != 0)); then
        status=1
        echo "   failed (exit $rc; 124 = timed out, 125 = no time left): $out/$name.log" >&2
        tail -n 5 "$out/$name.log" >&2 || true
    fi
}

unpack() {
    for name in maskscape lib-tests gpu-tests gpu-kernel-tests; do
        xz -d -c "$bundle/$name.xz" >"$work/$name" && chmod +x "$work/$name" || return 1
    done
}
# cudarc loads libcuda, libnvrtc and libcublas at run time: let it find the CUDA
# toolkit's copies and those pip installed beside PyTorch (nvidia/*/lib).
cuda_libs=$(python3 -c '
import glob, os, site
dirs = ["/usr/local/cuda/lib64"]
for packages in site.getsitepackages():
    dirs += sorted(glob.glob(os.path.join(packages, "nvidia", "*", "lib")))
print(":".join(d for d in dirs if os.path.isdir(d)))
' 2>/dev/null || true)
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$cuda_libs
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >"$out/environment.txt"

step unpack 60 unpack
cat "$bundle/commit" >"$out/commit" 2>/dev/null || true
ms=$work/maskscape

step nvidia-smi 30 nvidia-smi
# The CUDA unit tests of the library (the kernels compile with NVRTC for this GPU,
# the device vectors), every kernel against the CPU (tests/gpu_kernels.rs), then
# tests/gpu.rs (fixtures, GPU against CPU, Lanczos).
step lib-cuda-tests 120 "$work/lib-tests" cuda --nocapture
step gpu-kernel-tests 60 "$work/gpu-kernel-tests" --nocapture --test-threads 1
# A kernel that disagrees may also read or write out of bounds: name it.
if [[ $(tail -n 1 "$out/steps.tsv" | cut -f 2) != 0 ]] && command -v compute-sanitizer >/dev/null; then
    step gpu-kernel-sanitizer 120 compute-sanitizer --tool memcheck --print-limit 20 \
        "$work/gpu-kernel-tests" --nocapture --test-threads 1 cuda_f64
fi
step gpu-tests 240 "$work/gpu-tests" --nocapture

for fixture in opt-tiny-preln opt-tiny-postln-proj opt-small-preln; do
    for dtype in f64 f32; do
        step "verify-$fixture-$dtype" 60 "$ms" verify --device cuda --dtype "$dtype" \
            --model "tests/fixtures/$fixture" \
            --reference "tests/fixtures/$fixture/reference.safetensors"
    done
done

# Forward, gradient, masked gradient, full HVP and masked HVP (q/v mask of ratio
# 1e-3) per run, and F, the floor they are stated in.
for dtype in f32 f64; do
    step "bench-opt-125m-$dtype" 120 "$ms" bench hvp --device cuda --config opt-125m \
        --batch 8 --seq 128 --dtype "$dtype" --mask-scope qv --ratio 1e-3
done
step bench-opt-125m-f32-tf32 120 "$ms" bench hvp --device cuda --config opt-125m \
    --batch 8 --seq 128 --dtype f32 --tf32 --mask-scope qv --ratio 1e-3
# PyTorch's double backward on the same GPU, for the ratio.
step torch-baseline 240 python3 scripts/torch_gpu_hvp_bench.py
# One masked AdamW step (OPT-125m, 8 SST-2-mini examples) in units of F, and
# PyTorch's eager dense-mask step on the same batch.
for dtype in f32 f64; do
    step "bench-train-$dtype" 120 "$ms" bench train --device cuda --config opt-125m \
        --dtype "$dtype" --dump-batch "$work/train-batch-$dtype.safetensors"
done
torch_train_step() {
    python3 scripts/torch_train_step_bench.py --device cuda --batch "$work/train-batch-f32.safetensors" \
        --config opt-125m --dtype float32
}
step torch-train-step 180 torch_train_step

# OPT-1.3b must fit in 30 GB: the device's memory in use, sampled every 50 ms.
with_peak_memory() {
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 50 >"$work/memory.csv" &
    local sampler=$! rc=0
    "$@" || rc=$?
    kill "$sampler"
    echo "peak device memory in use (nvidia-smi, every 50 ms): $(sort -n "$work/memory.csv" | tail -n 1) MiB"
    return "$rc"
}
step bench-opt-1.3b-f32 180 with_peak_memory "$ms" bench hvp --device cuda --config opt-1.3b \
    --batch 4 --seq 128 --dtype f32 --mask-scope qv --ratio 1e-3 --reps 3

# A 100-step Lanczos probe at ratio 1e-3 (a tolerance it cannot reach, so all 100
# products run); its summary.json splits the wall time, HVPs included.
step init-opt-125m 120 "$ms" init --config opt-125m --out "$work/opt-125m"
step probe-lanczos-100 180 "$ms" probe --device cuda --dtype f64 --model "$work/opt-125m" \
    --data bundled/sst2-mini/dev.jsonl --task sst2 --tokenizer bundled/opt-bundled \
    --ratio 1e-3 --method lanczos --which largest --iters 100 --tol 1e-12 \
    --out "$out/probe-lanczos-100"
hvp_share() {
    python3 - "$out/probe-lanczos-100/summary.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))["timing"]
spectral = t["hvp_s"] + t["other_s"]
print(f"HVPs: {t['hvp_s']:.3f} s of {t['total_s']:.3f} s total ({t['hvp_s'] / t['total_s']:.1%}); "
      f"of the Lanczos phase (HVPs + other, {spectral:.3f} s): {t['hvp_s'] / spectral:.1%}; "
      f"{t['ms_per_hvp']:.2f} ms per HVP")
PY
}
step probe-hvp-share 30 hvp_share

# With PROFILE=1: every kernel's time in one OPT-125m f32 bench (forward, gradient,
# full and masked HVP, once each, then the floor F's products), from Nsight Compute,
# summed per kernel.
kernel_profile() {
    ncu --metrics gpu__time_duration.sum --csv --print-units base --clock-control none \
        "$work/maskscape" bench hvp --device cuda --config opt-125m --batch 8 --seq 128 --dtype f32 \
        --mask-scope qv --ratio 1e-3 --reps 1 --warmup 0 >"$out/profile.csv" || return 1
    python3 - "$out/profile.csv" <<'PY'
import collections, csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
head = rows[0]
name, value = head.index("Kernel Name"), head.index("Metric Value")
grid, block = head.index("Grid Size"), head.index("Block Size")
by_kernel, by_launch, count, launches = (collections.Counter() for _ in range(4))
for r in rows[1:]:
    kernel = r[name].split("(")[0][:60]
    ms = float(r[value].replace(",", "")) * 1e-6
    by_kernel[kernel] += ms
    count[kernel] += 1
    launch = (kernel, r[grid], r[block])
    by_launch[launch] += ms
    launches[launch] += 1
print(f"{sum(by_kernel.values()):.2f} ms in {sum(count.values())} kernels")
for kernel, ms in by_kernel.most_common(40):
    print(f"{ms:9.3f} ms {count[kernel]:6d} x  {kernel}")
print("\nby kernel and launch shape (grid, block):")
for launch, ms in by_launch.most_common(40):
    print(f"{ms:9.3f} ms {launches[launch]:6d} x  {launch[0]} {launch[1]} {launch[2]}")
PY
}
if [[ ${PROFILE:-0} == 1 ]]; then
    step kernel-profile 150 kernel_profile
fi

# With RECOMPUTE=1 (e.g. `RECOMPUTE=1 BUDGET_S=560 ONLY='unpack|recompute' scripts/gpu-check.sh`):
# OPT-1.3b's masked and full HVP with stored and with recomputed activations (time,
# F and peak device memory each), then OPT-13b's masked HVP (q/v, 1e-3) recomputing
# on one 80 GB GPU (its 51 GB of random weights are drawn on the host first).
if [[ ${RECOMPUTE:-0} == 1 ]]; then
    for memory in stored recompute; do
        step "bench-opt-1.3b-f32-$memory-recompute-check" 150 with_peak_memory "$ms" bench hvp \
            --device cuda --config opt-1.3b --batch 4 --seq 128 --dtype f32 \
            --phases masked-hvp,hvp --memory "$memory" --reps 3
    done
    step bench-opt-13b-f32-recompute 400 with_peak_memory "$ms" bench hvp --device cuda \
        --config opt-13b --batch 4 --seq 128 --dtype f32 --mask-scope qv --ratio 1e-3 \
        --phases masked-hvp --recompute --reps 3
fi

echo "steps (status 0 = passed, 124 = timed out, 125 = no time left):" >&2
column -t "$out/steps.tsv" >&2 2>/dev/null || cat "$out/steps.tsv" >&2
exit "$status"
