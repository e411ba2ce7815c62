"""Peak memory of local training against plain inference: is MeZO with seeded z really at inference level?

    python bench/memory.py                  # 58.5M LLaMA-shape model, 20 steps / 20 forwards
    python bench/memory.py --hidden 1024 --layers 12 --steps 10

Each mode runs in a fresh subprocess so that every peak is its own (peak RSS from the standard library's
resource.getrusage). All children do the same warm-up (build the model, one forward, compile the z
kernels on a small model), so the compiler's own memory is in every figure and the ratio shows what the
steps themselves add. Modes: forward (20 plain forwards), project (20 MeZO steps through MeZOOptimizer,
Gaussian; also Rademacher), naive (20 paper-style steps: out-of-place torch.normal per parameter), and the
methods side by side: fedkseed-lora (MeZO on LoRA adapters, r 8 on q_proj and v_proj), fedit (AdamW on those
adapters) and fedavg (AdamW on every weight), each 20 steps through methods/ as a client runs them.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import numpy as np
import torch
from common import add_model_flags, apply_threads, bench_model, lm_batch
from step_cost import naive_step

import config
from methods.first_order import local_train, with_lora
from modeling import lm_loss
from optimizers.mezo_optimizer import MeZOOptimizer
from optimizers.seed_pool import SeededModel, make_seed_pool

MODES = ("forward", "project-gaussian", "project-rademacher", "naive", "fedkseed-lora", "fedit", "fedavg")
LORA = config.recorded({"lora_dropout": 0.0, "seed": 0})
LR, EPS = 1e-7, 1e-3


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def warm_up(args: argparse.Namespace) -> None:
    """Load the z kernels' compiler and compile them on a tiny model: identical in every child."""
    tiny = torch.nn.Linear(64, 64).to(args.device)
    for kind in ("gaussian", "rademacher"):
        SeededModel(tiny, make_seed_pool(4, np.random.default_rng(0)), LR, kind=kind).perturbation.perturb_(1, EPS)


def child(args: argparse.Namespace) -> None:
    """Run one mode and print its peak RSS as JSON."""
    apply_threads(args)
    model = bench_model(args)
    batch = lm_batch(args.vocab, args.seq, args.batch, args.device)
    with torch.no_grad():
        lm_loss(model, batch)
    warm_up(args)
    before = peak_rss_mb()
    rng = np.random.default_rng(0)
    if args.child == "forward":
        for _ in range(args.steps):
            with torch.no_grad():
                lm_loss(model, batch)
    elif args.child == "naive":
        for step in range(args.naive_steps):
            naive_step(model, batch, step)
    elif args.child in ("fedit", "fedavg"):
        model = with_lora(model, LORA) if args.child == "fedit" else model.requires_grad_(True)
        local_train(model, [batch] * args.steps, lr=1e-5, weight_decay=0.0)
    else:
        kind = "gaussian" if args.child == "fedkseed-lora" else args.child.split("-")[1]
        if args.child == "fedkseed-lora":
            model = with_lora(model, LORA)
        seeded = SeededModel(model, make_seed_pool(1024, np.random.default_rng(0)), LR, kind=kind)
        optimizer = MeZOOptimizer(seeded, LR, EPS)
        for _ in range(args.steps):
            optimizer.step(batch, lm_loss, rng)
    print(json.dumps({"mode": args.child, "peak_mb": peak_rss_mb(), "before_mb": before}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(parser)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--naive-steps", type=int, default=3,
                        help="paper-style steps (its peak comes in the first step; each is slow)")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.device != "cpu":
        print("note: peak RSS is host memory; on a GPU compare torch.cuda.max_memory_allocated instead")
    peaks = {}
    for mode in MODES:
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--child", mode], check=True,
                             capture_output=True, text=True).stdout
        peaks[mode] = json.loads(out.strip().splitlines()[-1])
    base = peaks["forward"]["peak_mb"]
    print(f"{'mode':<20}{'peak RSS MiB':>14}{'/ forward':>11}")
    for mode, info in peaks.items():
        print(f"{mode:<20}{info['peak_mb']:14.1f}{info['peak_mb'] / base:11.3f}")
    print(f"target: project <= 1.05 x forward ({args.steps} steps vs {args.steps} forwards, "
          f"naive: {args.naive_steps} steps; separate processes); fedavg: AdamW keeps gradients and two moments "
          "of every weight")


if __name__ == "__main__":
    main()
