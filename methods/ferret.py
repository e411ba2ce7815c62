"""Ferret (Shu et al., ICML 2025): first-order local steps, then the local update projected onto random bases drawn
from a pool of K shared seeds, block by block, so that a client uploads a few thousand scalars.

    blocks      the trainable tensors in order, grouped greedily into blocks of about 0.9 x the median tensor size
                (the reference code's rule), fixed for the run
    client      plain SGD for --local_step batches from the global model; Delta = theta_before - theta_after; per
                block l, n_l = max(2, int(K * |Delta_l| / max_l |Delta_l|)) distinct seeds from the pool and
                gamma_{k,l} = <Delta_l, z_{k,l}> / n_l, with z this suite's Gaussian (E[z z^T] = I), so that
                sum_k gamma_{k,l} z_{k,l} is an unbiased estimate of Delta_l
    server      gamma averaged over the round's clients (data size or equal weights), each (seed, block) term
                clipped to norm --server_clip (its norm taken as |gamma| sqrt(d_l)), scaled by --server_lr:
                Delta c_{k,l} = -server_lr * gamma_{k,l} * clip factor
    model       theta = theta0 + sum_{k,l} c_{k,l} z_{k,l}: the pretrained weights plus a K x L table. Every round's
                Delta c is recorded and applied in order, so a checkpoint is kilobytes and a resumed run replays
                the same float operations as the uninterrupted one.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from checkpoint import CHECKPOINT_FILE, RunState, model_fingerprint, save_checkpoint
from client import Client
from errors import FedKSeedError, require
from flag_group import FlagGroup, flag
from measure import LocalCost
from methods.base import FO_STEP_FORWARDS, ArrayClient, ArrayMethod, LocalReport, summed_catch_up_bytes
from methods.first_order import client_steps, tensors_bytes, trainable_all
from optimizers.block_projection import BlockSeededModel, project_update
from optimizers.seed_pool import make_seed_pool
from server import sample_clients
from streams import stream

if TYPE_CHECKING:
    from config import RunConfig

REFERENCE_SERVER_LR = 10.0 / 3.0  # the reference's 10, acting on its reconstruction of Delta / 3
REFERENCE_CLIP = 30.0  # the reference's norm 10 on a term a third of this suite's unbiased one


@dataclass
class FerretFlags(FlagGroup):
    """Ferret's own flags: the server's step on the averaged reconstruction (cfg.own["ferret"])."""

    title = "Ferret (--method ferret)"

    server_lr: float = flag(REFERENCE_SERVER_LR, "server step on the averaged reconstruction (the reference's 10 "
                            "acts on a reconstruction a third of the update, so 10/3 here)")
    server_clip: float = flag(REFERENCE_CLIP, "largest norm of one (seed, block) term of the averaged "
                              "reconstruction; 0 = no clip (the reference's 10 on a term a third of this suite's)")

    def check(self) -> None:
        require([
            (self.server_lr > 0, f"--server_lr {self.server_lr}: must be positive"),
            (self.server_clip >= 0, f"--server_clip {self.server_clip}: must be >= 0 (0 = no clip)"),
        ])


def pack_rounds(deltas: list[tuple[np.ndarray, np.ndarray]], first: int) -> dict[str, np.ndarray]:
    """Rounds first+1 .. len(deltas) of Delta c as arrays: how many entries each round has, then every entry's
    flat index and value, round after round."""
    rounds = deltas[first:]
    return {"since": np.array([first], dtype=np.int64),
            "delta_counts": np.array([len(idx) for idx, _ in rounds], dtype=np.int32),
            "delta_index": np.concatenate([idx for idx, _ in rounds] or [np.zeros(0)]).astype(np.int32),
            "delta_value": np.concatenate([v for _, v in rounds] or [np.zeros(0)])}


class OutOfSync(FedKSeedError):
    """A client's copy cannot reach the global model from what it was sent (a node that lost its state)."""


