#!/usr/bin/env bash
# Round 3: the shipped recipe trained on the wide real corpus, and leave-sources-out folds of it.
#   [SEED=0] [CONDITIONS="none jpeg:95"] bash benchmarks/detection/round3.sh [ARM ...]
#   (default arms: all fold-1 fold-2 fold-3 fold-4)
# Each arm trains `slsp train --recipe slsp/default/recipe.toml` on the two shared training folders plus the wide
# sources (../wide/real, built by ../shared/tools/build_wide.py) except its fold's, calibrates on its own held-out
# reals (`slsp calibrate --skip-clipped`, as the shipped model was before round 3), and scores everything with
# benchmarks/detection/wide.py (as stored and at JPEG q95). A fold's sources are then unseen by its model twice
# over: neither trained nor calibrated on. A finished arm is kept (runs/r3/ARM); rerunning skips it.
set -euo pipefail
cd "$(dirname "$0")/../.."
SEED=${SEED:-0}
CONDITIONS=${CONDITIONS:-none jpeg:95}
WIDE=../wide/real
SHARED=../shared/data/real
for arm in "${@:-all fold-1 fold-2 fold-3 fold-4}"; do
  for a in $arm; do
    run=runs/r3/$a-s$SEED
    out=$(python benchmarks/detection/wide.py fold "$a")  # the fold's sources, defined in wide.py's FOLDS
    real=(--real "$SHARED/train" --real "$SHARED/train-camera")
    for d in "$WIDE"/*/; do
      s=$(basename "$d")
      [[ " $out " == *" $s "* ]] || real+=(--real "$d")
    done
    if [[ ! -f $run/calibrated ]]; then
      echo "+ $a: trained without: ${out:-nothing}" >&2
      if [[ ! -f $run/model.safetensors ]]; then  # a run trained before its calibration was cut off is kept
        /usr/bin/time -f "$a: trained in %e s" slsp train --recipe slsp/default/recipe.toml "${real[@]}" \
          --seed "$SEED" --out "$run" -q
      fi
      slsp calibrate --model "$run" --out "$run" --skip-clipped -q
      touch "$run/calibrated"
    fi
    for c in $CONDITIONS; do
      python benchmarks/detection/wide.py score --model "$run" --name "$a-s$SEED" --reencode "$c" -q
    done
  done
done
