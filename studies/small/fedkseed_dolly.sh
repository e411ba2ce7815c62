#!/usr/bin/env bash
# FedKSeed on the Dolly sample, sized for a 2-core CPU (a few minutes). Extra flags pass through (e.g. --seed 1).
set -euo pipefail
source "$(dirname "$0")/common.sh"
python main.py "${SMALL[@]}" "$@"
