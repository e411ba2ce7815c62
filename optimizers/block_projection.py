"""Ferret's projection (methods/ferret.py): an update projected block by block onto bases drawn from a pool of K
shared seeds, and the model the K x L table of projected coordinates describes, theta = theta0 + sum c_{k,l} z_{k,l}.
z is this suite's Gaussian stream (optimizers/perturbation.py), E[z z^T] = I, so a reconstruction is unbiased."""
from __future__ import annotations

import numpy as np
import torch

from optimizers.perturbation import Perturbation


def ferret_blocks(sizes: list[int]) -> np.ndarray:
    """The block of each trainable tensor (in order): consecutive tensors grouped while their total stays within
    0.9 x the median tensor size; a tensor larger than that is a block of its own."""
    target = int(0.9 * float(np.median(sizes)))
    blocks, current, filled = [], 0, 0
    for size in sizes:
        if filled and filled + size > target:
            current, filled = current + 1, 0
        blocks.append(current)
        filled += size
    return np.asarray(blocks, dtype=np.int64)


def seeds_per_block(norms: np.ndarray, k: int) -> np.ndarray:
    """n_l: K for the block whose update is largest, proportionally fewer for the others, at least 2."""
    top = float(norms.max()) if norms.size else 0.0
    shares = norms / top if top > 0 else np.zeros_like(norms)
    return np.clip((shares * k).astype(np.int64), 2, k)


def project_update(pert: Perturbation, blocks: np.ndarray, deltas: list[torch.Tensor], seed_pool: np.ndarray,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Delta (one tensor per trainable parameter) projected block by block onto n_l seeds drawn from rng: the
    (seed index, block, gamma) entries, gamma rounded to float32 as it crosses the wire."""
    n_blocks = int(blocks.max()) + 1
    norms = np.zeros(n_blocks)
    for b, d in zip(blocks, deltas, strict=True):
        norms[b] += float(torch.sum(d.double() ** 2))
    counts = seeds_per_block(np.sqrt(norms), len(seed_pool))
    seeds, block_ids, gammas = [], [], []
    for b in range(n_blocks):
        chosen = np.sort(rng.choice(len(seed_pool), size=counts[b], replace=False))
        dots = sum(pert.project(i, deltas[i], seed_pool[chosen].tolist()) for i in np.flatnonzero(blocks == b))
        seeds.append(chosen)
        block_ids.append(np.full(len(chosen), b))
        gammas.append(np.asarray(dots, dtype=np.float64) / counts[b])
    return (np.concatenate(seeds), np.concatenate(block_ids),
            np.concatenate(gammas).astype(np.float32).astype(np.float64))


class BlockSeededModel:
    """A model together with the K x L table c that describes it: theta = theta0 + sum_{k,l} c_{k,l} z_{k,l}, moved
    only by whole rounds of Delta c (the same float operations wherever a copy is kept)."""

    def __init__(self, model: torch.nn.Module, seed_pool: np.ndarray, kind: str, compile: bool | None):
        self.model = model
        self.seed_pool = seed_pool
        self.pert = Perturbation(model, kind=kind, compile=compile)
        sizes = [p.numel() for _, p in self.pert.params]
        self.blocks = ferret_blocks(sizes)
        self.n_blocks = int(self.blocks.max()) + 1
        self.block_sizes = np.bincount(self.blocks, weights=sizes)
        self.c = np.zeros((len(seed_pool), self.n_blocks))
        self.round = 0  # the last round whose Delta c it holds

    def apply(self, flat_indices: np.ndarray, values: np.ndarray) -> None:
        """theta += sum Delta c_{k,l} z_{k,l} over a round's changed entries (flat index k * L + l), and c too."""
        seeds, blocks = np.divmod(np.asarray(flat_indices, dtype=np.int64), self.n_blocks)
        used = np.unique(seeds)
        table = np.zeros((len(used), self.n_blocks))
        table[np.searchsorted(used, seeds), blocks] = values
        self.pert.replay_table_(self.seed_pool[used].tolist(), table[:, self.blocks].T)
        self.c[seeds, blocks] += values
        self.round += 1
