"""FedKSeed-Pro: seeds whose scalar gradients have larger mean magnitude are sampled more often."""
from __future__ import annotations

import numpy as np

from optimizers.mezo_optimizer import MeZOOptimizer
from optimizers.seed_pool import SeededModel


def pro_probabilities(abs_grad_sum: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """softmax(min-max-normalise(mean |clipped g| per seed)), the paper's seed importance."""
    importance = abs_grad_sum / counts
    span = importance.max() - importance.min()
    normalised = (importance - importance.min()) / span if span > 0 else np.zeros_like(importance)
    weights = np.exp(normalised - normalised.max())
    return weights / weights.sum()


class GradientHistory:
    """The server's per-seed history of uploaded scalar gradients, kept as clipped |g| sums and counts.

    The mean of |clip(g, +-clip)| over a seed's history is all the Pro formula reads, so a running sum
    and count hold the history exactly without growing with the rounds. Each seed starts with one entry,
    grad_initial, as in the paper.
    """

    def __init__(self, k: int, grad_initial: float, clip: float):
        self.clip = clip
        self.abs_sum = np.full(k, min(abs(grad_initial), clip), dtype=np.float64)
        self.counts = np.ones(k, dtype=np.int64)

    def add(self, seed_indices: np.ndarray, grads: np.ndarray) -> None:
        """Append a client's uploaded (seed index, g) pairs."""
        np.add.at(self.abs_sum, seed_indices, np.minimum(np.abs(grads), self.clip))
        np.add.at(self.counts, seed_indices, 1)

    def probabilities(self) -> np.ndarray:
        return pro_probabilities(self.abs_sum, self.counts)


class MeZOBiasOptimizer(MeZOOptimizer):
    """MeZO steps whose seed is drawn by the server's Pro probabilities."""

    def __init__(self, seeded: SeededModel, lr: float, eps: float, grad_clip: float,
                 probabilities: np.ndarray):
        super().__init__(seeded, lr, eps, grad_clip)
        if len(probabilities) != len(seeded.seed_pool):
            raise ValueError(f"{len(probabilities)} probabilities for {len(seeded.seed_pool)} seeds")
        self.probabilities = probabilities

    def sample_seed_index(self, rng: np.random.Generator) -> int:
        return int(rng.choice(len(self.probabilities), p=self.probabilities))
