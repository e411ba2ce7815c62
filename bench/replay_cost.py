"""Server replay of a round's Delta c (K nonzero coefficients): the paper's style against the project's.

    python bench/replay_cost.py                       # 58.5M LLaMA-shape model, K = 1024
    python bench/replay_cost.py --device cuda --naive-seeds 64 --project-seeds 1024

Naive: for every seed, reseed torch's generator and add an out-of-place torch.normal per parameter (one
full z pass per seed). Project: Perturbation.replay_, which folds up to 64 seeds into one pass over each
cache-sized block. Both cost time linear in the number of seeds, so by default each is timed on a subset
of the K seeds and scaled to K (printed); pass --naive-seeds K --project-seeds K to time all of them.
FedKSeed-Pro's server replays the same way; what it adds (its gradient history updated with a round's uploaded
pairs, the next round's probabilities) is timed apart and printed against the replay.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import (
    KERNELS,
    add_kernel_flag,
    add_model_flags,
    apply_threads,
    bench_model,
    count_params,
    naive_apply,
    timed,
)

from optimizers.mezo_bias_optimizer import GradientHistory
from optimizers.perturbation import Perturbation
from optimizers.seed_pool import make_seed_pool

LR = 1e-7


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(parser)
    parser.add_argument("-K", type=int, default=1024, help="nonzero entries of Delta c to replay")
    parser.add_argument("--naive-seeds", type=int, default=8, help="seeds timed for the naive replay")
    parser.add_argument("--project-seeds", type=int, default=128, help="seeds timed for the project's replay")
    parser.add_argument("--repeats", type=int, default=2, help="rounds; each figure is the min over them")
    parser.add_argument("--kind", default="gaussian", choices=("gaussian", "rademacher"))
    parser.add_argument("--pro-pairs", type=int, default=2000,
                        help="a round's uploaded (seed, g) pairs for Pro's history (the paper's: 10 clients x 200)")
    add_kernel_flag(parser)
    args = parser.parse_args()
    apply_threads(args)
    model = bench_model(args)
    n = count_params(model)
    params = [p for p in model.parameters() if p.requires_grad]
    seeds = make_seed_pool(args.K, np.random.default_rng(0)).tolist()
    delta = np.random.default_rng(1).normal(size=args.K)
    coefs = (-LR * delta).tolist()
    naive_k, project_k = min(args.naive_seeds, args.K), min(args.project_seeds, args.K)
    print(f"{n / 1e6:.1f}M parameters, K = {args.K} nonzero Delta c, {args.kind}, device {args.device}, "
          f"{torch.get_num_threads()} threads, {args.kernels} z kernels")

    perturbation = Perturbation(model, kind=args.kind, compile=KERNELS[args.kernels])
    start = time.perf_counter()
    perturbation.replay_(seeds[:2], coefs[:2])  # builds the many-seed kernel once per process
    print(f"first replay call (includes building the kernels once per process): {time.perf_counter() - start:.1f} s")

    def naive() -> None:
        for seed, coef in zip(seeds[:naive_k], coefs[:naive_k], strict=True):
            naive_apply(params, seed, coef)

    def project() -> None:
        perturbation.replay_(seeds[:project_k], coefs[:project_k])

    best_naive = best_project = float("inf")
    for _ in range(args.repeats):  # interleaved, so that load from elsewhere hits both alike
        best_naive = min(best_naive, timed(naive, args.device))
        best_project = min(best_project, timed(project, args.device))
    naive_total = best_naive / naive_k * args.K
    project_total = best_project / project_k * args.K
    scaled = " (scaled linearly)" if naive_k < args.K or project_k < args.K else ""
    print(f"naive:   {naive_k} seeds in {best_naive:.2f} s -> K={args.K}: {naive_total:.1f} s{scaled}"
          f"  ({best_naive / naive_k / n * 1e9:.2f} ns per element and seed)")
    print(f"project: {project_k} seeds in {best_project:.2f} s -> K={args.K}: {project_total:.1f} s{scaled}"
          f"  ({best_project / project_k / n * 1e9:.2f} ns per element and seed)")
    print(f"naive/project: {naive_total / project_total:.2f}x")
    pro = pro_extras(args.K, args.pro_pairs)
    print(f"FedKSeed-Pro's server extras (history + {args.pro_pairs} pairs, probabilities at K={args.K}): "
          f"{pro * 1e3:.2f} ms, {pro / project_total:.1e} of the replay")


def pro_extras(k: int, pairs: int) -> float:
    """Seconds (best of 5) for what Pro's server adds to a round: the history takes the round's pairs, then the
    next round's probabilities."""
    rng = np.random.default_rng(2)
    indices, grads = rng.integers(0, k, pairs), rng.normal(size=pairs)
    history = GradientHistory(k, 0.0, 1000.0)

    def extras() -> None:
        history.add(indices, grads)
        history.probabilities()

    return min(timed(extras, "cpu") for _ in range(5))


if __name__ == "__main__":
    main()
