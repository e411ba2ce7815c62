"""A FedKSeed client: catch up with the global coefficients, run local MeZO steps, upload (index, g)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from torch.utils.data import Dataset

from modeling import lm_loss
from optimizers.mezo_bias_optimizer import MeZOBiasOptimizer
from optimizers.mezo_optimizer import MeZOOptimizer
from optimizers.seed_pool import SeededModel
from streams import stream
from utils_data.llm_dataset import collate_right_pad


@dataclass(frozen=True)
class LocalTraining:
    """The run's local-training flags: how every client trains, every round."""

    lr: float
    eps: float
    local_step: int
    batch_or_epoch: str = "batch"
    batch_size: int = 1
    grad_clip: float = -1.0


@dataclass
class TrainConfig:
    """What the server tells a client to do in a round."""

    round: int
    local: LocalTraining
    probabilities: np.ndarray | None = None  # FedKSeed-Pro; None = uniform seeds


@dataclass
class ClientUpdate:
    """The upload: one (seed index, scalar gradient) pair per applied step, and the sample count."""

    client_id: int
    round: int
    seed_indices: np.ndarray
    grads: np.ndarray
    num_samples: int
    mean_loss: float = float("nan")
    skipped: dict[str, int] = field(default_factory=dict)


def client_rng(run_seed: int, round_idx: int, client_id: int) -> np.random.Generator:
    """The RNG of one client in one round: the same wherever the client runs."""
    return stream(run_seed, "client", round_idx, client_id)


class Client:
    """One client's data and its local training loop."""

    def __init__(self, client_id: int, dataset: Dataset, pad_id: int, run_seed: int):
        self.client_id = client_id
        self.dataset = dataset
        self.pad_id = pad_id
        self.run_seed = run_seed

    def __len__(self) -> int:
        return len(self.dataset)

    def batches(self, config: LocalTraining, rng: np.random.Generator):
        """Batches in a fresh random order, cycling: local_step of them, or local_step epochs (local_step times the
        number of batches) with --batch_or_epoch epoch, as the authors' client."""
        size = config.batch_size
        order = rng.permutation(len(self.dataset))
        starts = range(0, len(order), size)
        count = config.local_step * (len(starts) if config.batch_or_epoch == "epoch" else 1)
        for i in range(count):
            if i and i % len(starts) == 0:
                order = rng.permutation(len(self.dataset))
            first = starts[i % len(starts)]
            yield collate_right_pad([self.dataset[j] for j in order[first : first + size]], self.pad_id)

    def train(self, seeded: SeededModel, global_c: np.ndarray, config: TrainConfig,
              progress=None) -> ClientUpdate:
        """Catch up to global_c (replaying only what changed), then train locally and report."""
        seeded.move_to(global_c)
        local = config.local
        if config.probabilities is None:
            optimizer = MeZOOptimizer(seeded, local.lr, local.eps, local.grad_clip)
        else:
            optimizer = MeZOBiasOptimizer(seeded, local.lr, local.eps, local.grad_clip, config.probabilities)
        rng = client_rng(self.run_seed, config.round, self.client_id)
        indices, grads, losses, skipped = [], [], [], {"nan": 0, "clip": 0}
        for result in optimizer.steps(self.batches(local, rng), lm_loss, rng):
            if result.skipped:
                skipped[result.skipped] += 1
            else:
                indices.append(result.seed_index)
                grads.append(result.grad)
                losses.append(result.loss)
            if progress is not None:
                progress.update(1)
        return ClientUpdate(
            client_id=self.client_id, round=config.round,
            seed_indices=np.asarray(indices, dtype=np.int64),
            # g is uploaded as float32 (the wire format): every engine aggregates the same float32 values
            grads=np.asarray(grads, dtype=np.float32).astype(np.float64),
            num_samples=len(self.dataset), mean_loss=float(np.mean(losses)) if losses else float("nan"),
            skipped=skipped,
        )
