"""FedKSeed's local optimizer: MeZO steps whose perturbation is one seed of the server's pool."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from optimizers.perturbation import Term
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
    def steps(self, batches: Iterable[dict], loss_fn: LossFn, rng: np.random.Generator) -> Iterator[StepResult]:
        """One MeZO step per batch: +eps, loss, -2eps, loss, then restore and update (scale eps - lr*g).

        Step t's restore-and-update rides on step t+1's +eps: one pass over the weights applies both seeds, so a
        step costs two passes instead of three. The +-eps passes leave the input embedding's rows of tokens
        outside the batch alone (no loss can read them); the update gives those rows just -lr*g (Term.rest).
        While a result is handled the model still holds that step's -eps; the last restore-and-update is applied
        when the iterator is exhausted or closed.
        """
        perturb = self.seeded.perturbation.apply_
        pending: list[Term] = []  # the previous step's restore-and-update, not applied yet
        try:
            for batch in batches:
                index = self.sample_seed_index(rng)
                seed = int(self.seeded.seed_pool[index])
                tokens = batch.get("input_ids")
                rows = None  # the input embedding rows the losses read, when that embedding is row-sparse
                if tokens is not None and self.seeded.perturbation.row_sparse is not None:
                    rows = torch.unique(tokens)
                perturb([*pending, Term(seed, self.eps, rows)])
                pending = []
                loss_plus = float(loss_fn(self.seeded.model, batch))
                perturb([Term(seed, -2.0 * self.eps, rows)])
                loss_minus = float(loss_fn(self.seeded.model, batch))
                skipped = None
                if not (math.isfinite(loss_plus) and math.isfinite(loss_minus)):
                    skipped = "nan"
                elif self.grad_clip > 0 and abs(loss_plus - loss_minus) > self.grad_clip:
                    skipped = "clip"
                if skipped:
                    pending = [Term(seed, self.eps, rows)]
                    yield StepResult(index, 0.0, float("nan"), skipped)
                    continue
                grad = (loss_plus - loss_minus) / (2.0 * self.eps)
                pending = [Term(seed, self.eps - self.lr * grad, rows, rest=-self.lr * grad)]
                self.seeded.c[index] += grad
                yield StepResult(index, grad, (loss_plus + loss_minus) / 2.0)
        finally:
            perturb(pending)

    def step(self, batch: dict, loss_fn: LossFn, rng: np.random.Generator) -> StepResult:
        """A single MeZO step; the model is restored and updated when it returns."""
        [result] = self.steps([batch], loss_fn, rng)
        return result
