"""The paper's weight-shipping baselines: first-order local training and FedAvg of the trained tensors.

    fedit   LoRA adapters (peft) on the frozen base model; the adapters cross the wire
    fedavg  every weight of the model is trained; the full weights cross the wire

A round: each selected client loads the global tensors into the in-process work copy, trains them with AdamW for
--local_step steps (or epochs) on its data, in the order FedKSeed's client would see it, and uploads them; the
server averages them by data size (or equally with --equal_weight)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from checkpoint import CHECKPOINT_FILE, TensorState, model_fingerprint, save_checkpoint
from client import Client, LocalTraining, client_rng
from errors import FedKSeedError
from measure import LocalCost
from methods.base import FO_STEP_FORWARDS, ArrayClient, ArrayMethod, LocalReport
from modeling import copy_trainable, lm_loss
from server import sample_clients
from streams import stream

if TYPE_CHECKING:
    from config import RunConfig

Tensors = dict[str, np.ndarray]


def with_lora(model: torch.nn.Module, cfg: RunConfig) -> torch.nn.Module:
    """The base model wrapped with LoRA adapters on --lora_target_modules (only the adapters train), in eval mode.
    The adapters' initial values come from --seed alone, so every process that wraps the same base gets the same
    ones."""
    from peft import LoraConfig, get_peft_model

    targets = [t.strip() for t in cfg.method.lora_target_modules.split(",") if t.strip()]
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise FedKSeedError(f"--lora_target_modules: the model has no module named {', '.join(missing)}")
    method = cfg.method
    config = LoraConfig(r=method.lora_r, lora_alpha=method.lora_alpha, lora_dropout=method.lora_dropout,
                        target_modules=targets, bias="none", task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.federation.seed)
        wrapped = get_peft_model(model, config)
    # peft's new dropout modules start in training mode: on, a zeroth-order step's two losses and every evaluation
    # would draw their own masks. First-order training turns dropout on itself (local_train), with seeded masks.
    return wrapped.eval()


def trainable_all(model: torch.nn.Module) -> torch.nn.Module:
    """The base model with every weight trainable (FedAvg and Ferret are full-parameter), in eval mode."""
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval()


def trainable_model(model: torch.nn.Module, cfg: RunConfig) -> torch.nn.Module:
    """The base model as --method trains it: wrapped with LoRA (fedit) or with every weight trainable (fedavg)."""
    return with_lora(model, cfg) if cfg.method.method == "fedit" else trainable_all(model)


def trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def read_tensors(model: torch.nn.Module) -> Tensors:
    """The trainable tensors as float32 numpy arrays: what a client uploads and the server sends."""
    return {name: p.detach().float().cpu().numpy().copy() for name, p in trainable(model).items()}


@torch.no_grad()
def write_tensors(model: torch.nn.Module, tensors: Tensors) -> None:
    for name, p in trainable(model).items():
        p.copy_(torch.from_numpy(tensors[name]).to(device=p.device, dtype=p.dtype))


def tensors_bytes(tensors: Tensors) -> int:
    return sum(a.nbytes for a in tensors.values())


def fedavg(uploads: list[Tensors], weights: np.ndarray) -> Tensors:
    """The weighted mean of the clients' tensors, name by name (float64 sums, float32 result)."""
    return {name: sum(w * u[name].astype(np.float64) for w, u in zip(weights, uploads, strict=True)).astype(np.float32)
            for name in uploads[0]}


def local_train(model: torch.nn.Module, batches, lr: float, weight_decay: float, optimizer: str = "adamw",
                skipped: dict[str, int] | None = None) -> list[float]:
    """AdamW (FedIT's clients) or plain SGD (Ferret's) on the model's trainable tensors, one step a batch, a fresh
    optimizer state; returns the training losses. A batch whose loss is not finite is not stepped on (counted in
    skipped["nan"] when given), as a zeroth-order step with a NaN loss is skipped."""
    params = list(trainable(model).values())
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.0, weight_decay=weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    model.train()
    losses = []
    try:
        for batch in batches:
            loss = lm_loss(model, batch)
            if not torch.isfinite(loss.detach()):
                if skipped is not None:
                    skipped["nan"] = skipped.get("nan", 0) + 1
                continue
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
    finally:
        model.eval()
    return losses


def client_steps(cfg: RunConfig, client: Client, round_idx: int, model: torch.nn.Module, progress=None,
                 optimizer: str = "adamw") -> tuple[list[float], dict[str, int]]:
    """A client's first-order local steps of a round on `model` (local_train over its batches, in the order
    FedKSeed's client would see them): the losses, and the batches skipped for a non-finite loss."""
    local = LocalTraining(lr=cfg.method.lr, eps=0.0, local_step=cfg.federation.local_step,
                          batch_or_epoch=cfg.federation.batch_or_epoch, batch_size=cfg.data.batch_size)
    seed = int(stream(cfg.federation.seed, "torch", round_idx, client.client_id).integers(2**62))
    skipped: dict[str, int] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout: the same masks wherever and whenever (resume) the client runs
        batches = client.batches(local, client_rng(cfg.federation.seed, round_idx, client.client_id))
        losses = local_train(model, counted(batches, progress), cfg.method.lr, cfg.method.weight_decay, optimizer,
                             skipped)
    return losses, skipped


