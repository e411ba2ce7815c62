"""The label mask value and the prompt templates of the authors' data pipeline (one per dataset and flag).

Formats (prompt_format picks one from --dataset and --use_prompts):
  dolly   Dolly-15K, always templated (their Dolly loader ignores --use_prompts): "Write a response for the task
          request.", the no-input form when the record has no context
  alpaca  Natural Instructions with --use_prompts: the Alpaca with-input template, "### Input:" even when empty
  plain   Natural Instructions without prompts: "{definition}\\n\\nInput: {input}\\n\\nOutput:"
No template ends with a newline: the response follows "### Response:" (or "Output:") directly, as theirs.
"""
from __future__ import annotations

IGNORE_INDEX = -100  # label value that torch's cross-entropy (and so the HF LM loss) skips

DOLLY_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response for the task request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
DOLLY_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response for the task request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:"
)
ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
PLAIN = "{instruction}\n\nInput: {input}\n\nOutput:"

PROMPT_FORMATS = ("dolly", "alpaca", "plain")


def prompt_format(dataset: str, use_prompts: bool) -> str:
    """The template the authors' loader applies for --dataset and --use_prompts."""
    if dataset == "dolly":
        return "dolly"
    return "alpaca" if use_prompts else "plain"


def build_prompt(record: dict, fmt: str) -> str:
    """The text the model is conditioned on: everything before the response."""
    fields = {"instruction": record["instruction"], "input": record["context"]}
    if fmt == "dolly":
        return (DOLLY_WITH_INPUT if record["context"] else DOLLY_NO_INPUT).format(**fields)
    if fmt == "alpaca":
        return ALPACA_WITH_INPUT.format(**fields)
    if fmt == "plain":
        return PLAIN.format(**fields)
    raise ValueError(f"prompt format {fmt!r}: expected one of {', '.join(PROMPT_FORMATS)}")
