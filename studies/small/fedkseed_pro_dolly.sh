#!/usr/bin/env bash
# FedKSeed-Pro on the Dolly sample, sized for a 2-core CPU (a few minutes). Extra flags pass through.
set -euo pipefail
source "$(dirname "$0")/common.sh"
python main.py "${SMALL[@]}" --bias_sampling "$@"
