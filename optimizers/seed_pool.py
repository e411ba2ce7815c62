"""The seed pool and the model it describes: theta = theta0 - lr * sum_j c_j * z(seed_j)."""
from __future__ import annotations

import numpy as np
import torch

from optimizers.perturbation import Perturbation

SEED_RANGE = 2**31  # seeds are non-negative int32 values, so every language and device can hold them


def make_seed_pool(k: int, rng: np.random.Generator) -> np.ndarray:
    """K distinct seeds drawn from the run's RNG: the server's candidate perturbations."""
    return np.sort(rng.choice(SEED_RANGE, size=k, replace=False)).astype(np.int64)


class SeededModel:
    """A model copy together with the coefficient vector c that describes it exactly.

    Every change to the weights goes through c: a local MeZO update of seed j by g is `c[j] += g`, and
    catching up with another coefficient vector replays only the difference (the paper's mechanism for
    clients that missed rounds).
    """

    def __init__(self, model: torch.nn.Module, seed_pool: np.ndarray, lr: float,
                 kind: str = "gaussian", compile: bool | None = None):
        self.model = model
        self.seed_pool = seed_pool
        self.lr = lr
        self.c = np.zeros(len(seed_pool), dtype=np.float64)
        self.perturbation = Perturbation(model, kind=kind, compile=compile)

    def move_to(self, target_c: np.ndarray) -> int:
        """Replay target_c - c onto the weights; returns how many seeds were replayed."""
        delta = np.asarray(target_c, dtype=np.float64) - self.c
        changed = np.flatnonzero(delta)
        self.perturbation.replay_(self.seed_pool[changed].tolist(), (-self.lr * delta[changed]).tolist())
        self.c = np.array(target_c, dtype=np.float64)
        return len(changed)

    def replay_rounds(self, deltas: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """Apply rounds' sparse Delta c (indices, values) in order, each as the server's move_to(c + delta)."""
        for indices, values in deltas:
            delta = np.zeros(len(self.seed_pool), dtype=np.float64)
            delta[indices] = values
            self.move_to(self.c + delta)

    @torch.no_grad()
    def copy_from(self, other: SeededModel) -> None:
        """Take another copy's weights and c by a plain tensor copy (the in-process fast path)."""
        for (_, mine), (_, theirs) in zip(self.perturbation.params, other.perturbation.params, strict=True):
            mine.copy_(theirs)
        self.c = other.c.copy()


def materialise(model: torch.nn.Module, seed_pool: np.ndarray, c: np.ndarray, lr: float,
                kind: str = "gaussian") -> torch.nn.Module:
    """theta0 - lr * sum_j c_j z_j applied from scratch onto a model holding theta0."""
    fresh = SeededModel(model, seed_pool, lr, kind=kind)
    fresh.move_to(c)
    return model
