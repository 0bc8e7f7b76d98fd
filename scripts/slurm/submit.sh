#!/bin/bash
# Submits a sharded sweep: an array of N GPU tasks, then the report once they end.
#
#   scripts/slurm/submit.sh SPEC N [OUT]
#
# Run from the repository root after `cargo build --release`; OUT (default
# runs/<spec name>) must be on a filesystem every node sees.
set -euo pipefail
SPEC=${1:?usage: submit.sh SPEC N [OUT]}
N=${2:?usage: submit.sh SPEC N [OUT]}
OUT=${3:-runs/$(basename "$SPEC" .toml)}
HERE=$(dirname "$0")

ARRAY=$(sbatch --parsable --array="1-$N" "$HERE/sweep-shards.sbatch" "$SPEC" "$OUT")
REPORT=$(sbatch --parsable --dependency="afterany:$ARRAY" --export="ALL,SHARDS=$N" \
    "$HERE/sweep-report.sbatch" "$SPEC" "$OUT")
echo "shards: job $ARRAY (array 1-$N); report: job $REPORT"
echo "progress: target/release/maskscape sweep $SPEC --out $OUT --device cuda --status --shards $N"
