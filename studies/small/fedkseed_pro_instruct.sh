#!/usr/bin/env bash
# FedKSeed-Pro on Natural Instructions (NI_DATA, default ../shared/data), sized for a 2-core CPU.
set -euo pipefail
source "$(dirname "$0")/common.sh"
python main.py "${SMALL_NI[@]}" --bias_sampling "$@"
