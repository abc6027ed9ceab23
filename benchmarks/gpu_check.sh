#!/usr/bin/env bash
# The GPU check (issue 17), in one call, in about 8 minutes, on a bare GPU machine: PyTorch with CUDA, onnxruntime
# (CPU build) and torchvision; no TensorRT, no Triton server, no network, no ../shared (it brings its images:
# examples/ and tests/data/). Installs this checkout into a temporary folder, runs from outside the source tree so
# the installed `slsp.export` is the one imported, and writes one JSON (default: benchmarks/results/gpu-check.json).
#
#     bash benchmarks/gpu_check.sh [OUT.json]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath -m "${1:-$here/benchmarks/results/gpu-check.json}")
site=$(mktemp -d)
work=$(mktemp -d)
trap 'rm -rf "$site" "$work"' EXIT
python3 -m pip install --quiet --no-deps --no-build-isolation --target "$site" "$here"
cd "$work"
PYTHONPATH="$site" python3 -P "$here/benchmarks/gpu_check.py" --checkout "$here" --out "$out"
