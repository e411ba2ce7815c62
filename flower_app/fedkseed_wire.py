"""FedKSeed's messages on the Flower Grid, around the method's own server (methods/fedkseed.py: sampling,
aggregation, c, the record of every round's Delta c, Pro): what each SuperNode is known to hold (the round it
synced to, the Pro probabilities), the instruction that sends a node only what it lacks, and the checks of a reply.

The records are fedkseed_messages.py's compact ones (seed indices and scalars, sparse Delta c), not arrays: a node
keeps its own state between rounds (node.py, node_runtime.py).
"""
from __future__ import annotations

import numpy as np
from flwr.app import RecordDict

from flower_app import fedkseed_messages
from flower_app.fedkseed_messages import check_reply
from methods.base import ZO_STEP_FORWARDS, LocalReport
from methods.fedkseed import FedKSeed


class FedKSeedWire:
    """A FedKSeed (or Pro) method's side of the Flower fedkseed_messages."""

    def __init__(self, method: FedKSeed):
        self.method = method
        self.node_synced: dict[int, int] = {}  # node id -> the round the server last heard it synced to
        self.node_p_round: dict[int, int] = {}  # node id -> the round of the Pro probabilities it holds

    def add_node(self, node: int) -> None:
        """A node that passed the set-up query: it holds theta0 and no probabilities until it says otherwise."""
        self.node_synced[node], self.node_p_round[node] = 0, -1

    resync = add_node  # a node that reported being out of sync gets the whole record

    def message(self, round_idx: int, client_id: int, node: int, name: str) -> RecordDict:
        """The instruction: the Delta c the node lacks (exact: per round; summed: c where it changed), the round's
        local training, and the Pro probabilities if the node does not hold this round's."""
        method = self.method
        cfg, c, deltas, config = method.cfg, method.c, method.state.deltas, method.train_config
        base = min(self.node_synced.get(node, 0), round_idx - 1)
        if cfg.engine.flower_catchup == "exact":
            groups = [(idx.astype(np.int64), val) for idx, val in deltas[base:round_idx - 1]]
        else:
            touched = [idx for idx, _ in deltas[base:round_idx - 1]]
            changed = np.unique(np.concatenate(touched)).astype(np.int64) if touched else np.zeros(0, np.int64)
            groups = [(changed, c[changed])]
        probs = config.probabilities
        ins = fedkseed_messages.Instruction(
            round=round_idx, client=client_id, local=config.local, catchup=cfg.engine.flower_catchup,
            base=base, groups=groups, c_digest=fedkseed_messages.c_digest(c), pro=probs is not None, p_round=round_idx,
            probabilities=probs if probs is not None and self.node_p_round.get(node) != round_idx else None,
            name=name)
        return fedkseed_messages.encode_instruction(ins, cfg.method.K)

    def accept(self, content: RecordDict, round_idx: int, client_id: int, node: int,
               num_examples: int) -> tuple[LocalReport | None, str | None]:
        """Check one reply and note the node's sync state: (the client's report, None) or (None, why rejected)."""
        method = self.method
        decoded, reason = check_reply(content, round_idx, client_id, method.cfg.method.K,
                                      method.server.max_pairs(num_examples))
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
