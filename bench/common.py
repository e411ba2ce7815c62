"""Shared pieces of the benchmarks: the LLaMA-shape bench model, a batch, timing, and the paper-style z."""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """--device and the size flags of the LLaMA-shape bench model (defaults: the 58.5M model of issue 4)."""
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--intermediate", type=int, default=1408)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument("--model_dir", help="a model folder to load instead (e.g. scripts/make_model.py's shapes)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="--model_dir's dtype")


KERNELS = {"native": None, "compiled": True, "eager": False}  # --kernels -> Perturbation(compile=...)


def add_kernel_flag(parser: argparse.ArgumentParser) -> None:
    """--kernels: which z kernels the project's cases use."""
    parser.add_argument("--kernels", choices=KERNELS, default="native",
                        help="native: the default path (optimizers/z_native_source.py for float32 CPU parameters, "
                             "torch.compile elsewhere); compiled: torch.compile only (as on CUDA); eager: plain torch")


def apply_threads(args: argparse.Namespace) -> None:
    """Honour --threads before any work is done."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)


def bench_model(args: argparse.Namespace) -> torch.nn.Module:
    """--model_dir's model in --dtype, or a randomly initialised LlamaForCausalLM of the requested shape, float32;
    eval mode, on --device. args.vocab becomes the model's vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if args.model_dir:
        from modeling import load_model

        model = load_model(args.model_dir, args.dtype, args.device)
        args.vocab = model.config.vocab_size
        return model
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads,
        max_position_embeddings=max(args.seq, 512), tie_word_embeddings=False,
    )
    with torch.no_grad():
        model = LlamaForCausalLM(config)
    return model.to(args.device).eval()


def lm_batch(vocab: int, seq: int, batch: int, device: str) -> dict[str, torch.Tensor]:
    """Random token ids with every position a label: one forward costs what a training forward costs."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (batch, seq), generator=gen)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "labels": ids.clone().to(device)}


def count_params(model: torch.nn.Module) -> int:
    """Trainable parameters (tied weights once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def sync(device: str) -> None:
    """Wait for queued device work so that wall-clock timings are honest."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str) -> float:
    """Wall-clock seconds of one call."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def best_of_interleaved(cases: dict[str, Callable[[], object]], repeats: int, device: str) -> dict[str, float]:
    """Min time of each case over `repeats` rounds, the cases interleaved within a round so that a noisy
    neighbour on the machine slows all of them alike (ratios are measured side by side)."""
    best = {name: float("inf") for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            best[name] = min(best[name], timed(fn, device))
    return best


@torch.no_grad()
def naive_apply(params: list[torch.Tensor], seed: int, scale: float) -> None:
    """The paper-style perturbation (MeZO's reference code): reseed the global generator, then an
    out-of-place torch.normal and an out-of-place add per parameter."""
    torch.manual_seed(seed)
    for p in params:
        z = torch.normal(mean=0.0, std=1.0, size=p.size(), device=p.device, dtype=p.dtype)
        p.data = p.data + scale * z
