"""FedKSeed's side of the Flower ServerApp: server.Server (sampling, aggregation, c, Pro probabilities), the record of
every round's Delta c, and what each SuperNode is known to hold (the round it synced to, the Pro probabilities).

Its messages are messages.py's compact records (seed indices and scalars, sparse Delta c), not arrays: a node keeps
its own state between rounds (node.py) and is sent only what it lacks.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from flwr.app import RecordDict

from checkpoint import RunState, model_fingerprint
from client import Client
from flower_app import messages
from flower_app.messages import check_reply
from methods.base import ZO_STEP_FORWARDS, LocalReport
from methods.fedkseed import checkpoint, fresh_state, perturbed_model, restore, server_config
from server import Server


class FedKSeedWire:
    """The server of a FedKSeed (or Pro) run reached through Flower messages."""

    def __init__(self, args: argparse.Namespace, model: torch.nn.Module):
        self.args = args
        self.name = "fedkseed-pro" if args.bias_sampling else "fedkseed"
        self.model = perturbed_model(model, args)
        self.fingerprint = model_fingerprint(self.model)
        self.node_synced: dict[int, int] = {}  # node id -> the round the server last heard it synced to
        self.node_p_round: dict[int, int] = {}  # node id -> the round of the Pro probabilities it holds

    def start(self, clients: list[Client], resume: RunState | None) -> None:
        args = self.args
        self.server = Server(self.model, server_config(args, len(clients)), compile=False if args.no_compile else None)
        self.state = fresh_state(args, self.server, self.fingerprint, clients)
        self.state.extra["engine"] = "flower"
        if resume is not None:
            self.state = restore(self.server, resume, self.fingerprint)

    @property
    def round(self) -> int:
        return self.state.round

    @property
    def base_eval(self) -> dict | None:
        return self.state.base_eval

    @base_eval.setter
    def base_eval(self, value: dict | None) -> None:
        self.state.base_eval = value

    def global_model(self) -> torch.nn.Module:
        return self.server.seeded.model

    def add_node(self, node: int) -> None:
        """A node that passed the set-up query: it holds theta0 and no probabilities until it says otherwise."""
        self.node_synced[node], self.node_p_round[node] = 0, -1

    resync = add_node  # a node that reported being out of sync gets the whole record

    def select(self, round_idx: int) -> list[int]:
        selected = self.server.select_clients()
        self.train_config = self.server.train_config(round_idx)
        return selected

    def message(self, round_idx: int, client_id: int, node: int, name: str) -> RecordDict:
        """The instruction: the Delta c the node lacks (exact: per round; summed: c where it changed), the round's
        local training, and the Pro probabilities if the node does not hold this round's."""
        args, server, deltas = self.args, self.server, self.state.deltas
        base = min(self.node_synced.get(node, 0), round_idx - 1)
        if args.flower_catchup == "exact":
            groups = [(idx.astype(np.int64), val) for idx, val in deltas[base:round_idx - 1]]
        else:
            touched = [idx for idx, _ in deltas[base:round_idx - 1]]
            changed = np.unique(np.concatenate(touched)).astype(np.int64) if touched else np.zeros(0, np.int64)
            groups = [(changed, server.c[changed])]
        probs = self.train_config.probabilities
        ins = messages.Instruction(
            round=round_idx, client=client_id, local=self.train_config.local, catchup=args.flower_catchup,
            base=base, groups=groups, c_digest=messages.c_digest(server.c), pro=probs is not None, p_round=round_idx,
            probabilities=probs if probs is not None and self.node_p_round.get(node) != round_idx else None,
            name=name)
        return messages.encode_instruction(ins, args.K)

    def accept(self, content: RecordDict, round_idx: int, client_id: int, node: int,
               num_examples: int) -> tuple[LocalReport | None, str | None]:
        """Check one reply and note the node's sync state: (the client's report, None) or (None, why rejected)."""
        decoded, reason = check_reply(content, round_idx, client_id, self.args.K, self.server.max_pairs(num_examples))
        if decoded is not None and decoded.synced is not None:
            self.node_synced[node] = max(0, min(decoded.synced, round_idx - 1))
        if decoded is not None and decoded.p_round is not None:
            self.node_p_round[node] = decoded.p_round
        if reason is not None:
            return None, reason
        update = decoded.update
        steps = len(update.seed_indices) + sum(update.skipped.values())
        return LocalReport(client_id=client_id, upload=update, bytes_down=0, bytes_up=0,
                           forward_equivalents=ZO_STEP_FORWARDS * steps, train_loss=update.mean_loss,
                           skipped=update.skipped), None

    def finish_round(self, round_idx: int, reports: list[LocalReport]) -> dict:
        """Sum the accepted uploads per seed into c and record the round's Delta c."""
        for r in reports:
            self.state.last_round[r.client_id] = round_idx - 1
        delta = self.server.apply_round([r.upload for r in reports])
        nonzero = np.flatnonzero(delta)
        self.state.deltas.append((nonzero.astype(np.int32), delta[nonzero]))
        self.state.round = round_idx
        return {}

    def save(self, out: Path) -> None:
        checkpoint(out, self.state, self.server)

    def finish(self, out: Path) -> dict:
        if self.args.save:
            np.savez(out / "coefficients.npz", c=self.server.c, seed_pool=self.server.seed_pool, lr=self.args.lr)
        return {"method": self.name}

    def result(self) -> dict:
        return {"c": self.server.c.copy(), "server": self.server}
