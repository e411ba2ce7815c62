"""Where the Gaussian step's time goes: the parts of one fused z pass, timed side by side against the budget.

    python bench/gaussian_floor.py            # the 58.5M LLaMA-shape bench model; --device cuda etc. as elsewhere

step/(2*forward) <= 1.5 leaves a step's z work one forward's time. A step of a local run makes two passes:
step t-1's restore-and-update with step t's +eps (two seeds; the +eps skips the input embedding) and step t's
-2eps (one seed, embedding skipped). This prints the cost of a fused one-seed pass over all trainable
parameters (the project's packed kernel), of the same kernel with parts removed, of the two-seed pass and of
a plain float32 pass, then the step's z work they imply against the budget:
    float add            flat += c over the float32 parameter: the memory traffic every pass pays
    memory only          the packed kernel's load / int64 pack / store, z = a cast of the counter
    hash only            the packed kernel with the three lowbias32 rounds, no log/sqrt/sin/cos
    transcendentals only the packed kernel with log, sqrt, sin and cos of every pair, no hash
    full                 the torch.compile Gaussian pass (what CUDA runs)
    full, two seeds      the folded pass: two seeds' pairs added in one pass over the weights
    native, one seed     the same pass by optimizers/z_native_source.py (the CPU default), one call for all tensors
    native, two seeds    the folded pass by the native kernel
"memory only" minus "float add" is what the int64 packing (one loop iteration owning a pair) costs.
"""
from __future__ import annotations

import argparse
import math
from functools import partial

import numpy as np
import torch
from common import add_model_flags, apply_threads, bench_model, best_of_interleaved, lm_batch

from modeling import lm_loss
from optimizers import z_kernels, zstream
from optimizers.perturbation import Perturbation
from optimizers.z_native import NativePass, library

TARGET = 1.5


def counter_only(pair: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    u = (pair + keys[..., 0]).to(torch.float32)
    return u, u


def hash_only(pair: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    w1 = zstream._mix32(zstream._mix32(pair + keys[..., 0]) ^ keys[..., 1])
    w2 = zstream._mix32(w1 ^ keys[..., 2])
    return w1.to(torch.float32), w2.to(torch.float32)


def transcendentals_only(pair: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    u = ((pair + keys[..., 0]) & 0xFFFFFF).to(torch.float32) * 2.0**-24 + 2.0**-25
    radius = torch.sqrt(-2.0 * torch.log(u))
    angle = u * (2.0 * math.pi)
    return radius * torch.cos(angle), radius * torch.sin(angle)


def float_add_(flat: torch.Tensor, coefs: torch.Tensor) -> None:
    flat.copy_(flat + coefs[0])


PARTS = {"memory only": counter_only, "hash only": hash_only, "transcendentals only": transcendentals_only,
         "full": zstream.gaussian_pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(parser)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    apply_threads(args)
    model = bench_model(args)
    batch = lm_batch(args.vocab, args.seq, args.batch, args.device)
    views = [p.detach().view(-1).view(torch.int64) for p in model.parameters() if p.numel() % 2 == 0]
    n = 2 * sum(v.numel() for v in views)
    sparse = Perturbation(model).row_sparse
    embedding = dict(model.named_parameters())[sparse].numel() if sparse else 0
    keys = torch.tensor([[12345, 67890, 13579]], dtype=torch.int32, device=args.device)
    two_keys = torch.tensor([[12345, 67890, 13579], [2468, 1357, 97531]], dtype=torch.int32, device=args.device)
    two_coefs = torch.tensor([1e-3, -2e-3], dtype=torch.float32, device=args.device)
    coefs = torch.tensor([1e-3], dtype=torch.float32, device=args.device)
    start = torch.zeros((), dtype=torch.int32, device=args.device)
    opts = {"cpp.dynamic_threads": True} if args.device == "cpu" else {}
    kernels = {name: torch.compile(partial(z_kernels._gaussian_packed_, pair_fn=fn), dynamic=True, options=opts)
               for name, fn in PARTS.items()}

    def one_pass(kernel):
        for view in views:
            kernel(view, start, keys, coefs)

    two_seeds = torch.compile(z_kernels._gaussian_few_, dynamic=True, options=opts)

    def two_seed_pass():
        for view in views:
            two_seeds(view, start, two_keys, two_coefs)

    def forward():
        with torch.no_grad():
            return float(lm_loss(model, batch))

    float_add = torch.compile(float_add_, dynamic=True, options=opts)
    flats = [v.view(torch.float32) for v in views]

    def float_pass():
        for flat in flats:
            float_add(flat, coefs)

    cases = {"forward": forward, "float add": float_pass, **{name: partial(one_pass, k) for name, k in kernels.items()},
             "full, two seeds": two_seed_pass}
    lib = library() if args.device == "cpu" else None
    if lib is not None:
        native = NativePass(lib, flats, "gaussian")
        for label, k, c in (("native, one seed", keys, coefs), ("native, two seeds", two_keys, two_coefs)):
            table = np.broadcast_to(k.cpu().numpy(), (len(flats), *k.shape))
            cases[label] = partial(native, table, np.broadcast_to(c.cpu().numpy(), (len(flats), len(c))))
    for fn in cases.values():  # compile and warm up outside the timing
        fn()
    best = best_of_interleaved(cases, args.repeats, args.device)
    budget = 2 * best["forward"] * (TARGET - 1.0)
    print(f"{n / 1e6:.1f}M parameters in {len(views)} tensors (input embedding {embedding / 1e6:.1f}M); forward "
          f"{best['forward']:.3f} s; {torch.get_num_threads()} threads, device {args.device}")
    print(f"{'pass over every parameter':<28}{'ms':>8}{'ns/element':>12}")
    for name in best:
        if name != "forward":
            print(f"{name:<28}{best[name] * 1e3:8.1f}{best[name] / n * 1e9:12.3f}")
    dense = (n - embedding) / n
    print(f"a step's z work (two-seed pass without the embedding + one-seed pass over it + one-seed pass without "
          f"it); budget at step/(2*forward) <= {TARGET}: {budget * 1e3:.1f} ms")
    for label, one, two in (("torch.compile", "full", "full, two seeds"),
                            ("native", "native, one seed", "native, two seeds")):
        if two in best:
            step = best[two] * dense + best[one] * (1 - dense) + best[one] * dense
            print(f"  {label:<14}{step * 1e3:8.1f} ms = {step / budget:.2f}x the budget")


if __name__ == "__main__":
    main()
