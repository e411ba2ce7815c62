# Settings of the quality-against-cost study (docs/results.md); sourced, not run. SmolLM2-135M-Instruct on this
# 2-core CPU; every run: 10 rounds x 4 clients x 50 local steps = 2,000 local steps (zeroth- or first-order), the
# base model evaluated at round 0, held-out eval loss every round and Rouge-L at rounds 0, 5 and 10 on ~100 records
# (170 drawn; on Dolly 60% of the summarization records fit 256 tokens), validation loss on ~100 further held-out
# records in the lr sweep (Dolly, seed 0), which chooses on it.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source studies/run_once.sh  # run_once: skip finished runs, resume killed ones
DATA=${QC_DATA:-../shared/data}
QC=(--model smollm2-135m-instruct --max_length 256 --rounds 10 --local_step 50 --eval_examples 170
    --val_examples 170 --eval_every 1 --rouge_every 5 --max_new_tokens 128 --eval_batch_size 8 --quiet --log)
# Dolly-15K: 200 clients by Dirichlet 0.5 over the categories, summarization held out (the paper's); -m 0.0225
# samples 4 a round for 178-222 clients with usable records.
DOLLY=(--dataset dolly --data_path "$DATA/databricks-dolly-15k.jsonl" --iid dir0.5 --num_clients 200 -m 0.0225)
# Natural Instructions: a client per training task, test tasks held out; -m 0.0075 samples 4 a round for 534-666
# usable tasks (~600 keep a record within 256 tokens).
NI=(--dataset instruct --data_path "$DATA" -m 0.0075)
# FedAvg first: its checkpoint (the whole model, 538 MB) is not committed, so a driver with a DEADLINE starts it
# while it can still finish. Ferret last: it joined the study after the others had run.
METHODS=(fedavg fedkseed fedkseed_pro fedkseed_lora fedit ferret)
# The longer horizon: seed 0 of both datasets to 5x the steps (50 rounds, 10,000 local steps), each run evaluating
# its own base model. Eval loss every 5 rounds: an evaluation took 100-200 s of a 500-700 s round in the 10-round
# runs (their loss every round is the long runs' first 10 rounds: a run's rounds do not change its trajectory).
# Rouge-L, empty answers and P(EOS first) every 10 rounds. In the order they run, the issue's question first: FedKSeed
# on both datasets, then Ferret, then FedIT (its 10-round curve already bounds what FedKSeed is measured against).
LONG_METHODS=(fedkseed ferret fedit)
LONG=(--rounds 50 --eval_every 5 --rouge_every 10)

method_flags() {  # method_flags METHOD: the flags that make the method (K and eps as the paper's Dolly scripts)
  case $1 in
    fedkseed) echo --method fedkseed -K 1024 --zo_eps 1e-3 ;;
    fedkseed_pro) echo --method fedkseed -K 1024 --zo_eps 1e-3 --bias_sampling ;;
    fedkseed_lora) echo --method fedkseed -K 1024 --zo_eps 1e-3 --peft lora ;;
    fedit) echo --method fedit ;;
    fedavg) echo --method fedavg ;;
    ferret) echo --method ferret -K 200 ;;  # the reference script's K; --server_lr and --server_clip at their defaults
  esac
}

lr_grid() {  # lr_grid METHOD: the 3 learning rates swept (seed 0, Dolly, chosen on validation loss). FedKSeed + LoRA's
  # grid is a decade above full-parameter FedKSeed's: a zeroth-order step's usable lr grows as the perturbed dimension
  # shrinks (~0.46M adapter weights against 135M). In runs with the adapters' dropout on, LoRA at 1e-4 moved the eval
  # loss by only -0.008 in 2,000 steps (full-parameter FedKSeed at 3e-6: -0.048), and at 1e-3 it reached 2.3398 after
  # one round (the best round 1 of any zeroth-order run) and diverged in the second (eval loss 21.5), so the grid
  # ends at 1e-3. The committed runs perturb the adapters without dropout, as MeZO on all weights.
  case $1 in
    fedkseed | fedkseed_pro) echo 1e-6 3e-6 1e-5 ;;
    fedkseed_lora) echo 1e-4 3e-4 1e-3 ;;
    fedit) echo 3e-5 1e-4 3e-4 ;;
    fedavg) echo 1e-6 3e-6 1e-5 ;;
    ferret) echo 3e-5 1e-4 3e-4 ;;  # centred on the reference script's --lr 1e-4 (plain SGD)
  esac
}

lr_up() {  # lr_up LR: the next lr up the grids' 1-3-10 ladder (1e-5 -> 3e-5 -> 1e-4), tried in the sweep while a
  # method's highest lr is the one chosen, so that the chosen lr is not the edge of what was tried
  local mantissa=${1%e*} exponent=${1#*e}
  if [ "$mantissa" = 1 ]; then echo "3e$exponent"; else echo "1e$(( exponent + 1 ))"; fi
}

rerun_flags() {  # rerun_flags LR: the smallest configuration that tests/test_quality_cost_rerun.py reruns: FedKSeed on
  # Dolly, seed 0, its first 2 rounds (400 local steps), eval loss only; its numbers are those of rounds 0-2 of the
  # study's seed-0 run at that lr (evaluation draws nothing from the training streams)
  echo "${QC[@]}" "${DOLLY[@]}" "$(method_flags fedkseed)" --lr "$1" --seed 0 --rounds 2 --eval_metric loss --val_examples 0
}

probe_flags() {  # probe_flags METHOD STEPS: one client's STEPS local steps at the study's settings and the method's
  # middle lr, with next to no evaluation (studies/quality_cost/probe.sh, bench/parallel_runs.py)
  echo "${QC[@]}" "${DOLLY[@]}" "$(method_flags "$1")" --lr "$(lr_grid "$1" | cut -d' ' -f2)" --seed 0 --rounds 1 \
    --local_step "$2" --num_clients 200 -m 0.0075 --eval_examples 4 --val_examples 0 --eval_metric loss --no_eval_base
}
