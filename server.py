"""The FedKSeed server: seed pool, client sampling, per-seed aggregation, c, Pro probabilities."""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from client import ClientUpdate, LocalTraining, TrainConfig
from optimizers.mezo_bias_optimizer import GradientHistory
from optimizers.seed_pool import SEED_RANGE, SeededModel, make_seed_pool
from streams import stream

logger = logging.getLogger(__name__)


@dataclass
class ServerConfig:
    """The server's share of the run's flags."""

    client_ids: tuple[int, ...]  # the clients with a usable example (others are left out of the split's ids)
    client_fraction: float
    k: int
    local: LocalTraining
    equal_weight: bool = False
    bias_sampling: bool = False
    bias_loss_clip: float = 1000.0
    grad_initial: float = 0.0
    perturbation: str = "gaussian"
    seed: int = 42
    aggregation: str = "mean"  # mean (the paper's) | median | trimmed_mean, per seed
    max_abs_grad: float = 0.0  # > 0: each uploaded g is clipped to [-max_abs_grad, max_abs_grad] before aggregation
    trim_fraction: float = 0.2  # trimmed_mean: share of a seed's contributions cut at each end


AGGREGATIONS = ("mean", "median", "trimmed_mean")


def clients_per_round(fraction: float, num_clients: int) -> int:
    """int(m * N) as the authors' main.py, but at least 1 (theirs can draw none); m * N is rounded to 9 decimals
    first, so that 0.29 * 100 = 28.999999999999996 counts 29 clients, not 28."""
    return min(num_clients, max(1, int(round(fraction * num_clients, 9))))


def sample_clients(rng: np.random.Generator, fraction: float, ids: Sequence[int]) -> list[int]:
    """A round's clients: clients_per_round distinct ids of `ids` drawn from the server's RNG, sorted. The draw is of
    positions in `ids`: a client left out (no usable example) leaves a gap in the ids, never in what can be drawn."""
    count = clients_per_round(fraction, len(ids))
    return sorted(ids[i] for i in rng.choice(len(ids), size=count, replace=False).tolist())


def client_weights(updates: list[ClientUpdate], equal_weight: bool) -> np.ndarray:
    """Each client's share of the round: its data size (or 1) over the round's total."""
    sizes = np.array([1.0 if equal_weight else u.num_samples for u in updates], dtype=np.float64)
    return sizes / sizes.sum() if len(updates) else sizes


def aggregate(updates: list[ClientUpdate], k: int, equal_weight: bool, mode: str = "mean",
              max_abs_grad: float = 0.0, trim_fraction: float = 0.2) -> np.ndarray:
    """Delta c: per seed, the clients' scalar gradients summed, each client weighted by its data size
    (or equally), weights normalised over the round's clients.

    mode median / trimmed_mean replace the weighted sum by a robust one, per seed (robust_aggregate);
    max_abs_grad > 0 first clips every uploaded g to [-max_abs_grad, max_abs_grad]."""
    if max_abs_grad > 0:
        updates = [replace(u, grads=np.clip(u.grads, -max_abs_grad, max_abs_grad)) for u in updates]
    if mode != "mean":
        return robust_aggregate(updates, k, equal_weight, mode, trim_fraction)
    delta = np.zeros(k, dtype=np.float64)
    for weight, update in zip(client_weights(updates, equal_weight), updates, strict=True):
        np.add.at(delta, update.seed_indices, weight * update.grads)
    return delta


def robust_aggregate(updates: list[ClientUpdate], k: int, equal_weight: bool, mode: str,
                     trim_fraction: float = 0.2) -> np.ndarray:
    """Per-seed median or trimmed mean over the clients that used the seed.

    Client i's contribution to seed j is x_ij = n * w_i * s_ij: s_ij the sum of its g for seed j, w_i its
    normalised weight (as in the mean), n the round's client count, so that n * w_i is 1 for equal weights
    and honest clients give comparable magnitudes. The mean's Delta c_j equals (|S_j| / n) * mean_{i in S_j}
    x_ij over the set S_j of clients that used seed j; the robust modes replace that inner mean by the
    median, or by the mean after cutting floor(trim_fraction * |S_j|) values at each end. When all users
    of a seed agree, every mode gives the mean's value; one outlier among >= 3 users of a seed (median) or
    among >= 1 / trim_fraction users (trimmed mean) cannot move Delta c_j outside the range of the honest
    contributions. A seed that only one client used keeps that client's value in every mode: bound such
    seeds with max_abs_grad.
    """
    if mode not in AGGREGATIONS:
        raise ValueError(f"aggregation {mode!r}: expected one of {', '.join(AGGREGATIONS)}")
    n = len(updates)
    delta = np.zeros(k, dtype=np.float64)
    if n == 0:
        return delta
    per_seed: dict[int, list[float]] = {}
    for weight, update in zip(client_weights(updates, equal_weight), updates, strict=True):
        sums = np.zeros(k, dtype=np.float64)
        np.add.at(sums, update.seed_indices, update.grads)
        for j in np.unique(update.seed_indices):
            per_seed.setdefault(int(j), []).append(n * weight * sums[j])
    for j, values in per_seed.items():
        x = np.sort(np.asarray(values))
        if mode == "median":
            centre = float(np.median(x))
        else:
            cut = int(math.floor(trim_fraction * len(x)))
            centre = float(x[cut:len(x) - cut].mean())
        delta[j] = len(x) / n * centre
    return delta


