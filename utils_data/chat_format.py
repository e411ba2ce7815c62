"""--prompt_format chat: a record as a conversation in the model's own chat template.

The user turn is the instruction and input (plain_text), the assistant turn the response. The prompt is the
template applied to the user turn with add_generation_prompt=True (it ends where the assistant's text starts,
which is where generation starts); the assistant tokens are the text the full conversation adds after it (the
response and the template's end-of-turn marker), tokenized on its own, and they alone carry the loss. On its own,
because a response that starts with whitespace would otherwise merge with the generation prompt's last newline into
one token (NI has "  No  " answers), and the model would train on a prompt it is never given at generation.
"""
from __future__ import annotations

from errors import FedKSeedError
from utils_data.default_tokens import plain_text


def check_chat_template(tokenizer) -> None:
    """Refuse a tokenizer without a chat template, in one line."""
    if not getattr(tokenizer, "chat_template", None):
        raise FedKSeedError("--prompt_format chat: the model's tokenizer has no chat template; "
                            "use --prompt_format dolly, alpaca, plain or none")


def _render(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False)


def chat_pair(record: dict, tokenizer) -> tuple[list[int], list[int]]:
    """(prompt ids ending with the assistant turn's header, the assistant turn's ids) of one record."""
    user = [{"role": "user", "content": plain_text(record)}]
    prompt = _render(tokenizer, user, generation_prompt=True)
    full = _render(tokenizer, [*user, {"role": "assistant", "content": record["response"]}], generation_prompt=False)
    if not full.startswith(prompt) or len(full) == len(prompt):
        raise FedKSeedError("--prompt_format chat: the model's chat template does not render a conversation as "
                            "its generation prompt followed by the assistant turn; use another --prompt_format")
    ids = tokenizer([prompt, full[len(prompt):]], add_special_tokens=False)["input_ids"]
    return list(ids[0]), list(ids[1])
