"""A SuperNode's per-process runtime: the base model, seed pool and client data of a run, loaded once per process,
the copies a FedKSeed node trains on and catches up, and the node's state file.

Two catch-up modes (--flower_catchup):
  exact   the node keeps a pristine SeededModel at the last global state it synced to, brings it to round r-1 by
          replaying each missed round's Delta c in order (SeededModel.replay_rounds, the same float operations
          the server's apply_round did on the same float64 c), and trains on a copy of it (copy_from), as the
          in-process engine trains on a copy of the server's model. Bit-identical to the in-process run; costs a
          second copy of the model on the node, and a download that grows with the rounds the node missed.
  summed  the paper's catch-up: one model, the one the node trained last; the server sends the current c at
          every index changed since the node's last sync, and the node moves its trained copy there
          (SeededModel.move_to replays target c - its c, local steps included). One copy of the model and at
          most K values on the wire; exact in the closed form theta0 - lr * sum_j c_j z_j, not bit for bit.

The runtimes live in a module-level cache keyed by run and flags: in the simulation engine a Ray actor keeps them
between messages (virtual nodes sharing an actor each catch its copy up from their own record). A deployed SuperNode
starts a fresh ClientApp process per message: it loads theta0 once and, in exact mode, starts the pristine copy from
the node's state file (node_store.py: the weights of the last synced round), replaying only the rounds since; without
a usable state file, from round 0. Bit-identical either way.
"""
from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from checkpoint import model_fingerprint
from client import Client
from errors import FedKSeedError
from flower_app import fedkseed_messages
from flower_app.node_store import NodeStore, empty_model, store_for
from flower_app.run_file import flags_key
from methods import build_array_client, method_class
from methods.base import ArrayClient
from methods.fedkseed import perturbed_model
from modeling import check_fits, copy_trainable, load_model, load_tokenizer
from optimizers.seed_pool import SeededModel, make_seed_pool
from run_data import training_clients
from streams import stream
from utils_data.load_data import load_for_run

if TYPE_CHECKING:
    from config import RunConfig


def node_weight_copies(cfg: RunConfig) -> tuple[float, str]:
    """The weight-sized buffers a SuperNode holds at its peak: FedKSeed's exact catch-up a pristine and a trained
    copy, summed one; an array method's client what its in-process run holds beside the server's model."""
    if cfg.method.method == "fedkseed":
        if cfg.engine.flower_catchup == "exact":
            return 2, "a SuperNode with --flower_catchup exact (a pristine and a trained copy; summed needs one)"
        return 1, "a SuperNode with --flower_catchup summed (one model)"
    copies, holds = method_class(cfg.method.method).weight_copies(cfg)
    return copies - 1, f"a SuperNode's client of {holds.split(' (')[0]}"


