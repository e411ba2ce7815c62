"""studies/authors_check: the authors' code gets the study run's settings as their flags, their Natural Instructions
loader sees only the tasks present, and the records it is evaluated on are exactly those the study run scored."""
from __future__ import annotations

import json

from conftest import tiny_flags, train
from studies.authors_check.authors import first_eos_probs, link_data
from studies.authors_check.prepare import AUTHORS_FLAGS, authors_argv, prepare


def test_the_settings_become_the_authors_flags_with_their_short_ones():
    flags = {name: f"v-{name}" for name in AUTHORS_FLAGS}
    argv = authors_argv(flags)
    pairs = dict(zip(argv[::2], argv[1::2], strict=True))
    # their parser declares -K and -m only in short form: "--m" would be an ambiguous prefix of --max_length/--model
    assert pairs["-K"] == "v-K" and pairs["-m"] == "v-m" and "--m" not in pairs and "--K" not in pairs
    assert pairs["--local_step"] == "v-local_step" and len(pairs) == len(AUTHORS_FLAGS)


def test_the_authors_loader_is_shown_only_the_tasks_that_are_present(tmp_path):
    root = tmp_path / "data" / "natural-instructions"
    (root / "splits" / "default").mkdir(parents=True)
    (root / "tasks").mkdir()
    (root / "splits" / "default" / "train_tasks.txt").write_text("task1_a\ntask2_missing\ntask3_c\n")
    (root / "splits" / "default" / "test_tasks.txt").write_text("task9_missing\ntask4_d\n")
    for name in ("task1_a", "task3_c", "task4_d"):
        (root / "tasks" / f"{name}.json").write_text("{}")
    work = tmp_path / "work"
    link_data(tmp_path / "data", work)
    splits = work / "data" / "natural-instructions-2.8" / "splits" / "default"
    assert (splits / "train_tasks.txt").read_text().split() == ["task1_a", "task3_c"]
    assert (splits / "test_tasks.txt").read_text().split() == ["task4_d"]
    assert (work / ".datasets" / "natural-instructions-2.8" / "tasks" / "task3_c.json").is_file()


def test_the_prepared_records_are_those_the_study_run_scored(tiny_model_dir, data_file, tmp_path):
    run = tmp_path / "run"
    train(tiny_flags(tiny_model_dir, data_file, run, "--eval_examples", "6", "--seed", "3", eval_metric="rouge",
                     rounds=1, max_new_tokens=4))
    settings = prepare(run, tmp_path / "prepared")
    records = json.loads((tmp_path / "prepared" / "eval_records.json").read_text())
    scored = [json.loads(line) for line in (run / "generations-1.jsonl").read_text().splitlines()]
    assert settings["eval_records"] == len(records) == len(scored) > 0
    assert [r["response"] for r in records] == [s["reference"] for s in scored]
    assert (tmp_path / "prepared" / "model" / "config.json").is_file()
    assert settings["argv"][settings["argv"].index("--seed") + 1] == "3"


def test_the_first_eos_probability_is_that_of_the_next_token_after_each_prompt(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompts = [torch.tensor([[5, 6, 7]]), torch.tensor([[8, 9]])]
    probs = first_eos_probs(model, [{"input_ids": p} for p in prompts], eos_id=3)
    for p, prob in zip(prompts, probs, strict=True):
        with torch.no_grad():
            last = model(input_ids=p).logits[0, -1]
        assert abs(prob - torch.softmax(last, -1)[3].item()) < 1e-6 and prob != torch.softmax(last, -1)[2].item()