class FerretClient(ArrayClient):
    """A client's side of Ferret: a copy of the global model (caught up round by round from the Delta c it
    receives), a work copy trained with SGD, and the projection of the update."""

    def __init__(self, cfg: RunConfig, held: BlockSeededModel, fingerprint: str):
        self.cfg, self.held, self.fingerprint = cfg, held, fingerprint
        self.work: torch.nn.Module | None = None

    def catch_up(self, received: dict[str, np.ndarray], round_idx: int) -> None:
        """Apply the received rounds this copy lacks, in order; they must reach round_idx - 1."""
        since, counts = int(received["since"][0]), received["delta_counts"]
        if since > self.held.round or since + len(counts) != round_idx - 1:
            raise OutOfSync(f"out of sync: sent rounds {since + 1} .. {since + len(counts)}, the copy holds "
                            f"{self.held.round}, round {round_idx} needs {round_idx - 1}")
        ends = np.cumsum(counts)
        for r in range(self.held.round + 1, round_idx):
            first, last = ends[r - since - 1] - counts[r - since - 1], ends[r - since - 1]
            self.held.apply(received["delta_index"][first:last], received["delta_value"][first:last])

    def local_work(self, client: Client, round_idx: int, received: dict[str, np.ndarray], progress=None) -> LocalReport:
        cfg = self.cfg
        with LocalCost(cfg.model.device) as cost:
            start = time.perf_counter()
            self.catch_up(received, round_idx)
            work = self.work_copy()
            trained = time.perf_counter()
            losses, skipped = client_steps(cfg, client, round_idx, work, progress, optimizer="sgd")
            passes = time.perf_counter() - trained
            with torch.no_grad():
                deltas = [p.detach() - q.detach() for (_, p), q in zip(self.held.pert.params, work.parameters(),
                                                                       strict=True)]
            seeds, blocks, gammas = project_update(self.held.pert, self.held.blocks, deltas, self.held.seed_pool,
                                                   stream(cfg.federation.seed, "ferret", round_idx, client.client_id))
            overhead = time.perf_counter() - start - passes
        upload = {"seeds": seeds.astype(np.int32), "blocks": blocks.astype(np.int32),
                  "gammas": gammas.astype(np.float32), "synced": np.array([self.held.round], dtype=np.int64)}
        return LocalReport(client_id=client.client_id, upload=upload, bytes_down=tensors_bytes(received),
                           bytes_up=tensors_bytes(upload), forward_equivalents=FO_STEP_FORWARDS * len(losses),
                           train_loss=float(np.mean(losses)) if losses else float("nan"), seconds=cost.seconds,
                           peak_bytes=cost.peak_bytes, skipped=skipped,
                           overhead_forward_equivalents=overhead * FO_STEP_FORWARDS * len(losses) / passes
                           if losses else 0.0)

    def work_copy(self) -> torch.nn.Module:
        """The copy the client trains, set to the global model (a plain tensor copy)."""
        if self.work is None:
            self.work = copy.deepcopy(self.held.model)
        with torch.no_grad():
            for p, q in zip(self.work.parameters(), self.held.model.parameters(), strict=True):
                p.copy_(q)
        return self.work


UPLOAD = {"seeds": np.int32, "blocks": np.int32, "gammas": np.float32, "synced": np.int64}


def check_upload(upload: dict[str, np.ndarray], k: int, n_blocks: int) -> str | None:
    """Why an upload from an untrusted client cannot be combined, or None."""
    if set(upload) != set(UPLOAD):
        return f"upload holds {sorted(upload)}, expected {sorted(UPLOAD)}"
    for name, dtype in UPLOAD.items():
        if upload[name].dtype != dtype or upload[name].ndim != 1:
            return f"{name}: {upload[name].dtype} of {upload[name].ndim} dimension(s), expected 1-D {np.dtype(dtype)}"
    seeds, blocks, gammas = upload["seeds"], upload["blocks"], upload["gammas"]
    if not len(seeds) == len(blocks) == len(gammas):
        return "seed, block and gamma arrays differ in length"
    if len(seeds) and (seeds.min() < 0 or seeds.max() >= k):
        return f"seed index outside [0, {k})"
    if len(blocks) and (blocks.min() < 0 or blocks.max() >= n_blocks):
        return f"block index outside [0, {n_blocks})"
    if len(np.unique(seeds.astype(np.int64) * n_blocks + blocks)) != len(seeds):
        return "a (seed, block) entry appears twice"
    if not np.all(np.isfinite(gammas)):
        return "non-finite gamma"
    return None


