#!/usr/bin/env bash
# Is the zeroth-order runs' empty-answer failure a property of the steps or of the prompt? FedKSeed on Natural
# Instructions seed 2, where the study's run (the authors' Alpaca template) left 96 of 154 answers empty at round 5,
# again with the model's own chat template (--prompt_format chat): the study's flags, clients, seeds and lr, 5 rounds,
# its base model evaluated under that template (the records that fit --max_length may differ with the template).
#
#   studies/quality_cost/template.sh [OUT]   # OUT: the study's results (default studies/quality_cost/results)
#
# Writes OUT/template/instruct/fedkseed-lr<lr>-s2; stopped, it resumes. `answers.py --dataset template/instruct`
# tabulates its answers beside the study's.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
OUT=${1:-studies/quality_cost/results}
lr=$(python studies/quality_cost/report.py choose "$OUT" --method fedkseed)
# shellcheck disable=SC2046
OMP_NUM_THREADS=1 run_once "$OUT/template/instruct/fedkseed-lr$lr-s2" "${QC[@]}" "${NI[@]}" $(method_flags fedkseed) \
  --lr "$lr" --seed 2 --eval_base --val_examples 0 --rounds 5 --prompt_format chat