class FirstOrderClient(ArrayClient):
    """A client's side of FedIT / FedAvg: one trainable copy of the model (trainable_model), which each round loads
    the received tensors, trains them and uploads them."""

    def __init__(self, cfg: RunConfig, model: torch.nn.Module, fingerprint: str):
        self.cfg, self.work, self.fingerprint = cfg, model, fingerprint

    def local_work(self, client: Client, round_idx: int, received: Tensors, progress=None) -> LocalReport:
        with LocalCost(self.cfg.model.device) as cost:
            write_tensors(self.work, received)
            losses, skipped = client_steps(self.cfg, client, round_idx, self.work, progress)
            upload = read_tensors(self.work)
        return LocalReport(client_id=client.client_id, upload=upload, bytes_down=tensors_bytes(received),
                           bytes_up=tensors_bytes(upload) + 8, forward_equivalents=FO_STEP_FORWARDS * len(losses),
                           train_loss=float(np.mean(losses)) if losses else float("nan"),
                           seconds=cost.seconds, peak_bytes=cost.peak_bytes, skipped=skipped)


class FirstOrder(ArrayMethod):
    """FedIT (--method fedit: LoRA) or full-parameter FedAvg (--method fedavg)."""

    @staticmethod
    def weight_copies(cfg: RunConfig) -> tuple[float, str]:
        if cfg.method.method == "fedavg":  # half precision, measured: at 1.43B in bfloat16 the run passed 8
            # weight-sized buffers (21.4 GiB) and was still growing when it was stopped
            return 6 if cfg.model.dtype == "float32" else 9, ("FedAvg (the server's model and its tensors, the "
                                                              "client's copy, gradients, AdamW's two moments)")
        return 2, "FedIT (the server's and the client's copies of the base model)"

    def __init__(self, cfg: RunConfig, model: torch.nn.Module, clients: list[Client],
                 resume: TensorState | None = None):
        self.cfg, self.name = cfg, cfg.method.method
        self.fingerprint = model_fingerprint(model)
        self.server_model = trainable_model(model, cfg)
        self._client: FirstOrderClient | None = None  # built when a client trains in this process
        self.global_tensors = read_tensors(self.server_model)
        self.rng = stream(cfg.federation.seed, "server")
        self.sizes = {c.client_id: len(c) for c in clients}
        if resume is not None:
            self.restore(resume)

    def restore(self, state: TensorState) -> None:
        """Continue from a checkpoint: the global tensors, the server's RNG, the round, the base evaluation."""
        if not isinstance(state, TensorState) or state.fingerprint != self.fingerprint:
            raise FedKSeedError("--resume: the checkpoint is not of this method and base model")
        if state.tensors.keys() != self.global_tensors.keys():
            raise FedKSeedError("--resume: the checkpoint's tensors do not fit this model (other LoRA flags?)")
        self.global_tensors = state.tensors
        write_tensors(self.server_model, self.global_tensors)
        self.rng.bit_generator.state = state.server_rng
        self.round, self.base_eval = state.round, state.base_eval

    def select_clients(self, round_idx: int) -> list[int]:
        return sample_clients(self.rng, self.cfg.federation.m, list(self.sizes))

    def download(self, client_id: int, round_idx: int, since: int | None = None) -> Tensors:
        return self.global_tensors  # the tensors whole: a client needs no state of its own

    @staticmethod
    def build_client(cfg: RunConfig, model: torch.nn.Module) -> FirstOrderClient:
        fingerprint = model_fingerprint(model)  # of the base model, before trainable_model wraps it
        return FirstOrderClient(cfg, trainable_model(model, cfg), fingerprint)

    def client_side(self) -> FirstOrderClient:
        if self._client is None:
            self._client = FirstOrderClient(self.cfg, copy_trainable(self.server_model), self.fingerprint)
        return self._client

    def check_upload(self, upload: Tensors) -> str | None:
        if upload.keys() != self.global_tensors.keys():
            return f"the upload names {len(upload)} tensors, not this model's {len(self.global_tensors)} trained ones"
        for name, ref in self.global_tensors.items():
            a = upload[name]
            if a.dtype != ref.dtype or a.shape != ref.shape:
                return f"tensor {name}: {a.dtype} {tuple(a.shape)}, expected {ref.dtype} {tuple(ref.shape)}"
            if not np.isfinite(a).all():
                return f"tensor {name}: non-finite values"
        return None

    def finish_round(self, round_idx: int, reports: list[LocalReport]) -> dict:
        sizes = np.array([1.0 if self.cfg.federation.equal_weight else self.sizes[r.client_id] for r in reports])
        self.global_tensors = fedavg([r.upload for r in reports], sizes / sizes.sum())
        write_tensors(self.server_model, self.global_tensors)
        self.round = round_idx
        return {}

    def global_model(self) -> torch.nn.Module:
        return self.server_model

    def save(self, out: Path) -> None:
        save_checkpoint(out / CHECKPOINT_FILE, TensorState(
            round=self.round, fingerprint=self.fingerprint, flags=self.cfg.flags(),
            server_rng=self.rng.bit_generator.state, tensors=self.global_tensors, base_eval=self.base_eval))

    def finish(self, out: Path) -> dict:
        return {"method": self.name, "trainable_parameters": int(sum(a.size for a in self.global_tensors.values()))}


def counted(batches, progress):
    """The batches, each counted on the progress bar once trained on."""
    for batch in batches:
        yield batch
        if progress is not None:
            progress.update(1)
