#!/usr/bin/env bash
# Is the seed-based runs' empty-answer failure a property of the steps or of the prompt? A study run on Natural
# Instructions again with the model's own chat template (--prompt_format chat): the study's flags, clients, seeds and
# lr, 5 rounds, its base model evaluated under that template (the records that fit --max_length may differ with the
# template). By default FedKSeed on seed 2, where the study's run (the authors' Alpaca template) left 96 of 154
# answers empty at round 5; METHOD=ferret SEED=0 is Ferret on seed 0 (24 of 159 at round 5, 48 at round 10).
#
#   [METHOD=fedkseed] [SEED=2] studies/quality_cost/template.sh [OUT]   # OUT: the study's results
#
# Writes OUT/template/instruct/<method>-lr<lr>-s<seed>; stopped, it resumes. `answers.py --dataset template/instruct`
# tabulates its answers beside the study's.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
OUT=${1:-studies/quality_cost/results}
method=${METHOD:-fedkseed} seed=${SEED:-2}
lr=$(python studies/quality_cost/report.py choose "$OUT" --method "$method")
# shellcheck disable=SC2046
OMP_NUM_THREADS=1 run_once "$OUT/template/instruct/$method-lr$lr-s$seed" "${QC[@]}" "${NI[@]}" \
  $(method_flags "$method") --lr "$lr" --seed "$seed" --eval_base --val_examples 0 --rounds 5 --prompt_format chat
