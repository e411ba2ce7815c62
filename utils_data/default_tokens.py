"""The label mask value and the Alpaca-style prompt templates used with --use_prompts."""
from __future__ import annotations

IGNORE_INDEX = -100  # label value that torch's cross-entropy (and so the HF LM loss) skips

PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)


def build_prompt(record: dict, use_prompts: bool) -> str:
    """The text the model is conditioned on: everything before the response."""
    instruction, context = record["instruction"], record["context"]
    if use_prompts:
        if context:
            return PROMPT_WITH_INPUT.format(instruction=instruction, input=context)
        return PROMPT_NO_INPUT.format(instruction=instruction)
    if context:
        return f"{instruction}\n{context}\n"
    return f"{instruction}\n"
