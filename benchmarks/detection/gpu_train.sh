#!/usr/bin/env bash
# What longer and larger training runs give (issue 16), in one call on a lent GPU machine: the shipped recipe at 1,500
# steps next to arms trained LONG steps (the recipe, the 1/2 `resample` share, `--size medium`), all seed 0, all at
# once on the one GPU, each the `slsp train` command seeds.py would run, on the real photos in DATA/train and
# DATA/train-camera (`python benchmarks/detection/gpu_data.py DATA` makes what fits in a device call; carry DATA). Each arm
# stops at the deadline (SECONDS from now); its run folder is packed into OUT/<arm>.tgz either way, without its
# optimiser state (train.json says how far it got). Score them on the CPU machine with seeds.py, which reuses
# finished runs:
#
#     bash benchmarks/detection/gpu_train.sh DATA OUT SECONDS LONG WORKERS
#     tar -xzf OUT/<arm>.tgz -C runs/gpu && python benchmarks/detection/seeds.py --runs runs/gpu --steps 1500 --seeds 0 \
#       --baseline "--real DATA/train --real DATA/train-camera" --candidate <arm>="--real ... --steps LONG ..."
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
data=$(realpath "$1") out=$(realpath -m "$2") deadline=$((SECONDS + $3)) long=$4 workers=$5
site=$(mktemp -d)
python3 -m pip install --quiet --no-deps --no-build-isolation --target "$site" "$here"
mkdir -p "$out/runs"
cd "$out"
declare -A arms=(
  [baseline]="--steps 1500"
  [long]="--steps $long"
  [long-half]="--steps $long --fakes denoise,renoise,resample,resample"
  [long-medium]="--steps $long --size medium"
)
threads=$(( $(nproc) > ${#arms[@]} ? $(nproc) / ${#arms[@]} : 1 ))
for arm in "${!arms[@]}"; do
  # shellcheck disable=SC2086  # the arm's arguments are words
  OMP_NUM_THREADS=$threads PYTHONPATH="$site" timeout $((deadline - SECONDS)) python3 -P -m slsp.cli train \
    --real "$data/train" --real "$data/train-camera" --out "runs/$arm-s0" --seed 0 --workers "$workers" -q \
    ${arms[$arm]} > "runs/$arm-s0.log" 2>&1 &
done
wait
for arm in "${!arms[@]}"; do
  tar -czf "$arm.tgz" -C runs --exclude state.safetensors "$arm-s0" "$arm-s0.log"  # no optimiser state: 16 MiB a file
  python3 -c "import json,sys; t=json.load(open(sys.argv[1])); print(sys.argv[2], 'step', t['step'], t.get('last'))" \
    "runs/$arm-s0/train.json" "$arm" || echo "$arm: no train.json"
  tail -n 3 "runs/$arm-s0.log"
done
rm -rf runs
