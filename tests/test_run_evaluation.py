"""What a run evaluates and when: the validation set is disjoint from the evaluation set and logged as val_loss;
Rouge-L every --rouge_every rounds besides the base and the last round, its generations kept beside the metrics."""
from __future__ import annotations

import os

os.environ["FEDKSEED_COMPILE"] = "0"

import pytest  # noqa: E402

import main  # noqa: E402
from conftest import tiny_flags  # noqa: E402
from evaluations import rouge_l  # noqa: E402
from run_evaluation import eval_subset  # noqa: E402
from run_records import read_metrics  # noqa: E402


def test_the_validation_draw_is_disjoint_from_the_evaluation_draw_and_leaves_it_unchanged():
    records = [{"i": i} for i in range(200)]
    evaluated = [r["i"] for r in eval_subset(records, 50, seed=4)]
    validated = [r["i"] for r in eval_subset(records, 30, seed=4, skip=50)]
    assert len(set(validated)) == 30 and not set(evaluated) & set(validated)
    assert evaluated == [r["i"] for r in eval_subset(records, 50, seed=4)]
    assert set(validated) < set(r["i"] for r in eval_subset(records, 80, seed=4))  # the next records of one shuffle


def test_rouge_every_and_val_loss_appear_in_the_rounds_they_are_due(tiny_model_dir, dolly_file, tmp_path):
    out = tmp_path / "run"
    argv = tiny_flags(tiny_model_dir, dolly_file, out, "--val_examples", "3", "--rouge_every", "2", K=None, rounds=4,
                      clients=2, m=1, eval_examples=3, eval_metric=None, eval_every=1, max_new_tokens=2, lr=None,
                      zo_eps=None, no_compile=False)
    assert main.main(argv) == 0
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["round"] for r in rows if "rouge_l" in r] == [0, 2, 4]
    assert [r["round"] for r in rows if "val_loss" in r] == [0, 1, 2, 3, 4]
    assert all(r["val_loss"] != r["eval_loss"] for r in rows)
    # each Rouge-L evaluation leaves its generations, one line per evaluated record, scored one by one
    assert sorted(p.name for p in out.glob("generations-*.jsonl")) == [f"generations-{r}.jsonl" for r in (0, 2, 4)]
    for row in (r for r in rows if "rouge_l" in r):
        generated = read_metrics(out / f"generations-{row['round']}.jsonl")
        assert [g["record"] for g in generated] == [0, 1, 2]
        assert all(g["rouge_l"] == pytest.approx(rouge_l([g["prediction"]], [g["reference"]])) for g in generated)
        assert sum(g["rouge_l"] for g in generated) / 3 == pytest.approx(row["rouge_l"])


def test_val_examples_needs_a_bounded_evaluation_set(capsys):
    assert main.main(["--dataset", "dolly", "--val_examples", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --val_examples 5: needs --eval_examples N > 0") and err.count("\n") == 1
