"""Prompts, label masking, truncation, dropping and right-padding collation with the tiny tokenizer."""
from __future__ import annotations

import pytest
import torch

import modeling
from conftest import dolly_records
from errors import FedKSeedError
from utils_data.default_tokens import IGNORE_INDEX, build_prompt
from utils_data.llm_dataset import LLMDataset, collate_right_pad


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return modeling.load_tokenizer(str(tiny_model_dir))


def record(instruction="what is the river ?", context="the paris river", response="it is blue water ."):
    return {"instruction": instruction, "context": context, "response": response, "category": "open_qa"}


def n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_braces_in_records_are_kept_verbatim():
    r = record(instruction="fill {input} and {0}", context="{x}")
    assert "### Instruction:\nfill {input} and {0}\n\n### Input:\n{x}\n" in build_prompt(r, "dolly")


@pytest.mark.parametrize("fmt", ["plain", "alpaca", "dolly"])
def test_labels_mask_exactly_the_prompt(tokenizer, fmt):
    records = dolly_records(3)
    ds = LLMDataset(records, tokenizer, fmt, max_length=512)
    assert len(ds) == len(records) and ds.dropped == 0 and ds.records == records
    for item, r in zip(ds, records, strict=True):
        ids, labels = item["input_ids"], item["labels"]
        assert ids.dtype == torch.long and labels.shape == ids.shape and ids.dim() == 1
        n_prompt = n_tokens(tokenizer, build_prompt(r, fmt))
        assert n_prompt > 0
        assert (labels[:n_prompt] == IGNORE_INDEX).all()
        assert torch.equal(labels[n_prompt:], ids[n_prompt:])
        assert labels[-1].item() == tokenizer.eos_token_id
        assert len(ids) == n_prompt + n_tokens(tokenizer, r["response"]) + 1
        response_ids = labels[labels != IGNORE_INDEX][:-1]
        assert tokenizer.decode(response_ids) == r["response"]
        assert tokenizer.bos_token_id not in ids.tolist()


def test_truncation_keeps_the_head_of_the_response(tokenizer):
    r = record()
    n_prompt = n_tokens(tokenizer, build_prompt(r, "plain"))
    ds = LLMDataset([r], tokenizer, "plain", max_length=n_prompt + 2)
    ids, labels = ds[0]["input_ids"], ds[0]["labels"]
    assert len(ids) == n_prompt + 2
    assert tokenizer.decode(labels[n_prompt:]) == "it is"  # two response tokens, no EOS
    assert tokenizer.eos_token_id not in labels.tolist()


def test_records_without_a_response_token_are_dropped(tokenizer):
    max_length = 16
    short, long_prompt = record(), record(instruction="what is the river ? " * 10)
    edge = record(instruction="what is the city ? a a a a a a", context="")
    assert n_tokens(tokenizer, build_prompt(edge, "plain")) == max_length - 1  # room for one label token
    ds = LLMDataset([short, long_prompt, edge], tokenizer, "plain", max_length=max_length)
    assert ds.dropped == 1
    assert ds.records == [short, edge]
    assert (ds[1]["labels"] != IGNORE_INDEX).sum().item() == 1


def test_bad_max_length_is_an_error(tokenizer):
    with pytest.raises(FedKSeedError, match="--max_length 1"):
        LLMDataset([record()], tokenizer, "plain", max_length=1)


def test_empty_record_list(tokenizer):
    ds = LLMDataset([], tokenizer, "dolly", max_length=64)
    assert len(ds) == 0 and ds.dropped == 0


@pytest.mark.parametrize("pad_id", [0, 3])  # 3 = EOS: the mask must not be inferred from pad ids
def test_collate_right_pads(tokenizer, pad_id):
    ds = LLMDataset([record(), record(context="", response="yes .")], tokenizer, "plain",
                    max_length=64)
    a, b = ds[0], ds[1]
    batch = collate_right_pad([a, b], pad_id=pad_id)
    width = len(a["input_ids"])
    assert len(b["input_ids"]) < width
    assert set(batch) == {"input_ids", "labels", "attention_mask"}
    for key in batch:
        assert batch[key].shape == (2, width) and batch[key].dtype == torch.long
    assert torch.equal(batch["input_ids"][0], a["input_ids"])
    n = len(b["input_ids"])
    assert torch.equal(batch["input_ids"][1, :n], b["input_ids"])
    assert (batch["input_ids"][1, n:] == pad_id).all()
    assert torch.equal(batch["labels"][1, :n], b["labels"])
    assert (batch["labels"][1, n:] == IGNORE_INDEX).all()
    assert batch["attention_mask"][0].tolist() == [1] * width
    assert batch["attention_mask"][1].tolist() == [1] * n + [0] * (width - n)


def test_padding_does_not_change_the_loss(tiny_model_dir, tokenizer):
    model = modeling.load_model(str(tiny_model_dir))
    ds = LLMDataset([record(), record(context="", response="yes .")], tokenizer, "plain",
                    max_length=64)
    alone = collate_right_pad([ds[1]], pad_id=tokenizer.pad_token_id)
    padded = collate_right_pad([ds[0], ds[1]], pad_id=tokenizer.pad_token_id)
    padded = {k: v[1:] for k, v in padded.items()}  # the short item, now with padding after it
    assert padded["input_ids"].shape[1] > alone["input_ids"].shape[1]
    with torch.no_grad():
        assert torch.allclose(modeling.lm_loss(model, alone), modeling.lm_loss(model, padded), atol=1e-6)
