"""Which weight dtype is fastest on this machine: a forward pass and a FedKSeed step of the same model in float32,
bfloat16 and float16, side by side in one process (interleaved, best of --repeats), as ratios to float32.

    python bench/dtype_speed.py                        # the 58.5M LLaMA-shape bench model, seq 256
    python bench/dtype_speed.py --hidden 1024 --layers 12

`--dtype auto` picks the dtype this shows fastest on the device (config/model.py: float32 on CPU, float16 on CUDA as the
paper's runs).
"""
from __future__ import annotations

import argparse
import copy

import numpy as np
import torch
from common import add_model_flags, apply_threads, bench_model, best_of_interleaved, lm_batch

from modeling import DTYPES, lm_loss
from optimizers.mezo_optimizer import MeZOOptimizer
from optimizers.seed_pool import SeededModel, make_seed_pool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(parser)
    parser.add_argument("--repeats", type=int, default=3, help="the first round also compiles the z kernels")
    parser.add_argument("-K", type=int, default=1024, help="nonzero entries of c when the server syncs")
    parser.add_argument("--changed", type=int, default=200, help="entries of c a round changes (4 clients x 50 "
                        "steps: the quality-cost study's round)")
    args = parser.parse_args()
    apply_threads(args)
    base = bench_model(args)
    batch = lm_batch(args.vocab, args.seq, args.batch, args.device)
    pool, rng = make_seed_pool(16, np.random.default_rng(0)), np.random.default_rng(1)
    forwards, steps = {}, {}
    for name, dtype in DTYPES.items():
        model = copy.deepcopy(base).to(dtype)
        optimizer = MeZOOptimizer(SeededModel(model, pool, 1e-7), lr=1e-7, eps=1e-3)  # each dtype's default z path
        forwards[name] = lambda m=model: torch.inference_mode()(lm_loss)(m, batch)
        steps[name] = lambda o=optimizer: o.step(batch, lm_loss, rng)
    forward = best_of_interleaved(forwards, args.repeats, args.device)
    step = best_of_interleaved(steps, args.repeats, args.device)
    # float16 is CUDA's: on this CPU its rebuild goes through the compiled kernels, minutes at K 1024
    syncs = {name: server_sync(base, dtype, args.K, args.changed) for name, dtype in DTYPES.items()
             if name != "float16" or args.device != "cpu"}
    sync = best_of_interleaved(syncs, args.repeats, args.device)
    print(f"{sum(p.numel() for p in base.parameters()) / 1e6:.1f}M parameters, seq {args.seq}, "
          f"{torch.get_num_threads()} threads, {args.device}")
    print(f"server sync: c with {args.K} nonzero entries moved by a round that changes {args.changed} of them")
    print("| dtype | forward (s) | x float32 | FedKSeed step (s) | x float32 | server sync (s) | x float32 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in DTYPES:
        synced = f"{sync[name]:.2f} | {sync[name] / sync['float32']:.2f}" if name in sync else "- | -"
        print(f"| {name} | {forward[name]:.3f} | {forward[name] / forward['float32']:.2f} | {step[name]:.3f} | "
              f"{step[name] / step['float32']:.2f} | {synced} |")


def server_sync(base: torch.nn.Module, dtype: torch.dtype, k: int, changed: int):
    """One server update of a round in this dtype: float32 replays the entries of c that changed; a half-precision
    model is rebuilt from theta0 with every nonzero entry (SeededModel.move_to)."""
    seeded = SeededModel(copy.deepcopy(base).to(dtype), make_seed_pool(k, np.random.default_rng(2)), 1e-7)
    rng = np.random.default_rng(3)
    before = rng.normal(size=k)
    seeded.move_to(before)
    after = before.copy()
    after[rng.choice(k, changed, replace=False)] += rng.normal(size=changed)
    # each call moves to the other of two c that differ in `changed` entries: a round's sync
    return lambda: seeded.move_to(after if np.array_equal(seeded.c, before) else before)


if __name__ == "__main__":
    main()
