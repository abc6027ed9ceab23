#!/usr/bin/env bash
# Dev-split evaluation of a model (default: the shipped one) under the format controls of METHOD.md 4.
# Usage: bash benchmarks/dev_eval.sh [RUN_DIR] [OUT_DIR]
# Both classes get the same treatment in every condition; the bottom 16 rows (DALL-E 2 watermark bar) are
# removed from every image, real and fake alike.
set -euo pipefail
model=${1:-}
out=${2:-benchmarks/results/eval}
data=../shared/data
mkdir -p "$out"
args=(--real "$data/real/dev" --fake "$data/fake/dev" --trim-bottom 16 -q)
[ -n "$model" ] && args+=(--model "$model")
slsp eval "${args[@]}" --reencode none --perturb jpeg:75 --perturb resize:0.5 --out "$out/original" | tee "$out.original.txt"
slsp eval "${args[@]}" --reencode png --out "$out/png" | tee "$out.png.txt"
slsp eval "${args[@]}" --reencode jpeg:95 --out "$out/jpeg95" | tee "$out.jpeg95.txt"
