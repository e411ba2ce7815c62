#!/usr/bin/env bash
# The small CPU study of docs/small_study.md, then its tables and plots. Usage: studies/small/run.sh [OUT_DIR]
# (default runs/study). Three parts, each skipping runs that already finished (a summary.json) and resuming killed ones
# (a checkpoint), so an interrupted study continues where it stopped:
#   dolly/     base vs FedKSeed vs FedKSeed-Pro on the Dolly sample, seeds 0 1 2 (and seed 0 rerun in one thread)
#   instruct/  the same on Natural Instructions, when NI_DATA (default ../shared/data) has its task files
#   sweep/     lr x eps on Dolly, one client, eval loss only (studies/small/sweep.sh)
set -euo pipefail
source "$(dirname "$0")/common.sh"
OUT=${1:-runs/study}
mkdir -p "$OUT"
timed() {  # timed NAME COMMAND...: run and append its wall time to $OUT/wall_time.txt
  local name=$1 start; shift; start=$(date +%s)
  "$@"
  echo "$name: $(( $(date +%s) - start )) s" | tee -a "$OUT/wall_time.txt"
}
arm() {  # arm DIR FLAGS...: FedKSeed (with the base model evaluated first) and FedKSeed-Pro (same base), 3 seeds
  local dir=$1; shift
  for seed in 0 1 2; do
    run_once "$dir/fedkseed-s$seed" "$@" --seed "$seed" --eval_base
    run_once "$dir/fedkseed_pro-s$seed" "$@" --seed "$seed" --bias_sampling --no_eval_base
  done
}
timed dolly arm "$OUT/dolly" "${SMALL[@]}"
timed rerun bash studies/small/rerun_seed0.sh "$OUT"  # Dolly seed 0 in one thread: the rerun tolerance
if [ -f "$NI_DATA/natural-instructions/splits/default/train_tasks.txt" ]; then
  timed instruct arm "$OUT/instruct" "${SMALL_NI[@]}"
else
  echo "instruct: skipped, no Natural Instructions under $NI_DATA" | tee -a "$OUT/wall_time.txt"
fi
timed sweep bash studies/small/sweep.sh "$OUT/sweep"
python studies/small/report.py "$OUT" --json "$OUT/study_results.json" | tee "$OUT/table.md"
for part in dolly instruct; do
  if [ -d "$OUT/$part" ]; then
    python scripts/plot_runs.py "$OUT/$part"/fedkseed-s0 "$OUT/$part"/fedkseed_pro-s0 --out "$OUT/study_$part.png"
  fi
done
