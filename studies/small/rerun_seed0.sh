#!/usr/bin/env bash
# Dolly seed 0 of the study again, in one torch thread instead of two: another order of the matmul sums stands in
# for another machine, and the difference to the study's run sets the tolerance of tests/test_study_small.py.
# Usage: studies/small/rerun_seed0.sh STUDY_DIR (skipped when it already finished)
set -euo pipefail
source "$(dirname "$0")/common.sh"
export OMP_NUM_THREADS=1
run_once "${1:-runs/study}/dolly/rerun-1thread" "${SMALL[@]}" --seed 0
