"""The label mask value and the prompt formats: the authors' templates, none, and the model's chat template.

Formats (--prompt_format; auto = prompt_format picks the authors' one from --dataset and --use_prompts):
  dolly   Dolly-15K, always templated (their Dolly loader ignores --use_prompts): "Write a response for the task
          request.", the no-input form when the record has no context
  alpaca  Natural Instructions with --use_prompts: the Alpaca with-input template, "### Input:" even when empty
  plain   Natural Instructions without prompts: "{definition}\\n\\nInput: {input}\\n\\nOutput:"
  none    no template: the instruction, then "\\n\\n" and the input when there is one (plain_text), then "\\n"
  chat    the tokenizer's chat template (utils_data/chat_format.py): user turn = plain_text, assistant turn =
          the response
The authors' templates do not end with a newline: the response follows "### Response:" (or "Output:") directly.
--dataset json's auto is dolly, the template that adapts to records with and without input.
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

PROMPT_FORMATS = ("dolly", "alpaca", "plain", "none", "chat")


def prompt_format(dataset: str, use_prompts: bool, chosen: str = "auto") -> str:
    """--prompt_format `chosen`, or for auto the template the authors' loader applies for --dataset and
    --use_prompts (dolly for --dataset json)."""
    if chosen != "auto":
        return chosen
    if dataset in ("dolly", "json"):
        return "dolly"
    return "alpaca" if use_prompts else "plain"


def plain_text(record: dict) -> str:
    """The instruction and the input joined as they are: the none format's prompt and the chat user turn."""
    return record["instruction"] + (f"\n\n{record['context']}" if record["context"] else "")


def build_prompt(record: dict, fmt: str) -> str:
    """The text the model is conditioned on: everything before the response."""
    fields = {"instruction": record["instruction"], "input": record["context"]}
    if fmt == "dolly":
        return (DOLLY_WITH_INPUT if record["context"] else DOLLY_NO_INPUT).format(**fields)
    if fmt == "alpaca":
        return ALPACA_WITH_INPUT.format(**fields)
    if fmt == "plain":
        return PLAIN.format(**fields)
    if fmt == "none":
        return plain_text(record) + "\n"
    raise ValueError(f"prompt format {fmt!r}: expected one of {', '.join(PROMPT_FORMATS[:-1])}")