class NodeRuntime:
    """The base model, seed pool and client data of a run, loaded once per process, and the node's store."""

    def __init__(self, cfg: RunConfig, store: NodeStore | None = None):
        self.cfg = cfg
        self.k = cfg.method.K
        check_fits(cfg.model.model, cfg.model.dtype, *node_weight_copies(cfg))
        data = load_for_run(cfg, evaluation=False)
        clients = training_clients(cfg, data, load_tokenizer(cfg.model.model))
        self.clients = {c.client_id: c for c in clients}
        # --flower_data node: the clients of this node's own data, by name (their global ids come from the server)
        self.held = {data.client_names[c.client_id]: c for c in clients} if cfg.engine.flower_data == "node" else None
        self.seed_pool = make_seed_pool(cfg.method.K, stream(cfg.federation.seed, "server"))  # the server's first draw
        self._work: SeededModel | None = None  # the copy a client trains on; loaded on first use
        self.work_is_theta0 = False  # the work copy holds theta0 (not trained yet): a fresh copy is a deepcopy
        self.pristine: SeededModel | None = None
        self.pristine_round = 0
        self.store = store
        self.stored_round = 0  # the round of the state file this process read or wrote
        self.loaded_round = 0  # the round of the state file this process started its pristine copy from

    @property
    def keeps_state(self) -> bool:
        """Whether the state file is used: not for half-precision weights, which every sync rebuilds from theta0
        (SeededModel), so a stored copy cannot replace theta0; not for LoRA (--peft lora), whose adapters the
        stored copy does not describe."""
        return self.store is not None and self.cfg.model.dtype == "float32" and self.cfg.method.peft == "none"

    def seeded(self, model) -> SeededModel:
        return SeededModel(model.to(self.cfg.model.device), self.seed_pool, self.cfg.method.lr,
                           kind=self.cfg.method.perturbation, compile=self.cfg.model.compile)

    def read_theta0(self) -> SeededModel:
        """theta0 read from --model: the model z perturbs (with --peft lora, the base plus its initial adapters)."""
        spec = self.cfg.model
        return self.seeded(perturbed_model(load_model(spec.model, spec.dtype, spec.device), self.cfg))

    @property
    def work(self) -> SeededModel:
        if self._work is None:
            self._work = self.read_theta0()
            self.work_is_theta0 = True
        return self._work

    def load_theta0(self) -> SeededModel:
        """The base model at c = 0: a copy of the work model while it still is theta0, else read from --model."""
        if self.work_is_theta0 or self._work is None:
            return self.seeded(copy_trainable(self.work.model))
        return self.read_theta0()

    @cached_property
    def array_client(self) -> ArrayClient:
        """--method fedit / fedavg: the method's client side (one copy of the model), built on first use."""
        spec = self.cfg.model
        return build_array_client(self.cfg, load_model(spec.model, spec.dtype, spec.device))

    @cached_property
    def fingerprint(self) -> str:
        """theta0's fingerprint (checked by the server in the query), computed on first use."""
        if self.cfg.method.method != "fedkseed":
            return self.array_client.fingerprint
        return model_fingerprint(self.work.model if self.work_is_theta0 else self.load_theta0().model)

    def hosted(self, partition: int, partitions: int) -> list[int]:
        """Ids of the clients this node trains (shared data: i mod partitions; node data: named by the server)."""
        if self.held is not None:
            return []
        return sorted(cid for cid in self.clients if cid % partitions == partition)

    def client_for(self, client_id: int, name: str, partition: tuple[int, int]) -> Client | None:
        """The client a message names, under the server's id for it; None when this node does not hold it."""
        if self.held is None:
            return self.clients[client_id] if client_id in self.hosted(*partition) else None
        local = self.held.get(name)
        return None if local is None else Client(client_id, local.dataset, local.pad_id, local.run_seed)

    def reset_pristine(self, history: list[tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        """A pristine copy at theta0, or at the stored state when `history` is given and the state matches it."""
        self.pristine, self.pristine_round = None, 0
        if history is not None and self.keeps_state:
            self.pristine, self.pristine_round = self.store.load(history, self.seeded)
        self.stored_round = self.loaded_round = self.pristine_round
        if self.pristine is None:
            self.pristine = self.load_theta0()

    def catch_up(self, history: list[tuple[np.ndarray, np.ndarray]], digest: bytes) -> bool:
        """Bring the pristine copy to len(history) rounds; True when its c then matches the server's digest.
        A fresh process starts from the stored state; if that ends out of sync, once more from theta0."""
        for attempt in range(2):
            if self.pristine is None or self.pristine_round > len(history) or attempt:
                self.reset_pristine(None if attempt else history)
            self.pristine.replay_rounds(history[self.pristine_round:])
            self.pristine_round = len(history)
            if fedkseed_messages.c_digest(self.pristine.c) == digest:
                if self.keeps_state and self.pristine_round > self.stored_round:
                    self.store.save(self.pristine, self.pristine_round, history)
                    self.stored_round = self.pristine_round
                return True
        self.pristine = None
        return False

    def train_copy(self) -> SeededModel:
        """The work model at the pristine copy's state, to train on (a fresh process that started from its state
        file builds it like the pristine copy, without reading theta0)."""
        if self._work is None:
            model = self.pristine.model
            self._work = self.seeded(empty_model(model.config.to_json_string(), model.dtype))
        self.work.copy_from(self.pristine)
        self.work_is_theta0 = False
        return self.work


_RUNTIMES: dict[tuple, NodeRuntime] = {}


def runtime(context, cfg: RunConfig, doc: dict) -> NodeRuntime:
    """This process's runtime for the run (cached: ClientApp objects may be rebuilt per message)."""
    partition = int(context.node_config.get("partition-id", 0))
    store = store_for(context.node_config, cfg, partition, bool(doc.get("node_state", False)))
    key = (context.run_id, flags_key(cfg), None if store is None else str(store.path))
    if key not in _RUNTIMES:
        _RUNTIMES.clear()  # one run at a time per process: free the previous run's models
        _RUNTIMES[key] = NodeRuntime(cfg, store)
    return _RUNTIMES[key]


def partition_of(context) -> tuple[int, int]:
    try:
        return int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    except KeyError:
        raise FedKSeedError("SuperNode without partition-id / num-partitions in its node config "
                            "(flower-supernode --node-config \"partition-id=0 num-partitions=2\")") from None
