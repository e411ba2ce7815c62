"""A Ferret round against a FedKSeed round on the same model, side by side: a client's local work (Ferret: SGD
steps, then the projection of its update; FedKSeed: MeZO steps) and the server's update of the global model from
one client's upload, plus the projection done as the reference code does it (torch.manual_seed and a truncated
normal basis regenerated per seed and block) against this suite's native one-pass projection.

    python bench/ferret_round.py [--steps 10 -K 200 --hidden 512 ...]
"""
from __future__ import annotations

import argparse
import copy

import numpy as np
import torch
from common import add_model_flags, apply_threads, bench_model, best_of_interleaved, count_params, lm_batch

from methods.first_order import local_train
from modeling import lm_loss
from optimizers.block_projection import BlockSeededModel, project_update
from optimizers.mezo_optimizer import MeZOOptimizer
from optimizers.seed_pool import SeededModel, make_seed_pool
from streams import stream


@torch.no_grad()
def reference_projection(seeded: BlockSeededModel, deltas: list[torch.Tensor], counts: np.ndarray) -> None:
    """The reference code's projection: per block, for each chosen seed, reseed torch and draw a truncated normal
    basis over the whole block, then one dot product."""
    params = seeded.pert.params
    for b in range(seeded.n_blocks):
        members = [i for i in range(len(params)) if seeded.blocks[i] == b]
        flat = torch.cat([deltas[i].flatten() for i in members])
        bound = flat.numel() ** -0.5
        for seed in seeded.seed_pool[: counts[b]]:
            torch.manual_seed(int(seed))
            base = torch.nn.init.trunc_normal_(torch.empty_like(flat), mean=0.0, std=1.0, a=-bound, b=bound)
            float(torch.dot(flat, base))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(parser)
    parser.add_argument("--steps", type=int, default=10, help="local steps of a client's round")
    parser.add_argument("-K", type=int, default=200, help="seed pool (Ferret's reference run: 200)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    apply_threads(args)
    model = bench_model(args)
    batch = lm_batch(args.vocab, args.seq, args.batch, args.device)
    pool = make_seed_pool(args.K, stream(0, "server"))

    zo = SeededModel(copy.deepcopy(model), pool, 1e-6)
    ferret = BlockSeededModel(model, pool, "gaussian", None)
    for p in model.parameters():
        p.requires_grad_(True)
    work = copy.deepcopy(model)
    deltas = [1e-4 * torch.randn_like(p) for _, p in ferret.pert.params]
    upload = {}

    def fedkseed_client():
        rng = np.random.default_rng(0)
        for _ in MeZOOptimizer(zo, 1e-6, 1e-3).steps([batch] * args.steps, lm_loss, rng):
            pass

    def fedkseed_server():
        delta = np.zeros(args.K)
        delta[np.random.default_rng(1).choice(args.K, args.steps, replace=False)] = 1e-3
        zo.move_to(zo.c + delta)

    def ferret_train():
        local_train(work, [batch] * args.steps, 1e-5, 0.0, optimizer="sgd")

    def ferret_project():
        upload["entries"] = project_update(ferret.pert, ferret.blocks, deltas, pool, stream(0, "ferret", 1, 0))

    def ferret_server():
        seeds, blocks, gammas = upload["entries"]
        ferret.apply(seeds * ferret.n_blocks + blocks, -1e-3 * gammas)

    ferret_project()  # the entries the server case applies, and the native kernel built before timing
    counts = np.bincount(upload["entries"][1], minlength=ferret.n_blocks)
    cases = {"fedkseed client": fedkseed_client, "fedkseed server": fedkseed_server, "ferret SGD steps": ferret_train,
             "ferret projection": ferret_project, "ferret server": ferret_server,
             "projection, reference style": lambda: reference_projection(ferret, deltas, counts)}
    best = best_of_interleaved(cases, args.repeats, args.device)
    entries = len(upload["entries"][0])
    print(f"model {count_params(model) / 1e6:.1f}M parameters, {ferret.n_blocks} blocks, K {args.K}, "
          f"{args.steps} local steps, seq {args.seq}; one client's upload: {entries} (seed, block, gamma) entries "
          f"({12 * entries} B), {entries / ferret.n_blocks:.0f} seeds a block on average")
    for name, seconds in best.items():
        print(f"  {name:30s} {seconds:8.3f} s")
    ferret_client = best["ferret SGD steps"] + best["ferret projection"]
    print(f"ferret client / fedkseed client: {ferret_client / best['fedkseed client']:.2f} "
          f"(projection {best['ferret projection'] / ferret_client:.0%} of it)")
    print(f"ferret server / fedkseed server: {best['ferret server'] / best['fedkseed server']:.2f}")
    print(f"projection, reference style / this suite: "
          f"{best['projection, reference style'] / best['ferret projection']:.2f}")


if __name__ == "__main__":
    main()
