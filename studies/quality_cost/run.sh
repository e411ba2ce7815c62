#!/usr/bin/env bash
# The quality-against-cost study of docs/results.md. Usage: studies/quality_cost/run.sh [OUT_DIR] (default
# studies/quality_cost/results, whose finished runs are committed: the machine that runs the study may be replaced
# before the study ends, and a run's checkpoints, ignored by git, go with it). Resumable: finished runs are skipped and
# killed ones continue from their checkpoint; runs are named <method>-lr<lr>-s<seed> under dolly/ and instruct/.
#   1. Dolly, seed 0: every method at the middle lr of its grid (common.sh), then at the highest, each followed by
#      its climb: while the highest lr tried has the lowest validation loss, the next lr up, twice at most (lr_up).
#      A method's later runs wait while its sweep still has an lr to run (e.g. a FedAvg run deferred by DEADLINE).
#   2. Each method's lr: the lowest final validation loss so far (studies/quality_cost/report.py choose).
#   3. FedKSeed's first 2 rounds of Dolly seed 0 again, in one torch thread (the rerun tolerance of
#      tests/test_quality_cost_rerun.py).
#   4. At the chosen lrs, seed by seed: Natural Instructions seed 0, then Natural Instructions and Dolly seed 1,
#      then both at seed 2 (no barrier between them: a free slot takes the next run).
#   5. The longer horizon (common.sh LONG): FedKSeed, Ferret and FedIT at their chosen lrs, seed 0 of both datasets
#      (a method on both before the next method), 50 rounds (10,000 local steps), under long/<dataset>/; one continues its 10-round run when that run's
#      checkpoint is still on disk (short_run).
#   6. Dolly seed 0 at the lowest lr of each grid: every one of them ended behind its method's middle lr in the
#      runs docs/quality_cost_plan.md records, so it completes the sweep's table last; skipped where
#      3 lrs have run and the chosen one is not the lowest of them (the climb made the 3: the lowest adds nothing).
#   7. The report: tables, curves and cost to target (studies/quality_cost/report.py).
# PART=sweep|rerun|dolly|instruct|long|sweep_low|report runs one part only (each needs the sweep); DRY=1 lists the runs;
# JOBS=N runs up to N runs of a part at once, each in one torch thread (bench/parallel_runs.py measures the gain).
# Two parts side by side (PART=sweep beside PART=instruct) need OMP_NUM_THREADS=1 each: two 2-thread runs on 2 cores
# spent half their CPU time in the kernel (top: 50% sy) and finished no round in 20 minutes. Two drivers starting the
# same run: main.py refuses the second (the run directory's .lock, exit 2), which leaves that run to the first.
# DEADLINE=TIME (anything `date -d` reads, e.g. 14:40): when the machine will be released; a FedAvg run, whose
# checkpoint is not committed and would be lost with it, is deferred unless its longest recorded wall time ends
# before then.
set -euo pipefail
source "$(dirname "$0")/common.sh"
OUT=${1:-studies/quality_cost/results}
mkdir -p "$OUT"
JOBS=${JOBS:-1}
if [ -n "${DEADLINE:-}" ]; then
  DEADLINE_S=$(date -d "$DEADLINE" +%s 2>/dev/null) || { echo "error: DEADLINE=$DEADLINE is not a time" >&2; exit 2; }
