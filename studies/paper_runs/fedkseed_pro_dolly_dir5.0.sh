#!/usr/bin/env bash
# The paper's FedKSeed-Pro run on Dolly-15K, Dirichlet alpha=5.0 over 200 clients, summarization held out.
set -euo pipefail
source "$(dirname "$0")/common.sh"
python main.py --rounds 60 --bias_sampling --model "$MODEL" --data_path "$DATA" --use_prompts --dataset dolly \
  --iid dir5.0 --num_clients 200 --lr 0.0000003 -K 1024 -m 0.05 --log "$@"
