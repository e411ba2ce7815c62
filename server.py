"""The FedKSeed server: seed pool, client sampling, per-seed aggregation, c, Pro probabilities."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from client import ClientUpdate, TrainConfig
from optimizers.mezo_bias_optimizer import GradientHistory
from optimizers.seed_pool import SeededModel, make_seed_pool

logger = logging.getLogger(__name__)


@dataclass
class ServerConfig:
    """The server's share of the run's flags."""

    num_clients: int
    client_fraction: float
    k: int
    lr: float
    eps: float
    local_step: int
    batch_or_epoch: str = "batch"
    batch_size: int = 1
    grad_clip: float = -1.0
    equal_weight: bool = False
    bias_sampling: bool = False
    bias_loss_clip: float = 1000.0
    grad_initial: float = 0.0
    perturbation: str = "gaussian"
    seed: int = 42


def aggregate(updates: list[ClientUpdate], k: int, equal_weight: bool) -> np.ndarray:
    """Delta c: per seed, the clients' scalar gradients summed, each client weighted by its data size
    (or equally), weights normalised over the round's clients."""
    sizes = np.array([1.0 if equal_weight else u.num_samples for u in updates], dtype=np.float64)
    weights = sizes / sizes.sum() if len(updates) else sizes
    delta = np.zeros(k, dtype=np.float64)
    for weight, update in zip(weights, updates, strict=True):
        np.add.at(delta, update.seed_indices, weight * update.grads)
    return delta


class Server:
    """Holds the global model as (theta0, seed pool, c) and runs the round's bookkeeping."""

    def __init__(self, model: torch.nn.Module, config: ServerConfig, compile: bool | None = None):
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        self.seed_pool = make_seed_pool(config.k, self.rng)
        self.seeded = SeededModel(model, self.seed_pool, config.lr, kind=config.perturbation, compile=compile)
        self.history = (GradientHistory(config.k, config.grad_initial, config.bias_loss_clip)
                        if config.bias_sampling else None)

    @property
    def c(self) -> np.ndarray:
        return self.seeded.c

    def select_clients(self) -> list[int]:
        """ceil(m * N) distinct clients from the server's RNG; m * N rounded first (0.07 * 100 = 7.000000000000001)."""
        n = self.config.num_clients
        count = min(n, max(1, math.ceil(round(self.config.client_fraction * n, 9))))
        return sorted(self.rng.choice(n, size=count, replace=False).tolist())

    def probabilities(self) -> np.ndarray | None:
        """The round's seed sampling probabilities (FedKSeed-Pro), or None for uniform sampling."""
        return self.history.probabilities() if self.history is not None else None

    def train_config(self, round_idx: int) -> TrainConfig:
        cfg = self.config
        return TrainConfig(round=round_idx, lr=cfg.lr, eps=cfg.eps, local_step=cfg.local_step,
                           batch_or_epoch=cfg.batch_or_epoch, batch_size=cfg.batch_size,
                           grad_clip=cfg.grad_clip, probabilities=self.probabilities())

    def apply_round(self, updates: list[ClientUpdate]) -> np.ndarray:
        """Aggregate the round's uploads into Delta c, move the global model by it, update the history."""
        delta = aggregate(updates, self.config.k, self.config.equal_weight)
        if self.history is not None:
            for update in updates:
                self.history.add(update.seed_indices, update.grads)
        self.seeded.move_to(self.c + delta)
        return delta

    def replay_rounds(self, deltas: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """Re-apply past rounds' Delta c in order: bitwise the model apply_round built."""
        self.seeded.replay_rounds(deltas)
