#!/usr/bin/env bash
# Builds what scripts/gpu-check.sh runs on a GPU machine that has CUDA and PyTorch
# but no Rust toolchain: the release `maskscape` binary, the library's unit-test
# binary and the tests/gpu.rs binary, each xz-compressed into one folder (default
# gpu-bundle/, ignored by git). Run from anywhere inside the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=${1:-gpu-bundle}

cargo build --release
# `--no-run` builds every test binary; its JSON messages name their paths.
artifacts=$(cargo test --release --no-run --message-format=json)
test_binary() { # $1: the jq condition on the artifact's target
    jq -r "select(.reason == \"compiler-artifact\" and .profile.test and .executable != null and ($1)) | .executable" <<<"$artifacts" | tail -n 1
}
lib_tests=$(test_binary '.target.kind == ["lib"]')
gpu_tests=$(test_binary '.target.kind == ["test"] and .target.name == "gpu"')
kernel_tests=$(test_binary '.target.kind == ["test"] and .target.name == "gpu_kernels"')
for binary in "$lib_tests" "$gpu_tests" "$kernel_tests"; do
    [[ -x $binary ]] || { echo "gpu-bundle: a test binary was not found" >&2; exit 1; }
done

rm -rf "$bundle"
mkdir -p "$bundle"
pack() { # $1: binary, $2: name in the bundle
    xz -T2 -6 -c "$1" >"$bundle/$2.xz"
}
pack target/release/maskscape maskscape
pack "$lib_tests" lib-tests
pack "$gpu_tests" gpu-tests
pack "$kernel_tests" gpu-kernel-tests
git rev-parse HEAD >"$bundle/commit" 2>/dev/null || true
du -ch "$bundle"/* | tail -n 1
