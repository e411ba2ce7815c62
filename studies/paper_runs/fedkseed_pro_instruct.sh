#!/usr/bin/env bash
# The paper's FedKSeed-Pro run on Natural Instructions (one client per train task; num_clients follows).
set -euo pipefail
source "$(dirname "$0")/common.sh"
python main.py --rounds 40 --bias_sampling --model "$MODEL" --data_path "$DATA" --use_prompts --dataset instruct \
  --lr 0.0000003 -K 1024 -m 0.05 --log "$@"