class Ferret(ArrayMethod):
    """The server: seed pool, sampling, the global model as a BlockSeededModel, every round's Delta c. In-process
    clients train on one FerretClient whose held copy is the server's own model (always current)."""

    name = "ferret"
    flags = FerretFlags

    @staticmethod
    def weight_copies(cfg: RunConfig) -> tuple[float, str]:
        return 4, "Ferret (the server's model, the client's copy, its gradients and the update it projects)"

    def __init__(self, cfg: RunConfig, model: torch.nn.Module, clients: list, resume: RunState | None = None):
        self.cfg = cfg
        self.fingerprint = model_fingerprint(model)
        self.rng = stream(cfg.federation.seed, "server")
        self.seeded = BlockSeededModel(trainable_all(model), make_seed_pool(cfg.method.K, self.rng),
                                       cfg.method.perturbation, cfg.model.compile)
        self.sizes = {c.client_id: len(c) for c in clients}
        self.state = RunState(round=0, fingerprint=self.fingerprint, flags=cfg.flags(),
                              seed_pool=self.seeded.seed_pool, c=self.seeded.c, deltas=[],
                              server_rng=self.rng.bit_generator.state, last_round={cid: 0 for cid in self.sizes})
        self._client: FerretClient | None = None
        if resume is not None:
            self.restore(resume)
        self.round, self.base_eval = self.state.round, self.state.base_eval

    @staticmethod
    def check_flags(cfg: RunConfig) -> None:
        method, fed = cfg.method, cfg.federation
        require([
            (cfg.model.dtype == "float32", f"--method ferret: needs --dtype float32 weights (got {cfg.model.dtype}): "
             "a half-precision model would round the projected updates away"),
            (method.peft == "none", "--method ferret: trains every weight; --peft lora is for fedkseed"),
            (fed.aggregation == "mean" and fed.max_abs_grad == 0, "--aggregation / --max_abs_grad: robust "
             "aggregation of scalar gradients is FedKSeed's; --method ferret averages gamma and clips with "
             "--server_clip"),
        ])

    @staticmethod
    def build_client(cfg: RunConfig, model: torch.nn.Module) -> FerretClient:
        fingerprint = model_fingerprint(model)
        pool = make_seed_pool(cfg.method.K, stream(cfg.federation.seed, "server"))
        return FerretClient(cfg, BlockSeededModel(trainable_all(model), pool, cfg.method.perturbation,
                                                  cfg.model.compile), fingerprint)

    def restore(self, state: RunState) -> None:
        """Replay the checkpoint's rounds onto theta0: the same model, bit for bit, as the run that wrote it."""
        if not isinstance(state, RunState) or state.fingerprint != self.fingerprint:
            raise FedKSeedError("--resume: the checkpoint is not of this method and base model")
        if not np.array_equal(state.seed_pool, self.seeded.seed_pool) or state.c.shape != self.seeded.c.shape:
            raise FedKSeedError("--resume: the seed pool or blocks differ from the checkpoint's (other -K or model?)")
        for indices, values in state.deltas:
            self.seeded.apply(indices, values)
        if not np.array_equal(self.seeded.c, state.c):
            raise FedKSeedError("--resume: replaying the checkpoint's rounds does not reproduce its c (corrupt?)")
        self.rng.bit_generator.state = state.server_rng
        self.state = state

    @property
    def c(self) -> np.ndarray:
        return self.seeded.c

    def select_clients(self, round_idx: int) -> list[int]:
        return sample_clients(self.rng, self.cfg.federation.m, list(self.sizes))

    def download(self, client_id: int, round_idx: int, since: int | None = None) -> dict[str, np.ndarray]:
        """The rounds of Delta c after `since` (default: the round the client last synced to)."""
        first = self.state.last_round[client_id] if since is None else min(since, round_idx - 1)
        return pack_rounds(self.state.deltas[:round_idx - 1], first)

    def train_client(self, client: Client, round_idx: int, progress=None) -> LocalReport:
        """The client's round, charged the download of FedKSeed's in-process accounting (the paper's catch-up: the
        entries of c changed since it last synced), not the rounds of Delta c this process hands it."""
        report = super().train_client(client, round_idx, progress)
        report.bytes_down = summed_catch_up_bytes(self.state.deltas, self.state.last_round[client.client_id])
        return report

    def client_side(self) -> FerretClient:
        if self._client is None:
            self._client = FerretClient(self.cfg, self.seeded, self.fingerprint)
        return self._client

    def check_upload(self, upload: dict[str, np.ndarray]) -> str | None:
        return check_upload(upload, self.cfg.method.K, self.seeded.n_blocks)

    def finish_round(self, round_idx: int, reports: list[LocalReport]) -> dict:
        """Average the accepted uploads' gamma by data size (or equally), clip each (seed, block) term, scale by
        --server_lr, and move the global model by the round's Delta c."""
        seeded, cfg = self.seeded, self.cfg
        kept = [r for r in reports if self.check_upload(r.upload) is None]
        sizes = np.array([1.0 if cfg.federation.equal_weight else self.sizes[r.client_id] for r in kept])
        mean = np.zeros_like(seeded.c)
        for weight, r in zip(sizes / sizes.sum() if len(kept) else sizes, kept, strict=True):
            np.add.at(mean, (r.upload["seeds"], r.upload["blocks"]), weight * r.upload["gammas"].astype(np.float64))
        for r in reports:
            self.state.last_round[r.client_id] = round_idx - 1
        changed = np.flatnonzero(mean)
        gamma = mean.reshape(-1)[changed]
        step = cfg.own["ferret"]
        if step.server_clip > 0:
            norms = np.abs(gamma) * np.sqrt(seeded.block_sizes[changed % seeded.n_blocks])
            gamma = gamma * np.minimum(1.0, step.server_clip / (norms + 1e-8))
        delta = -step.server_lr * gamma
        seeded.apply(changed, delta)
        self.state.deltas.append((changed.astype(np.int32), delta))
        self.round = self.state.round = round_idx
        return {"rejected_uploads": len(reports) - len(kept)} if len(kept) < len(reports) else {}

    def global_model(self) -> torch.nn.Module:
        return self.seeded.model

    def save(self, out: Path) -> None:
        self.state.c, self.state.base_eval = self.seeded.c.copy(), self.base_eval
        self.state.server_rng = self.rng.bit_generator.state
        save_checkpoint(out / CHECKPOINT_FILE, self.state)

    def finish(self, out: Path) -> dict:
        if self.cfg.output.save:  # the K x L table and the seed pool: the whole trained model beside theta0
            np.savez(out / "coefficients.npz", c=self.seeded.c, seed_pool=self.seeded.seed_pool,
                     blocks=self.seeded.blocks)
        return {"method": self.name, "blocks": self.seeded.n_blocks}
