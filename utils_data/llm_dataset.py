"""Instruction records -> token ids with the prompt masked out of the labels, and right-padding collation."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from errors import FedKSeedError
from utils_data.chat_format import chat_pair, check_chat_template
from utils_data.default_tokens import IGNORE_INDEX, build_prompt


def special_prefix(tokenizer) -> list[int]:
    """The ids a tokenizer puts before the text by default (BOS for LLaMA-family tokenizers; often none)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return list(full[:start])
    return []


def encode(records: list[dict], tokenizer, prompt_format: str) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, supervised ids) of each record: [BOS] + template and response + EOS, or the chat template's
    generation prompt and assistant turn (utils_data/chat_format.py)."""
    if prompt_format == "chat":
        check_chat_template(tokenizer)
        return [chat_pair(r, tokenizer) for r in records]
    eos = tokenizer.eos_token_id
    if eos is None:
        raise FedKSeedError("the tokenizer has no EOS token, so responses cannot be terminated")
    # Separate calls without special tokens, so the prompt/response boundary is exact.
    prefix = special_prefix(tokenizer)
    prompt_ids = _tokenize(tokenizer, [build_prompt(r, prompt_format) for r in records])
    response_ids = _tokenize(tokenizer, [r["response"] for r in records])
    return [(prefix + list(p), list(r) + [eos]) for p, r in zip(prompt_ids, response_ids, strict=True)]


class LLMDataset(Dataset):
    """Tokenized records: input_ids = prompt + response (truncated), labels mask the prompt (see encode).

    The BOS (or whatever special_prefix finds) is there when the tokenizer adds it by default, as in the authors'
    pipeline. Records left with no supervised token after truncation are dropped; `self.dropped` counts them
    (run_evaluation.report_dropped reports them once for all clients), `self.records` holds the kept records and
    `self.prompt_lengths` their prompt lengths (prefix included), aligned with the items.
    """

    def __init__(self, records: list[dict], tokenizer, prompt_format: str, max_length: int):
        if max_length < 2:
            raise FedKSeedError(f"--max_length {max_length}: expected at least 2 tokens")
        self.records: list[dict] = []
        self.items: list[dict[str, torch.Tensor]] = []
        self.prompt_lengths: list[int] = []
        self.dropped = 0
        for record, (p, r) in zip(records, encode(records, tokenizer, prompt_format), strict=True):
            ids = (p + r)[:max_length]
            labels = [IGNORE_INDEX] * min(len(p), len(ids)) + ids[len(p):]
            # The LM loss predicts position i from i-1, so a label at position 0 is never used.
            if all(label == IGNORE_INDEX for label in labels[1:]):
                self.dropped += 1
                continue
            self.records.append(record)
            self.prompt_lengths.append(len(p))
            self.items.append({"input_ids": torch.tensor(ids, dtype=torch.long),
                               "labels": torch.tensor(labels, dtype=torch.long)})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.items[i]

    def prompt_ids(self, i: int) -> list[int]:
        """Item i's prompt as generation starts from it: the training tokens before the response."""
        return self.items[i]["input_ids"][:self.prompt_lengths[i]].tolist()


def _tokenize(tokenizer, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


def collate_right_pad(batch: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Stack items, padding on the right: input_ids with pad_id, labels with IGNORE_INDEX."""
    width = max(len(item["input_ids"]) for item in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    # Built from lengths, not from pad_id, because pad_id is often the EOS id that ends every item.
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, item in enumerate(batch):
        n = len(item["input_ids"])
        input_ids[row, :n] = item["input_ids"]
        labels[row, :n] = item["labels"]
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
