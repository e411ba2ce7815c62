"""What each method sends per client and round at the paper's settings, computed from model shapes (no weights
are loaded: the models are built on the meta device). Prints the README's table.

    python scripts/method_bytes.py [--local_step 200] [--lora_r 8] [--lora_target_modules q_proj,v_proj]
"""
from __future__ import annotations

import argparse

import torch
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {
    # SmolLM2-135M-Instruct's config (tied embeddings, grouped-query attention)
    "SmolLM2-135M": LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True),
    # a 1.3B LLaMA shape like the paper's LLaMA-1.3B: 24 layers of width 2048, untied 32k vocabulary
    "LLaMA-1.3B shape": LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5504,
                                    num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=16,
                                    tie_word_embeddings=False),
}


def counts(config: LlamaConfig, r: int, targets: list[str]) -> tuple[int, int]:
    """(all parameters, LoRA adapter parameters on `targets` at rank r)."""
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    total = sum(p.numel() for p in model.parameters())
    adapters = sum(r * (m.in_features + m.out_features) for name, m in model.named_modules()
                   if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets)
    return total, adapters


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--local_step", type=int, default=200)
    p.add_argument("--lora_r", type=int, default=8)
    p.add_argument("--lora_target_modules", default="q_proj,v_proj")
    args = p.parse_args()
    targets = args.lora_target_modules.split(",")
    print("| model | method | up per client and round | down per client and round |")
    print("| --- | --- | --- | --- |")
    for name, config in SHAPES.items():
        total, adapters = counts(config, args.lora_r, targets)
        up_zo = 8 * args.local_step + 8  # int32 seed index + float32 g a step, plus the sample count
        for k in (1024, 4096):
            # at most every entry of c changed since the last sync: int32 index + float64 value each
            print(f"| {name} | FedKSeed, K = {k} | {human(up_zo)} | at most {human(12 * k)} |")
            print(f"| {name} | FedKSeed-Pro, K = {k} | {human(up_zo)} | at most {human(12 * k + 4 * k)} |")
        print(f"| {name} | FedIT (LoRA r {args.lora_r}, {'+'.join(targets)}: {adapters / 1e6:.2f}M) "
              f"| {human(4 * adapters + 8)} | {human(4 * adapters)} |")
        print(f"| {name} | FedAvg (all {total / 1e6:.0f}M weights, float32) | {human(4 * total + 8)} "
              f"| {human(4 * total)} |")


if __name__ == "__main__":
    main()