def validate_update(update: ClientUpdate, k: int, round_idx: int, max_pairs: int) -> str | None:
    """Why an upload must be rejected, or None when it is well-formed (the same check in every engine).

    Refused: a reply for another round, a sample count that is not a positive integer, index and gradient
    arrays of different lengths or not one-dimensional, more pairs than the round's local steps allow, a
    seed index outside [0, k) or not an integer, a non-finite g.
    """
    indices, grads = np.asarray(update.seed_indices), np.asarray(update.grads)
    if update.round != round_idx:
        return f"reply for round {update.round}, expected {round_idx}"
    if isinstance(update.num_samples, bool) or not isinstance(update.num_samples, int | np.integer):
        return f"sample count {update.num_samples!r} is not an integer"
    if update.num_samples <= 0:
        return f"sample count {update.num_samples} is not positive"
    if indices.ndim != 1 or grads.ndim != 1 or len(indices) != len(grads):
        return f"{indices.size} seed indices but {grads.size} gradients"
    if len(indices) > max_pairs:
        return f"{len(indices)} (seed, g) pairs, more than the {max_pairs} the round allows"
    if not np.issubdtype(indices.dtype, np.integer):
        return f"seed indices of dtype {indices.dtype}"
    if len(indices) and (indices.min() < 0 or indices.max() >= k):
        return f"seed index outside [0, {k})"
    if not np.issubdtype(grads.dtype, np.floating):
        return f"gradients of dtype {grads.dtype}"
    if not np.all(np.isfinite(grads)):
        return "non-finite scalar gradient"
    return None


def state_bytes(k: int, rounds: int, pairs_per_round: int) -> int:
    """A generous bound on the memory the seed state of a run takes: the seed pool (and the temporary of drawing
    it), c and its copies and replay temporaries, the Pro history and probabilities, and the Delta c record of
    every round (an int32 index and a float64 value per changed seed)."""
    per_seed = 256  # ~10 float64/int64 arrays of length K plus the Python floats of one full replay
    draw = 8 * SEED_RANGE if k > SEED_RANGE // 50 else 32 * k  # numpy draws a large share by a full permutation
    return per_seed * k + draw + 12 * rounds * min(k, pairs_per_round)


class Server:
    """Holds the global model as (theta0, seed pool, c) and runs the round's bookkeeping."""

    def __init__(self, model: torch.nn.Module, config: ServerConfig, compile: bool | None = None):
        self.config = config
        self.rng = stream(config.seed, "server")
        self.seed_pool = make_seed_pool(config.k, self.rng)
        self.seeded = SeededModel(model, self.seed_pool, config.local.lr, kind=config.perturbation, compile=compile)
        # the global c, apart from the model's own: in-process clients may train on the server's model (--client_sync
        # replay), moving it and its c away from the global state until apply_round brings it back
        self.c = np.zeros(config.k, dtype=np.float64)
        self.history = (GradientHistory(config.k, config.grad_initial, config.bias_loss_clip)
                        if config.bias_sampling else None)

    def select_clients(self) -> list[int]:
        """The round's clients (sample_clients on the server's RNG)."""
        return sample_clients(self.rng, self.config.client_fraction, self.config.client_ids)

    def probabilities(self) -> np.ndarray | None:
        """The round's seed sampling probabilities (FedKSeed-Pro), or None for uniform sampling."""
        return self.history.probabilities() if self.history is not None else None

    def train_config(self, round_idx: int) -> TrainConfig:
        return TrainConfig(round=round_idx, local=self.config.local, probabilities=self.probabilities())

    def apply_round(self, updates: list[ClientUpdate]) -> np.ndarray:
        """Aggregate the round's uploads into Delta c, move the global model by it, update the history."""
        cfg = self.config
        delta = aggregate(updates, cfg.k, cfg.equal_weight, cfg.aggregation, cfg.max_abs_grad, cfg.trim_fraction)
        if self.history is not None:
            for update in updates:
                self.history.add(update.seed_indices, update.grads)
        self.c = self.c + delta
        self.seeded.move_to(self.c)
        return delta

    def max_pairs(self, num_samples: int) -> int:
        """The most (seed, g) pairs an honest client can upload in a round."""
        local = self.config.local
        if local.batch_or_epoch == "epoch":
            return local.local_step * max(1, math.ceil(int(num_samples) / local.batch_size))
        return local.local_step

    def accept(self, updates: list[ClientUpdate], round_idx: int) -> list[ClientUpdate]:
        """The well-formed uploads of the round (validate_update); each rejected one is logged and dropped."""
        kept = []
        for update in updates:
            try:
                reason = validate_update(update, self.config.k, round_idx, self.max_pairs(update.num_samples))
            except (TypeError, ValueError) as exc:
                reason = f"malformed upload ({exc.__class__.__name__})"
            if reason is None:
                kept.append(update)
            else:
                logger.warning("round %d: rejected the upload of client %s: %s", round_idx, update.client_id, reason)
        return kept

    def replay_rounds(self, deltas: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """Re-apply past rounds' Delta c in order: bitwise the model apply_round built."""
        self.seeded.replay_rounds(deltas)
        self.c = self.seeded.c.copy()
