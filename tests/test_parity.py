"""Parity with the authors' data pipeline and schedule: templates (pinned literally), --use_prompts, BOS, epochs,
clients per round, Natural Instructions sampling counts, independent RNG streams, round 0."""
from __future__ import annotations

import json

import numpy as np
import pytest

import config
import main
import modeling
from client import Client, LocalTraining, client_rng
from conftest import dolly_records, tiny_flags, write_tiny_model
from evaluations import evaluate
from run_evaluation import eval_subset
from run_records import read_metrics
from server import clients_per_round
from streams import STREAMS, stream
from utils_data.default_tokens import IGNORE_INDEX, build_prompt, prompt_format
from utils_data.llm_dataset import LLMDataset, special_prefix
from utils_data.natural_instruction_loader import load_natural_instructions

RECORD = {"instruction": "what is the river ?", "context": "the paris river", "response": "it is blue water .",
          "category": "open_qa"}
NO_CONTEXT = dict(RECORD, context="")


# --- 1. templates, pinned as literal strings ------------------------------------------------------------------

def test_dolly_templates_are_the_authors_whatever_use_prompts_says():
    for use_prompts in (True, False):
        fmt = prompt_format("dolly", use_prompts)
        assert build_prompt(RECORD, fmt) == (
            "Below is an instruction that describes a task, paired with an input that provides further context. "
            "Write a response for the task request.\n\n### Instruction:\nwhat is the river ?\n\n"
            "### Input:\nthe paris river\n\n### Response:")
        assert build_prompt(NO_CONTEXT, fmt) == (
            "Below is an instruction that describes a task. Write a response for the task request.\n\n"
            "### Instruction:\nwhat is the river ?\n\n### Response:")


def test_natural_instructions_templates_with_and_without_prompts():
    alpaca = prompt_format("instruct", True)
    assert build_prompt(NO_CONTEXT, alpaca) == (  # the with-input template even when the input is empty
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n### Instruction:\nwhat is the river ?\n\n"
        "### Input:\n\n\n### Response:")
    plain = prompt_format("instruct", False)
    assert build_prompt(RECORD, plain) == "what is the river ?\n\nInput: the paris river\n\nOutput:"
    assert build_prompt(NO_CONTEXT, plain) == "what is the river ?\n\nInput: \n\nOutput:"


# --- 2. --use_prompts defaults to on --------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "expected"), [([], True), (["--use_prompts"], True),
                                                (["--use_prompts", "false"], False), (["--use_prompts", "0"], False),
                                                (["--use_prompts", "true"], True), (["--no_use_prompts"], False)])
def test_use_prompts_defaults_to_on_and_can_be_turned_off(argv, expected):
    assert config.build_parser().parse_args(argv).use_prompts is expected


def test_help_states_the_use_prompts_default(capsys):
    with pytest.raises(SystemExit):
        config.build_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--use_prompts false / --no_use_prompts" in text and "(default: True)" in text