fi
part() { [ -z "${PART:-}" ] || [ "$PART" = "$1" ]; }
launch() {  # launch COMMAND ARGS...: run it now, or with JOBS > 1 in the background once fewer than JOBS are on
  if [ "$JOBS" -le 1 ] || [ -n "${DRY:-}" ]; then "$@"; return 0; fi
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
  (export OMP_NUM_THREADS=1; "$@") &
}
drain() { while [ -n "$(jobs -p)" ]; do wait -n; done; }  # the end of a part: its runs, a failure stops the study
run() {  # run DIR METHOD LR SEED DATA_FLAGS...: one run, its wall time appended to $OUT/wall_time.txt. The base
  # model is evaluated once per dataset and seed, by its first run (report.py reads it from there).
  # Validation loss only in the sweep (Dolly, seed 0).
  local dir=$1 method=$2 lr=$3 seed=$4 start short cmd base=--no_eval_base val=(); shift 4
  [ -f "$dir/summary.json" ] && return 0
  if ! fits_before_deadline "$method"; then echo "deferred past DEADLINE: $dir"; return 0; fi
  if [ "$(base_run "$(dirname "$dir")" "$seed")" = "$(basename "$dir")" ]; then base=--eval_base; fi
  if [ "$(basename "$(dirname "$dir")")" != dolly ] || [ "$seed" != 0 ]; then val=(--val_examples 0); fi
  if [[ $dir == "$OUT/long/"* ]]; then base=--eval_base val=(--val_examples 0); fi  # a long run stands alone
  short=$(short_run "$dir")
  if [ -n "${DRY:-}" ]; then echo "$dir $method $lr $seed $base ${val[*]}${short:+ continues $short}"; return 0; fi
  start=$(date +%s)
  if [ -n "$short" ]; then mkdir -p "$dir" && cp "$short"/{config.json,metrics.jsonl,checkpoint.json} "$dir"/; fi
  # shellcheck disable=SC2046
  cmd=(run_once "$dir" "${QC[@]}" "$@" $(method_flags "$method") --lr "$lr" --seed "$seed" "$base" "${val[@]}")
  if [[ $dir == "$OUT/long/"* ]] && [ -f "$dir/checkpoint.json" ]; then  # the rounds of a continued 10-round run
    cmd=(python main.py --resume "$dir" "${LONG[@]}")
  fi
  if ! "${cmd[@]}"; then
    taken "$dir" || return 1
    echo "left to the driver that holds it: $dir"; return 0
  fi
  echo "$dir: $(( $(date +%s) - start )) s" >> "$OUT/wall_time.txt"
}
short_run() {  # short_run LONG_DIR: the 10-round run a long run that has not started continues, if that run's final
  # checkpoint is still on disk (it leaves git when its run finishes): 10 rounds fewer, the same trajectory (a run's
  # --rounds does not change its first rounds: long/dolly/fedkseed-lr1e-5-s0 repeats dolly/fedkseed-lr1e-5-s0's to
  # the bit). Its rounds keep the 10-round run's evaluations (a validation loss on Dolly, Rouge-L at round 5).
  local short=$OUT/${1#"$OUT/long/"}
  if [[ $1 == "$OUT/long/"* ]] && [ ! -e "$1" ] && [ -f "$short/summary.json" ] && [ -f "$short/checkpoint.json" ]
  then echo "$short"; fi
}
taken() {  # taken DIR: another driver runs DIR (a live process holds its .lock: main.py refused with exit 2), or
  # has finished it meanwhile
  [ -f "$1/summary.json" ] || python -c 'import sys, run_lock; sys.exit(run_lock.holder(sys.argv[1]) is None)' "$1"
}
fits_before_deadline() {  # fits_before_deadline METHOD: false for FedAvg when its longest recorded run would end
  # after DEADLINE
  local longest
  if [ -z "${DEADLINE_S:-}" ] || [ "$1" != fedavg ]; then return 0; fi
  longest=$(grep "/fedavg-lr" "$OUT/wall_time.txt" 2>/dev/null | awk '{print $2}' | sort -g | tail -1 || true)
  [ $(( $(date +%s) + ${longest:-0} )) -le "$DEADLINE_S" ]
}
base_run() {  # base_run DATASET_DIR SEED: the run of that seed that evaluates the base model (FedKSeed's; in
  # the sweep, at its middle lr, which runs first)
  if [ "$(basename "$1")" = dolly ] && [ "$2" = 0 ]; then echo "fedkseed-lr$(lr_grid fedkseed | cut -d' ' -f2)-s0"
  else echo "fedkseed-lr${LR[fedkseed]}-s$2"; fi
}
sweep() {  # sweep I: Dolly, seed 0, every method at the I-th lr of its grid
  local method lr
  for method in "${METHODS[@]}"; do
    lr=$(lr_grid "$method" | cut -d' ' -f"$1"); launch run "$OUT/dolly/$method-lr$lr-s0" "$method" "$lr" 0 "${DOLLY[@]}"
  done
}
pending() {  # pending METHOD: the method's next seed-0 Dolly lr above its middle one, nothing once its sweep is
  # settled: the grid's highest lr, then, while the highest lr run so far has the lowest validation loss, one lr up
  # (2 at most; a restarted sweep goes on from the highest lr its climb reached)
  local lr climbed=0
  lr=$(lr_grid "$1" | cut -d' ' -f3)
  if [ ! -f "$OUT/dolly/$1-lr$lr-s0/summary.json" ]; then echo "$lr"; return 0; fi
  while [ "$climbed" -lt 2 ] && [ -f "$OUT/dolly/$1-lr$(lr_up "$lr")-s0/summary.json" ]; do
    lr=$(lr_up "$lr") climbed=$((climbed + 1))
  done
  if [ "$climbed" -lt 2 ] && [ "$(python studies/quality_cost/report.py choose "$OUT" --method "$1")" = "$lr" ]; then
    lr_up "$lr"
  fi
}
tried() {  # tried METHOD: the lrs of the method's finished seed-0 Dolly runs, lowest first
  local run lr
  for run in "$OUT/dolly/$1"-lr*-s0; do
    if [ -f "$run/summary.json" ]; then lr=${run##*-lr}; echo "${lr%-s0}"; fi
  done | sort -g
}
low() {  # low METHOD: the grid's lowest lr, unless 3 lrs have run and the chosen one is above the lowest of them
  local lrs lowest
  lrs=$(tried "$1") lowest=$(lr_grid "$1" | cut -d' ' -f1)
  if [ "$(echo "$lrs" | wc -w)" -ge 3 ] && \
     [ "$(python studies/quality_cost/report.py choose "$OUT" --method "$1")" != "$(echo "$lrs" | head -1)" ]; then
    return 0
  fi
  run "$OUT/dolly/$1-lr$lowest-s0" "$1" "$lowest" 0 "${DOLLY[@]}"
}
top() {  # top METHOD: the method's highest lr, then the climb above it (one job, so that a free slot goes on); it
  # stops at a run that did not finish (DRY, or a FedAvg run deferred past DEADLINE)
  local lr
  while lr=$(pending "$1") && [ -n "$lr" ]; do
    run "$OUT/dolly/$1-lr$lr-s0" "$1" "$lr" 0 "${DOLLY[@]}"
    [ -f "$OUT/dolly/$1-lr$lr-s0/summary.json" ] || return 0
  done
}
if part sweep; then  # the middle lrs first: a complete comparison after 5 runs; each climb compares with them
  sweep 2; drain
  for method in "${METHODS[@]}"; do launch top "$method"; done; drain
fi
declare -A LR WAITS  # each method's chosen lr (studies/quality_cost/report.py choose), once the sweep has run. A
# method whose sweep still has an lr to run (a deferred FedAvg run; PART=instruct beside PART=sweep) waits for it,
# except in a DRY listing of the sweep too, which lists the rest at the lrs chosen so far.
if part rerun || part dolly || part instruct || part long; then
  for method in "${METHODS[@]}"; do
    # a method with no finished sweep run yet has no lr: it waits (choose's error says why)
    LR[$method]=$(python studies/quality_cost/report.py choose "$OUT" --method "$method" 2>/dev/null) || true
    if [ -z "${DRY:-}" ] || ! part sweep || [ -z "${LR[$method]}" ]; then WAITS[$method]=$(pending "$method"); fi
  done
fi
if part rerun; then
  if [ -n "${DRY:-}" ]; then
    echo "$OUT/rerun-1thread fedkseed ${LR[fedkseed]} 0 (one thread, 2 rounds)"
  else
    # shellcheck disable=SC2046
    OMP_NUM_THREADS=1 run_once "$OUT/rerun-1thread" $(rerun_flags "${LR[fedkseed]}")
  fi
fi
for seed in 0 1 2; do  # seed by seed, Natural Instructions first: each seed completes both datasets' comparisons
  for dataset in instruct dolly; do
    if ! part "$dataset" || [ "$dataset/$seed" = dolly/0 ]; then continue; fi
    case $dataset in dolly) flags=("${DOLLY[@]}") ;; instruct) flags=("${NI[@]}") ;; esac
    for method in "${METHODS[@]}"; do
      if [ -n "${WAITS[$method]:-}" ]; then echo "waits for its lr sweep: $OUT/$dataset/$method-s$seed"; continue; fi
      lr=${LR[$method]}; launch run "$OUT/$dataset/$method-lr$lr-s$seed" "$method" "$lr" "$seed" "${flags[@]}"
    done
  done
done
drain
if part long; then
  for method in "${LONG_METHODS[@]}"; do
    for dataset in dolly instruct; do
      case $dataset in dolly) flags=("${DOLLY[@]}") ;; instruct) flags=("${NI[@]}") ;; esac
      if [ -n "${WAITS[$method]:-}" ]; then echo "waits for its lr sweep: $OUT/long/$dataset/$method-s0"; continue; fi
      lr=${LR[$method]}; launch run "$OUT/long/$dataset/$method-lr$lr-s0" "$method" "$lr" 0 "${flags[@]}" "${LONG[@]}"
    done
  done
  drain
fi
if part sweep_low; then for method in "${METHODS[@]}"; do launch low "$method"; done; drain; fi
if part report && [ -z "${DRY:-}" ]; then  # DRY lists runs, writes nothing
  # DOCS=docs writes the recorded numbers and the plots where docs/results.md and the tests read them
  python studies/quality_cost/report.py report "$OUT" --json "${DOCS:-$OUT}/quality_cost_results.json" \
    --plots "${DOCS:-$OUT}" | tee "$OUT/report.md"
fi
