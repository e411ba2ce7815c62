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

import argparse
import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from checkpoint import CHECKPOINT_FILE, RunState, model_fingerprint, save_checkpoint
from client import Client, LocalTraining, client_rng
from errors import FedKSeedError
from measure import LocalCost
from methods.base import FO_STEP_FORWARDS, LocalReport, Method
from methods.fedkseed import changed_since
from methods.first_order import counted, local_train
from optimizers.perturbation import Perturbation
from optimizers.seed_pool import make_seed_pool
from server import client_weights, sample_clients
from streams import stream

REFERENCE_SERVER_LR = 10.0 / 3.0  # the reference's 10, acting on its reconstruction of Delta / 3
REFERENCE_CLIP = 30.0  # the reference's norm 10 on a term a third of this suite's unbiased one


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


@dataclass
class FerretUpload:
    """A client's upload: the chosen (seed index, block, gamma) entries and its sample count."""

    client_id: int
    round: int
    seeds: np.ndarray  # int, into the seed pool
    blocks: np.ndarray  # int, block index
    gammas: np.ndarray  # float64 values of float32 wire scalars
    num_samples: int
    skipped: dict[str, int] = field(default_factory=dict)


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


def check_upload(u: FerretUpload, k: int, n_blocks: int, round_idx: int) -> str | None:
    """Why an upload from an untrusted client cannot be combined, or None."""
    seeds, blocks, gammas = np.asarray(u.seeds), np.asarray(u.blocks), np.asarray(u.gammas)
    if u.round != round_idx:
        return f"upload for round {u.round}, expected {round_idx}"
    if isinstance(u.num_samples, bool) or not isinstance(u.num_samples, int | np.integer) or u.num_samples <= 0:
        return f"sample count {u.num_samples!r} is not a positive integer"
    if not (seeds.ndim == blocks.ndim == gammas.ndim == 1 and len(seeds) == len(blocks) == len(gammas)):
        return "seed, block and gamma arrays differ in shape"
    if not np.issubdtype(seeds.dtype, np.integer) or not np.issubdtype(blocks.dtype, np.integer):
        return "seed or block indices are not integers"
    if len(seeds) and (seeds.min() < 0 or seeds.max() >= k):
        return f"seed index outside [0, {k})"
    if len(blocks) and (blocks.min() < 0 or blocks.max() >= n_blocks):
        return f"block index outside [0, {n_blocks})"
    if len(np.unique(seeds * n_blocks + blocks)) != len(seeds):
        return "a (seed, block) entry appears twice"
    if not np.issubdtype(gammas.dtype, np.floating) or not np.all(np.isfinite(gammas)):
        return "non-finite or non-float gamma"
    return None


