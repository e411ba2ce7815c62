"""studies/small/report.py: the small study's tables and recorded numbers from run folders laid out as
studies/small/run.sh writes them (summary.json, metrics.jsonl and config.json as main.py writes them)."""
from __future__ import annotations

import json

import pytest

from studies.small import report


def write_run(run, flags: dict, rows: list[dict], base: dict | None, final: dict) -> None:
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"flags": flags}))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "summary.json").write_text(json.dumps({"base": base, "final": final}))


def round_rows(losses: list[float], up: float = 0.0, down: float = 0.0) -> list[dict]:
    return [{"round": i, "eval_loss": v, "bytes_up_per_client": up, "bytes_down_per_client": down}
            for i, v in enumerate(losses)]


@pytest.fixture
def study(tmp_path):
    for seed, (base, fed, pro) in enumerate([(2.0, 1.9, 1.8), (2.2, 2.1, 2.3), (2.4, 2.3, 2.2)]):
        write_run(tmp_path / "dolly" / f"fedkseed-s{seed}", {}, round_rows([base, fed], 168, 400 + seed),
                  {"rouge_l": 0.2, "eval_loss": base}, {"rouge_l": 0.25 + 0.01 * seed, "eval_loss": fed})
        write_run(tmp_path / "dolly" / f"fedkseed_pro-s{seed}", {}, round_rows([pro, pro], 168, 4500)[1:],
                  None, {"rouge_l": 0.22, "eval_loss": pro})
    write_run(tmp_path / "sweep" / "lr1e-5-eps1e-3", {"lr": 1e-5, "zo_eps": 1e-3},
              round_rows([2.05, 2.04, 2.03]), None, {"eval_loss": 2.03})
    write_run(tmp_path / "sweep" / "lr3e-6-eps1e-3", {"lr": 3e-6, "zo_eps": 1e-3},
              round_rows([2.05, 2.05, 2.04]), None, {"eval_loss": 2.04})
    return tmp_path


def test_arm_numbers_are_every_seed_in_order_with_round_zero_left_out_of_bytes(study):
    fed = report.collect(study / "dolly", "fedkseed")
    assert fed["eval_loss"] == [1.9, 2.1, 2.3]
    assert fed["base_eval_loss"] == [2.0, 2.2, 2.4]
    assert fed["down"] == [400.0, 401.0, 402.0]  # round 0 (the base evaluation) sent nothing


def test_table_reports_mean_and_sample_std_and_the_paired_rows(study):
    text = report.main(study)
    assert "| FedKSeed | 0.2600 ± 0.0100 | 2.1000 ± 0.2000 | 168 | 401 | 3 |" in text
    assert "| FedKSeed-Pro | 0.2200 ± 0.0000 | 2.1000 ± 0.2646 | 168 | 4500 | 3 |" in text
    assert "| 1 | 2.2000 | 2.1000 | 2.3000 | 0.2000 | 0.2600 | 0.2200 |" in text
    assert "Natural Instructions" not in text  # an absent part is left out


def test_sweep_table_lists_loss_by_round_and_the_change_in_numeric_order(study):
    rows = report.sweep_table(study / "sweep").splitlines()[2:]
    assert rows == ["| 3e-06 | 0.001 | 2.0500 | 2.0500 | 2.0400 | -0.0100 |",
                    "| 1e-05 | 0.001 | 2.0500 | 2.0400 | 2.0300 | -0.0200 |"]


def test_json_holds_each_dataset_and_method(study, tmp_path):
    out = tmp_path / "recorded.json"
    report.write_json(study, out)
    doc = json.loads(out.read_text())
    assert list(doc) == ["dolly"]
    assert doc["dolly"]["fedkseed_pro"]["eval_loss"] == [1.8, 2.3, 2.2]
