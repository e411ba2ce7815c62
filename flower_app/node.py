"""What a SuperNode does with a message: the set-up query's reply, and a round's training of one client (FedKSeed:
catch up to the global model from the node's synced state, train, reply with its (seed, g) pairs; an array method:
train from the received tensors), with the reply's injected faults when a test asks for them.

Node state (context.state["fedkseed.node"], a ConfigRecord): synced round; exact mode: every round's Delta c
(the node's record of the global trajectory); summed mode: its copy of the global c; Pro: the last probabilities
and the round they are for. The models and data live in the process's runtime (node_runtime.py).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from flwr.app import ConfigRecord, RecordDict

from client import ClientUpdate, TrainConfig
from flower_app import array_messages, fedkseed_messages, wire
from flower_app.faults import apply_array_fault, apply_fault
from flower_app.fedkseed_messages import Instruction
from flower_app.node_runtime import NodeRuntime, partition_of, runtime
from flower_app.run_file import read_run_file
from methods.ferret import OutOfSync

logger = logging.getLogger("fedkseed.flower")

NODE_RECORD = "fedkseed.node"


# --- node state -------------------------------------------------------------------------------------------------

@dataclass
class NodeState:
    synced: int = 0
    history: list[tuple[np.ndarray, np.ndarray]] | None = None  # exact: Delta c of rounds 1 .. synced
    c: np.ndarray | None = None  # summed: the global c at round `synced`
    p_round: int = -1
    p: np.ndarray | None = None

    @classmethod
    def load(cls, state: RecordDict, k: int) -> NodeState:
        rec = state.config_records.get(NODE_RECORD)
        if rec is None:
            return cls(history=[], c=np.zeros(k))
        c = rec.get("c")
        p = rec.get("p")
        return cls(synced=int(rec["synced"]), history=fedkseed_messages.unpack_groups(rec, k),
                   c=np.frombuffer(c, dtype="<f8").astype(np.float64) if c else np.zeros(k),
                   p_round=int(rec.get("p_round", -1)),
                   p=None if p is None else np.frombuffer(p, dtype="<f8").astype(np.float64))

    def save(self, state: RecordDict, k: int, catchup: str) -> None:
        rec = {"synced": self.synced, "p_round": self.p_round, **fedkseed_messages.pack_groups(self.history or [], k)}
        if catchup == "summed":
            rec["c"] = np.asarray(self.c, dtype="<f8").tobytes()
        if self.p is not None:
            rec["p"] = np.asarray(self.p, dtype="<f8").tobytes()
        state[NODE_RECORD] = ConfigRecord(rec)


# --- the two handlers -------------------------------------------------------------------------------------------

def handle_query(context) -> RecordDict:
    cfg, doc = read_run_file(context)
    rt = runtime(context, cfg, doc)
    partition, partitions = partition_of(context)
    held = None if rt.held is None else {name: len(c) for name, c in rt.held.items()}
    return wire.encode_query_reply(partition, partitions, rt.hosted(partition, partitions), rt.fingerprint,
                                   wire.array_digest(rt.seed_pool), held)


def handle_train(content: RecordDict, context) -> RecordDict:
    cfg, doc = read_run_file(context)
    rt = runtime(context, cfg, doc)
    if array_messages.is_array_message(content):
        return train_arrays(rt, content, partition_of(context), doc.get("faults", {}))
    ins = fedkseed_messages.decode_instruction(content, rt.k)
    state = NodeState.load(context.state, rt.k)
    reply = train(rt, ins, state, partition_of(context))
    state.save(context.state, rt.k, ins.catchup)
    fault = doc.get("faults", {}).get(str(ins.client))
    name = fedkseed_messages.REPLY_RECORD
    if fault and name in reply.config_records and "error" not in reply[name]:
        apply_fault(reply[name], fault, ins)
    return reply


def train(rt: NodeRuntime, ins: Instruction, state: NodeState, partition: tuple[int, int]) -> RecordDict:
    """Catch up to round ins.round - 1, train client ins.client locally, and encode the reply."""
    def error(reason: str) -> RecordDict:
        logger.warning("node: round %d client %d: %s", ins.round, ins.client, reason)
        return fedkseed_messages.encode_error_reply(reason, state.synced, state.p_round)

    client = rt.client_for(ins.client, ins.name, partition)
    if client is None:
        named = f" ({ins.name})" if ins.name else ""
        return error(f"client {ins.client}{named} is not hosted on partition {partition[0]}")
    if ins.base > state.synced:
        return error(f"out of sync: the instruction starts after round {ins.base}, the node is at {state.synced}")
    if ins.probabilities is not None:
        state.p, state.p_round = ins.probabilities, ins.p_round
    if ins.pro and state.p_round != ins.p_round:
        return error(f"no Pro probabilities for round {ins.p_round}")
    if ins.catchup == "exact":
        if len(ins.groups) != ins.round - 1 - ins.base:
            return error(f"{len(ins.groups)} rounds of Delta c for rounds {ins.base + 1} .. {ins.round - 1}")
        state.history = (state.history or [])[:ins.base] + ins.groups
        state.synced = ins.round - 1
        if not rt.catch_up(state.history, ins.c_digest):
            state.synced, state.history = 0, []
            return error("out of sync: the caught-up c differs from the server's")
        work = rt.train_copy()
        target = rt.pristine.c
    else:
        for indices, values in ins.groups:
            state.c[indices] = values
        state.synced = ins.round - 1
        if fedkseed_messages.c_digest(state.c) != ins.c_digest:
            state.synced, state.c = 0, np.zeros(rt.k)
            return error("out of sync: the caught-up c differs from the server's")
        target = state.c.copy()
        work = rt.work
        rt.work_is_theta0 = False
    config = TrainConfig(round=ins.round, local=ins.local, probabilities=state.p if ins.pro else None)
    update: ClientUpdate = client.train(work, target, config)
    return fedkseed_messages.encode_reply(update, state.synced, state.p_round)


def train_arrays(rt: NodeRuntime, content: RecordDict, partition: tuple[int, int], faults: dict) -> RecordDict:
    """An array-shipping method's round for one client: train from the received tensors, reply with the upload."""
    ins = array_messages.decode_instruction(content)
    client = rt.client_for(ins.client, ins.name, partition)
    if client is None:
        return array_messages.encode_error_reply(f"client {ins.client} is not hosted on partition {partition[0]}")
    try:
        report = rt.array_client.local_work(client, ins.round, ins.tensors)
    except OutOfSync as exc:  # the server resends from theta0
        return array_messages.encode_error_reply(str(exc))
    if faults.get(str(ins.client)):
        apply_array_fault(report, faults[str(ins.client)])
    return array_messages.encode_reply(ins.round, report)
