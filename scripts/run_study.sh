#!/usr/bin/env bash
# The CPU study of docs/results.md: base model vs FedKSeed vs FedKSeed-Pro on the Dolly sample, 3 seeds each,
# then the table and the plot. Usage: scripts/run_study.sh [OUT_DIR]   (default runs/study)
set -euo pipefail
source "$(dirname "$0")/small/common.sh"
OUT=${1:-runs/study}
mkdir -p "$OUT"
start=$(date +%s)
for seed in 0 1 2; do
  # the base model is evaluated (round 0) in the FedKSeed run of each seed: same eval records as the Pro run
  [ -f "$OUT/fedkseed-s$seed/summary.json" ] || \
    python main.py "${SMALL[@]}" --seed "$seed" --eval_base --output_dir "$OUT/fedkseed-s$seed"
  [ -f "$OUT/fedkseed_pro-s$seed/summary.json" ] || \
    python main.py "${SMALL[@]}" --seed "$seed" --bias_sampling --output_dir "$OUT/fedkseed_pro-s$seed"
done
echo "wall time: $(( $(date +%s) - start )) s" | tee "$OUT/wall_time.txt"
python scripts/summarize_study.py "$OUT" | tee "$OUT/table.md"
python scripts/plot_runs.py "$OUT"/fedkseed-s0 "$OUT"/fedkseed_pro-s0 --out "$OUT/study.png"
