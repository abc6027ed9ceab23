#!/usr/bin/env bash
# The GPU check (issues 17 and 40), in one call, on a bare GPU machine: PyTorch with CUDA, onnxruntime (CPU build),
# torchvision, grpcio and protobuf; no TensorRT, no network, no ../shared (it brings its images: examples/ and
# tests/data/). Installs this checkout into a temporary folder and, where the device kit is here (.kit/, made by
# `python benchmarks/product/gpu_kit.py pack` and carried along), the bundled Triton server and tritonclient; runs from
# outside the source tree so the installed `slsp.export` is the one imported, and writes one JSON (default:
# benchmarks/results/gpu-check.json). Extra arguments go to gpu_check.py (--steps, --budget).
#
#     bash benchmarks/product/gpu_check.sh [OUT.json] [--steps export,serve,gpu-tests,engines] [--budget 540]
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
out=$(realpath -m "${1:-$here/benchmarks/results/gpu-check.json}")
shift || true
site=$(mktemp -d)
work=$(mktemp -d)
kit=$(mktemp -d)
trap 'rm -rf "$site" "$work" "$kit"' EXIT
python3 -m pip install --quiet --no-deps --no-build-isolation --target "$site" "$here"
if [ -f "$here/.kit/tritonserver.tar.xz" ]; then
  export SLSP_TRITON_ROOT
  SLSP_TRITON_ROOT=$(python3 "$here/benchmarks/product/gpu_kit.py" unpack --kit "$here/.kit" --to "$kit" --site "$site")
  # The members' numpy 1.x (the server's Python backend stub cannot read numpy 2's arrays; gpu_kit.py).
  if [ -d "$kit/stub-site" ]; then export SLSP_STUB_SITE="$kit/stub-site"; fi
fi
cd "$work"
PYTHONPATH="$site" python3 -P "$here/benchmarks/product/gpu_check.py" --checkout "$here" --out "$out" "$@"