class Ferret(Method):
    """The server (seed pool, sampling, K x L coefficient table, its model) and one in-process client copy."""

    name = "ferret"

    def __init__(self, args: argparse.Namespace, model: torch.nn.Module, clients: list[Client],
                 resume: RunState | None = None):
        self.args = args
        for p in model.parameters():
            p.requires_grad_(True)
        self.model = model.eval()
        self.fingerprint = model_fingerprint(model)
        self.rng = stream(args.seed, "server")
        self.seed_pool = make_seed_pool(args.K, self.rng)
        self.pert = Perturbation(model, kind=args.perturbation, compile=False if args.no_compile else None)
        self.blocks = ferret_blocks([p.numel() for _, p in self.pert.params])
        self.n_blocks = int(self.blocks.max()) + 1
        self.block_sizes = np.bincount(self.blocks, weights=[p.numel() for _, p in self.pert.params])
        self.sizes = {c.client_id: len(c) for c in clients}
        self.c = np.zeros((args.K, self.n_blocks))
        self.state = RunState(round=0, fingerprint=self.fingerprint, flags=vars(args).copy(), seed_pool=self.seed_pool,
                              c=self.c, deltas=[], server_rng=self.rng.bit_generator.state,
                              last_round={cid: 0 for cid in self.sizes})
        self._work: torch.nn.Module | None = None
        if resume is not None:
            self.restore(resume)
        self.round, self.base_eval = self.state.round, self.state.base_eval

    @staticmethod
    def check_flags(args: argparse.Namespace) -> None:
        checks = [
            (args.engine == "inprocess", "--method ferret: runs in the in-process engine (its Flower messages are "
             "not built yet)"),
            (args.dtype == "float32", f"--method ferret: needs --dtype float32 weights (got {args.dtype}): a "
             "half-precision model would round the projected updates away"),
            (args.peft == "none", "--method ferret: trains every weight; --peft lora is for fedkseed"),
            (args.server_lr > 0, f"--server_lr {args.server_lr}: must be positive"),
            (args.server_clip >= 0, f"--server_clip {args.server_clip}: must be >= 0 (0 = no clip)"),
        ]
        for ok, message in checks:
            if not ok:
                raise FedKSeedError(message)

    def restore(self, state: RunState) -> None:
        """Replay the checkpoint's rounds onto theta0: the same model, bit for bit, as the run that wrote it."""
        if not isinstance(state, RunState) or state.fingerprint != self.fingerprint:
            raise FedKSeedError("--resume: the checkpoint is not of this method and base model")
        if not np.array_equal(state.seed_pool, self.seed_pool) or state.c.shape != self.c.shape:
            raise FedKSeedError("--resume: the seed pool or blocks differ from the checkpoint's (other -K or model?)")
        for indices, values in state.deltas:
            self.apply(indices, values)
        if not np.array_equal(self.c, state.c):
            raise FedKSeedError("--resume: replaying the checkpoint's rounds does not reproduce its c (corrupt?)")
        self.rng.bit_generator.state = state.server_rng
        self.state = state

    # --- the server ---------------------------------------------------------------------------------------------

    def apply(self, flat_indices: np.ndarray, values: np.ndarray) -> None:
        """theta += sum Delta c_{k,l} z_{k,l} over a round's changed entries (flat index k * L + l), and c too."""
        seeds, blocks = np.divmod(np.asarray(flat_indices, dtype=np.int64), self.n_blocks)
        used = np.unique(seeds)
        table = np.zeros((len(used), self.n_blocks))
        table[np.searchsorted(used, seeds), blocks] = values
        self.pert.replay_table_(self.seed_pool[used].tolist(), table[:, self.blocks].T)
        self.c[seeds, blocks] += values

    def select_clients(self, round_idx: int) -> list[int]:
        return sample_clients(self.rng, self.args.m, len(self.sizes))

    def finish_round(self, round_idx: int, reports: list[LocalReport]) -> dict:
        uploads = [r.upload for r in reports]
        kept = [u for u in uploads if check_upload(u, self.args.K, self.n_blocks, round_idx) is None]
        mean = np.zeros_like(self.c)
        for weight, u in zip(client_weights(kept, self.args.equal_weight), kept, strict=True):
            np.add.at(mean, (u.seeds, u.blocks), weight * u.gammas)
        for u in uploads:
            self.state.last_round[u.client_id] = round_idx - 1
        changed = np.flatnonzero(mean)
        gamma = mean.reshape(-1)[changed]
        if self.args.server_clip > 0:
            norms = np.abs(gamma) * np.sqrt(self.block_sizes[changed % self.n_blocks])
            gamma = gamma * np.minimum(1.0, self.args.server_clip / (norms + 1e-8))
        delta = -self.args.server_lr * gamma
        self.apply(changed, delta)
        self.state.deltas.append((changed.astype(np.int32), delta))
        self.round = self.state.round = round_idx
        return {"rejected_uploads": len(uploads) - len(kept)} if len(kept) < len(uploads) else {}

    # --- a client (in this process) -----------------------------------------------------------------------------

    def train_client(self, client: Client, round_idx: int, progress=None) -> LocalReport:
        args = self.args
        changed = changed_since(self.state.deltas, self.state.last_round[client.client_id])
        local = LocalTraining(lr=args.lr, eps=0.0, local_step=args.local_step, batch_or_epoch=args.batch_or_epoch,
                              batch_size=args.batch_size)
        seed = int(stream(args.seed, "torch", round_idx, client.client_id).integers(2**62))
        skipped: dict[str, int] = {}
        with LocalCost(args.device) as cost, torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # dropout: the same masks wherever and whenever the client runs
            work = self.work_copy()
            batches = counted(client.batches(local, client_rng(args.seed, round_idx, client.client_id)), progress)
            losses = local_train(work, batches, args.lr, args.weight_decay, optimizer="sgd", skipped=skipped)
            with torch.no_grad():
                deltas = [p.detach() - q.detach() for (_, p), q in zip(self.pert.params, work.parameters(),
                                                                       strict=True)]
            seeds, blocks, gammas = project_update(self.pert, self.blocks, deltas, self.seed_pool,
                                                   stream(args.seed, "ferret", round_idx, client.client_id))
        upload = FerretUpload(client.client_id, round_idx, seeds, blocks, gammas, len(client), skipped)
        return LocalReport(client_id=client.client_id, upload=upload, bytes_down=12 * changed,
                           bytes_up=12 * len(seeds) + 8, forward_equivalents=FO_STEP_FORWARDS * len(losses),
                           train_loss=float(np.mean(losses)) if losses else float("nan"), seconds=cost.seconds,
                           peak_bytes=cost.peak_bytes, skipped=skipped)

    def work_copy(self) -> torch.nn.Module:
        """The in-process clients' copy, set to the global model (a plain tensor copy)."""
        if self._work is None:
            self._work = copy.deepcopy(self.model)
        with torch.no_grad():
            for p, q in zip(self._work.parameters(), self.model.parameters(), strict=True):
                p.copy_(q)
        return self._work

    # --- the run ------------------------------------------------------------------------------------------------

    def global_model(self) -> torch.nn.Module:
        return self.model

    def save(self, out: Path) -> None:
        self.state.c, self.state.base_eval = self.c.copy(), self.base_eval
        self.state.server_rng = self.rng.bit_generator.state
        save_checkpoint(out / CHECKPOINT_FILE, self.state)

    def finish(self, out: Path) -> dict:
        if self.args.save:  # the K x L table and the seed pool: the whole trained model beside theta0
            np.savez(out / "coefficients.npz", c=self.c, seed_pool=self.seed_pool, blocks=self.blocks)
        return {"method": self.name, "blocks": self.n_blocks}
