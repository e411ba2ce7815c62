"""FedKSeed's local optimizer: MeZO steps whose perturbation is one seed of the server's pool."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from optimizers.seed_pool import SeededModel

LossFn = Callable[[torch.nn.Module, dict], torch.Tensor]


@dataclass
class StepResult:
    """One MeZO step: the seed index used, its scalar gradient, the mean of the two losses."""

    seed_index: int
    grad: float
    loss: float
    skipped: str | None = None  # "nan" (a non-finite loss) or "clip" (|L+ - L-| over --grad_clip)


class MeZOOptimizer:
    """Zeroth-order SGD with two-point estimates; seeds chosen uniformly from the pool (FedKSeed)."""

    def __init__(self, seeded: SeededModel, lr: float, eps: float, grad_clip: float = -1.0):
        self.seeded = seeded
        self.lr = lr
        self.eps = eps
        self.grad_clip = grad_clip

    def sample_seed_index(self, rng: np.random.Generator) -> int:
        """A uniform choice among the K candidate seeds."""
        return int(rng.integers(len(self.seeded.seed_pool)))

    @torch.no_grad()
    def step(self, batch: dict, loss_fn: LossFn, rng: np.random.Generator) -> StepResult:
        """Perturb +eps, loss, -2eps, loss, then restore and update in one pass (eps - lr*g).

        The +-eps passes leave the input embedding's rows of tokens outside the batch alone (the losses cannot
        see them); the last pass gives those rows just their update, -lr*g.
        """
        index = self.sample_seed_index(rng)
        seed = int(self.seeded.seed_pool[index])
        tokens = batch.get("input_ids")

        def perturb(scale: float, rest: float = 0.0) -> None:
            self.seeded.perturbation.perturb_(seed, scale, tokens, rest)

        perturb(self.eps)
        loss_plus = float(loss_fn(self.seeded.model, batch))
        perturb(-2.0 * self.eps)
        loss_minus = float(loss_fn(self.seeded.model, batch))
        skipped = None
        if not (math.isfinite(loss_plus) and math.isfinite(loss_minus)):
            skipped = "nan"
        elif self.grad_clip > 0 and abs(loss_plus - loss_minus) > self.grad_clip:
            skipped = "clip"
        if skipped:
            perturb(self.eps)
            return StepResult(index, 0.0, float("nan"), skipped)
        grad = (loss_plus - loss_minus) / (2.0 * self.eps)
        perturb(self.eps - self.lr * grad, rest=-self.lr * grad)
        self.seeded.c[index] += grad
        return StepResult(index, grad, (loss_plus + loss_minus) / 2.0)
