#!/usr/bin/env bash
# README's first command on seeds 0, 1 and 2, one after the other (studies/first_command/README.md).
# Usage: studies/first_command/run.sh [OUT] (default studies/first_command/results). A finished seed (summary.json)
# is skipped and a killed one resumed (studies/run_once.sh); each seed's wall time goes to OUT/wall_time.txt.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source studies/run_once.sh
OUT=${1:-studies/first_command/results}
# README's command 1 without --seed (tests/test_first_command.py checks that the two agree)
FLAGS=(--dataset instruct --data_path data/ni-yesno-sample --prompt_format chat -m 0.4 --rounds 3 --local_step 40
       -K 1024 --lr 1e-5 --zo_eps 1e-3 --max_length 256 --eval_examples 40 --max_new_tokens 16)
mkdir -p "$OUT"
for seed in 0 1 2; do
  start=$(date +%s)
  run_once "$OUT/seed-$seed" "${FLAGS[@]}" --seed "$seed"
  echo "seed-$seed: $(( $(date +%s) - start )) s (load average at the end: $(cut -d' ' -f1-3 /proc/loadavg))" \
    | tee -a "$OUT/wall_time.txt"
done
