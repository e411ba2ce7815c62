#!/usr/bin/env bash
# Per-step time of each method at the study's settings (one client, one round of STEPS local steps on Dolly, no
# evaluation to speak of), and what the study will cost. Usage: studies/quality_cost/probe.sh [OUT_DIR] [STEPS]
# Run it on a quiet machine: it is a timing.
set -euo pipefail
source "$(dirname "$0")/common.sh"
OUT=${1:-runs/quality_cost_probe}
STEPS=${2:-10}
for method in "${METHODS[@]}"; do
  # shellcheck disable=SC2046
  run_once "$OUT/$method" $(probe_flags "$method" "$STEPS")
done
python - "$OUT" "$STEPS" <<'PY'
import json, sys
from pathlib import Path
out, steps = Path(sys.argv[1]), int(sys.argv[2])
print("| method | s / local step | peak memory |")
print("| --- | --- | --- |")
for run in sorted(p for p in out.iterdir() if p.is_dir()):
    row = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    print(f"| {run.name} | {row['client_seconds'] / steps:.3f} | {row['peak_memory_bytes'] / 2**20:.0f} MiB |")
PY
