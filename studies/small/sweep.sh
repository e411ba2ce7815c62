#!/usr/bin/env bash
# The lr x eps sweep behind studies/small/common.sh: one client holding the whole Dolly sample, 3 rounds of 40
# MeZO steps, held-out eval loss after every round (no generation). Usage: studies/small/sweep.sh [OUT_DIR]
# Grid override: LRS="1e-5 3e-5" EPSS="1e-3" studies/small/sweep.sh (lr 3e-5 is not in the default grid: it was
# found too large)
set -euo pipefail
source "$(dirname "$0")/common.sh"
OUT=${1:-runs/sweep}
for lr in ${LRS:-3e-6 1e-5}; do
  for eps in ${EPSS:-1e-4 1e-3 1e-2}; do
    run="$OUT/lr$lr-eps$eps"
    run_once "$run" "${SMALL[@]}" --num_clients 1 -m 1 --local_step 40 --seed 0 \
      --lr "$lr" --zo_eps "$eps" --eval_metric loss --eval_base
  done
done