def test_a_bad_boolean_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        config.build_parser().parse_args(["--use_prompts", "maybe"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("error: argument --use_prompts")


# --- 3. BOS where the tokenizer adds it ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bos_model_dir(tmp_path_factory):
    """The tiny model with a tokenizer whose default encoding starts with <s>, as LLaMA tokenizers do."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    path = write_tiny_model(tmp_path_factory.mktemp("bos_model"))
    fast = PreTrainedTokenizerFast.from_pretrained(path)
    bos = fast.convert_tokens_to_ids("<s>")
    fast.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    fast.save_pretrained(path)
    return path


def test_special_prefix_is_bos_only_where_the_tokenizer_adds_it(tiny_model_dir, bos_model_dir):
    plain, with_bos = modeling.load_tokenizer(str(tiny_model_dir)), modeling.load_tokenizer(str(bos_model_dir))
    assert special_prefix(plain) == []
    assert special_prefix(with_bos) == [with_bos.bos_token_id]


@pytest.mark.parametrize("adds_bos", [False, True])
def test_training_eval_and_generation_tokens_start_as_the_tokenizer_says(tiny_model_dir, bos_model_dir, adds_bos):
    tok = modeling.load_tokenizer(str(bos_model_dir if adds_bos else tiny_model_dir))
    records = dolly_records(2)
    ds = LLMDataset(records, tok, "dolly", max_length=512)
    for i, record in enumerate(ds.records):
        prompt = tok(build_prompt(record, "dolly"), add_special_tokens=False)["input_ids"]
        expected = ([tok.bos_token_id] if adds_bos else []) + prompt
        ids, labels = ds[i]["input_ids"].tolist(), ds[i]["labels"].tolist()
        assert ids[:len(expected)] == expected and ds.prompt_ids(i) == expected
        assert labels[:len(expected)] == [IGNORE_INDEX] * len(expected)  # BOS and prompt are out of the loss
        assert labels[len(expected)] != IGNORE_INDEX


def test_generation_starts_from_the_bos_prompt(bos_model_dir, monkeypatch):
    model, tok = modeling.load_model(str(bos_model_dir)), modeling.load_tokenizer(str(bos_model_dir))
    ds = LLMDataset(dolly_records(1)[:3], tok, "dolly", max_length=512)
    seen = []
    original = model.generate

    def spy(**kw):
        seen.extend(row[mask.bool()].tolist() for row, mask in zip(kw["input_ids"], kw["attention_mask"], strict=True))
        return original(**kw)

    monkeypatch.setattr(model, "generate", spy)
    evaluate(model, tok, ds, "rouge", max_new_tokens=2, batch_size=8)
    assert seen == [ds.prompt_ids(i) for i in range(3)]  # each row, padding removed, is the training prompt
    assert [row[0] for row in seen] == [tok.bos_token_id] * 3


# --- 4. --batch_or_epoch epoch runs local_step epochs ----------------------------------------------------------

def test_epoch_mode_runs_local_step_epochs(tiny_model_dir):
    tok = modeling.load_tokenizer(str(tiny_model_dir))
    client = Client(0, LLMDataset(dolly_records(1)[:5], tok, "dolly", 512), tok.pad_token_id, run_seed=0)
    local = LocalTraining(lr=1e-3, eps=1e-3, local_step=3, batch_or_epoch="epoch", batch_size=2)
    batches = list(client.batches(local, client_rng(0, 1, 0)))
    assert len(batches) == 3 * 3  # 3 epochs of ceil(5 / 2) batches
    assert sum(len(b["input_ids"]) for b in batches) == 3 * 5  # every record once an epoch


# --- 5. clients per round --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("m", "n", "expected"), [(0.05, 200, 10), (0.003, 626, 1), (0.004, 626, 2),
                                                  (0.15, 10, 1), (0.25, 10, 2), (0.001, 10, 1), (1.0, 7, 7),
                                                  (0.29, 100, 29)])
def test_clients_per_round_is_int_m_times_n_at_least_one(m, n, expected):
    assert clients_per_round(m, n) == expected


# --- 6. Natural Instructions sampling counts -------------------------------------------------------------------

def test_natural_instructions_counts_use_int_as_the_authors(tmp_path):
    root = tmp_path / "natural-instructions"
    (root / "splits" / "default").mkdir(parents=True)
    (root / "tasks").mkdir()
    sizes = {"task1_train": 1003, "task2_train": 29}  # 20 %: 200.6 -> 200 (round: 201), 5.8 -> 5 (round: 6)
    tests = {"task3_test": 1075}  # 2 %: 21.5 -> 21 (round: 22)
    (root / "splits" / "default" / "train_tasks.txt").write_text("\n".join(sizes) + "\n")
    (root / "splits" / "default" / "test_tasks.txt").write_text("\n".join(tests) + "\n")
    for name, n in {**sizes, **tests}.items():
        instances = [{"input": f"{name} {i}", "output": [f"out {i}"]} for i in range(n)]
        (root / "tasks" / f"{name}.json").write_text(json.dumps({"Definition": ["d"], "Instances": instances}))
    clients, names, eval_records = load_natural_instructions(root, 1000, np.random.default_rng(0))
    assert names == list(sizes) and [len(c) for c in clients] == [200, 5]
    assert len(eval_records) == 21


# --- 7. independent RNG streams --------------------------------------------------------------------------------

def test_every_stream_is_distinct_and_reproducible():
    draws = {name: stream(7, name, *[1, 0][:count]).integers(2**62, size=4).tolist()
             for name, (_, count) in STREAMS.items()}
    assert len({tuple(d) for d in draws.values()}) == len(draws)
    assert stream(7, "data").integers(2**62, size=4).tolist() == draws["data"]
    assert stream(7, "client", 1, 0).integers(2**62) != stream(7, "client", 0, 1).integers(2**62)


def test_eval_subset_does_not_share_client_zeros_first_round_stream():
    records = [{"i": i} for i in range(1000)]
    chosen = [r["i"] for r in eval_subset(records, 50, seed=3)]
    client_order = sorted(client_rng(3, 1, 0).permutation(1000)[:50].tolist())
    assert chosen != client_order


def test_the_data_split_and_the_server_read_different_streams():
    server_first = stream(42, "server").permutation(100)
    assert not np.array_equal(server_first, stream(42, "data").permutation(100))
    assert not np.array_equal(server_first, np.random.default_rng(42).permutation(100))


def test_a_negative_seed_is_one_line_exit_2(capsys):
    assert main.main(["--seed", "-1", "--dataset", "dolly"]) == 2
    assert capsys.readouterr().err.startswith("error: --seed -1")


# --- 8. round 0 is the base model by default -------------------------------------------------------------------

def tiny_run(model_dir, data_file, out, *extra):
    return tiny_flags(model_dir, data_file, out, *extra, rounds=1, clients=2, m=1, eval_examples=3, eval_metric=None,
                      max_new_tokens=2, lr="1e-4", no_compile=False)


def test_round_zero_evaluates_the_base_model_unless_switched_off(tiny_model_dir, dolly_file, tmp_path):
    assert main.main(tiny_run(tiny_model_dir, dolly_file, tmp_path / "on")) == 0
    rows = read_metrics(tmp_path / "on" / "metrics.jsonl")
    assert [r["round"] for r in rows] == [0, 1] and "rouge_l" in rows[0]
    assert json.loads((tmp_path / "on" / "summary.json").read_text())["base"]["eval_loss"] == rows[0]["eval_loss"]
    assert main.main(tiny_run(tiny_model_dir, dolly_file, tmp_path / "off", "--no_eval_base")) == 0
    assert [r["round"] for r in read_metrics(tmp_path / "off" / "metrics.jsonl")] == [1]


# --- inputs that crashed ---------------------------------------------------------------------------------------

def test_a_k_whose_state_cannot_fit_is_refused_before_allocating(monkeypatch, capsys):
    monkeypatch.setattr(config, "memory_info", lambda field: 2**30)  # 1 GiB free: K = 4M needs ~1 GiB
    assert main.main(["--dataset", "dolly", "-K", "4000000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: -K 4000000: the seed state") and err.count("\n") == 1
    monkeypatch.setattr(config, "memory_info", lambda field: 2**40)
    assert config.validate(config.build_parser().parse_args(["-K", "4000000"])).method.K == 4000000


def test_an_unwritable_output_dir_is_one_line(tiny_model_dir, dolly_file, capsys):
    assert main.main(tiny_run(tiny_model_dir, dolly_file, "/proc/fedkseed-x")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --output_dir /proc/fedkseed-x: cannot write") and err.count("\n") == 1

