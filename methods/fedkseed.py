"""FedKSeed and FedKSeed-Pro as a method: seed indices and scalar gradients on the wire, the global model as
theta0 - lr * sum_j c_j z_j, each round's Delta c recorded for catch-up, replay and exact resume."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from checkpoint import CHECKPOINT_FILE, RunState, model_fingerprint, save_checkpoint
from client import Client, ClientUpdate, LocalTraining, TrainConfig
from errors import FedKSeedError
from measure import LocalCost
from methods.base import ZO_STEP_FORWARDS, LocalReport, Method, summed_catch_up_bytes
from methods.first_order import with_lora
from modeling import copy_trainable
from optimizers.seed_pool import SeededModel
from server import Server, ServerConfig

if TYPE_CHECKING:
    from config import RunConfig


def server_config(cfg: RunConfig, client_ids: tuple[int, ...]) -> ServerConfig:
    method, fed = cfg.method, cfg.federation
    return ServerConfig(
        client_ids=client_ids, client_fraction=fed.m, k=method.K,
        local=LocalTraining(lr=method.lr, eps=method.zo_eps, local_step=fed.local_step,
                            batch_or_epoch=fed.batch_or_epoch, batch_size=cfg.data.batch_size,
                            grad_clip=method.grad_clip),
        equal_weight=fed.equal_weight, bias_sampling=method.bias_sampling, bias_loss_clip=method.bias_loss_clip,
        grad_initial=method.grad_initial, perturbation=method.perturbation, seed=fed.seed,
        aggregation=fed.aggregation, max_abs_grad=fed.max_abs_grad, trim_fraction=fed.trim_fraction,
    )


def bytes_up(update: ClientUpdate) -> int:
    """Upload size: one int32 seed index and one float32 scalar gradient a step, plus the sample count."""
    return 8 * len(update.seed_indices) + 8


def perturbed_model(model: torch.nn.Module, cfg: RunConfig) -> torch.nn.Module:
    """The model z perturbs: the base model, or with --peft lora the base plus its initial adapters (seeded by
    --seed), z over the adapter tensors only."""
    return with_lora(model, cfg) if cfg.method.peft == "lora" else model


def fresh_state(cfg: RunConfig, server: Server, fingerprint: str, clients: list[Client]) -> RunState:
    """The run's state before its first round."""
    return RunState(round=0, fingerprint=fingerprint, flags=cfg.flags(), seed_pool=server.seed_pool,
                    c=server.c, deltas=[], server_rng=server.rng.bit_generator.state,
                    last_round={c.client_id: 0 for c in clients})


def restore(server: Server, state: RunState, fingerprint: str) -> RunState:
    """Bring a fresh server to the checkpointed round: same seeds, same RNG, same model bit for bit."""
    if state.fingerprint != fingerprint:
        raise FedKSeedError("--resume: the base model differs from the checkpoint's (fingerprint mismatch)")
    if not np.array_equal(state.seed_pool, server.seed_pool):
        raise FedKSeedError("--resume: the seed pool differs from the checkpoint's (different -K or --seed)")
    server.replay_rounds(state.deltas)
    if not np.array_equal(server.c, state.c):
        raise FedKSeedError("--resume: replaying the checkpoint's rounds does not reproduce its c (corrupt?)")
    server.rng.bit_generator.state = state.server_rng
    if server.history is not None and state.history is not None:
        server.history.abs_sum, server.history.counts = (a.copy() for a in state.history)
    return state


