#!/usr/bin/env bash
# FedKSeed on Natural Instructions (NI_DATA, default ../shared/data), sized for a 2-core CPU. Extra flags pass through.
set -euo pipefail
source "$(dirname "$0")/common.sh"
python main.py "${SMALL_NI[@]}" "$@"
