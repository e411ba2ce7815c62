# Shared settings of the paper's runs (studies/paper_runs/*.sh); sourced, not run.
# MODEL: a local model (HF folder or .gguf); the paper used LLaMA-1B-dj-refine-150B (DataJuicer), LLaMA-3B
# and GPT-2-style models at 1.3B–3B. DATA: the folder with natural-instructions/ and databricks-dolly-15k.jsonl.
MODEL=${MODEL:?set MODEL to a local model path, e.g. MODEL=/models/LLaMA-1B-dj-refine-150B}
DATA=${DATA:-../shared/data}
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