class FedKSeed(Method):
    """The server (seed pool, sampling, per-seed aggregation, c, Pro) and one in-process client model copy."""

    @staticmethod
    def weight_copies(cfg: RunConfig) -> tuple[float, str]:
        if cfg.federation.client_sync == "replay":
            return 1, "FedKSeed with --client_sync replay (one model)"
        if cfg.method.peft == "lora":
            return 1, "FedKSeed + LoRA (one base model: the clients' copy shares its frozen weights)"
        return 2, "FedKSeed with --client_sync copy (the server's model and the clients' copy; replay needs one)"

    @staticmethod
    def check_flags(cfg: RunConfig) -> None:
        if cfg.method.weight_decay != 0:
            raise FedKSeedError(f"--weight_decay {cfg.method.weight_decay}: not supported with fedkseed; decay would "
                                "make the model differ from theta0 - lr*sum c_j z_j, which every client and the server "
                                "rely on")

    def __init__(self, cfg: RunConfig, model: torch.nn.Module, clients: list[Client],
                 resume: RunState | None = None):
        self.cfg = cfg
        self.name = cfg.method.run_name
        model = perturbed_model(model, cfg)
        self.fingerprint = model_fingerprint(model)
        self.server = Server(model, server_config(cfg, tuple(c.client_id for c in clients)), compile=cfg.model.compile)
        self._work: SeededModel | None = None  # the in-process clients' copy, made when one trains here
        self.state = (fresh_state(cfg, self.server, self.fingerprint, clients) if resume is None
                      else restore(self.server, resume, self.fingerprint))
        self.round, self.base_eval = self.state.round, self.state.base_eval
        self.train_config: TrainConfig | None = None  # what every client of the current round is told to do

    @property
    def work(self) -> SeededModel:
        """The model in-process clients train on. With --client_sync replay it is the server's own: each client
        catches it up by replaying Delta c, as a remote client does its one copy, so the run holds one model
        (exact in the closed form, not bit for bit). With copy, a second copy that every client resets to the
        server's weights (bit-identical to a remote node's exact catch-up); a server whose clients are remote
        never makes it."""
        if self.cfg.federation.client_sync == "replay":
            return self.server.seeded
        if self._work is None:
            seeded = self.server.seeded
            self._work = SeededModel(copy_trainable(seeded.model), self.server.seed_pool, self.cfg.method.lr,
                                     kind=self.cfg.method.perturbation, compile=self.cfg.model.compile,
                                     theta0=seeded.theta0)
            self._work.c = seeded.c.copy()  # the copy holds the server's weights, which c describes
        return self._work

    def select_clients(self, round_idx: int) -> list[int]:
        selected = self.server.select_clients()
        self.train_config = self.server.train_config(round_idx)
        return selected

    def train_client(self, client: Client, round_idx: int, progress=None) -> LocalReport:
        cfg, state = self.cfg, self.state
        catch_up = summed_catch_up_bytes(state.deltas, state.last_round[client.client_id])
        probabilities = 4 * cfg.method.K if cfg.method.bias_sampling else 0  # Pro's K float32 sampling probabilities
        with LocalCost(cfg.model.device) as cost:
            if cfg.federation.client_sync == "copy":
                self.work.copy_from(self.server.seeded)
            update = client.train(self.work, self.server.c, self.train_config, progress=progress)
        steps = len(update.seed_indices) + sum(update.skipped.values())
        return LocalReport(client_id=client.client_id, upload=update, bytes_up=bytes_up(update),
                           bytes_down=catch_up + probabilities,
                           forward_equivalents=ZO_STEP_FORWARDS * steps, train_loss=update.mean_loss,
                           seconds=cost.seconds, peak_bytes=cost.peak_bytes, skipped=update.skipped)

    def finish_round(self, round_idx: int, reports: list[LocalReport]) -> dict:
        server = self.server
        for r in reports:
            self.state.last_round[r.client_id] = round_idx - 1
        delta = server.apply_round(server.accept([r.upload for r in reports], round_idx))
        nonzero = np.flatnonzero(delta)
        self.state.deltas.append((nonzero.astype(np.int32), delta[nonzero]))
        self.round = self.state.round = round_idx
        return {}

    def global_model(self) -> torch.nn.Module:
        return self.server.seeded.model

    def save(self, out: Path) -> None:
        """Snapshot the server's state into the run state and write it atomically."""
        state, server = self.state, self.server
        state.base_eval = self.base_eval
        state.c = server.c.copy()
        state.server_rng = server.rng.bit_generator.state
        if server.history is not None:
            state.history = (server.history.abs_sum.copy(), server.history.counts.copy())
        save_checkpoint(out / CHECKPOINT_FILE, state)

    def finish(self, out: Path) -> dict:
        if self.cfg.output.save:  # c and the seed pool: the whole trained model beside theta0
            np.savez(out / "coefficients.npz", c=self.server.c, seed_pool=self.server.seed_pool, lr=self.cfg.method.lr)
        return {"method": self.name}

    @property
    def c(self) -> np.ndarray:
        return self.server.c
