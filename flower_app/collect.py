"""A round's messages on the Grid: each selected client's message (the method's wire makes it: FedKSeed's the
Delta c the node lacks, FedIT's the adapters) goes to the SuperNode hosting it. A node hosting several selected
clients gets them one after the other (its state is sequential), the next as soon as its previous reply arrives;
nodes proceed independently, so a dead node costs only its own clients.

Replies are checked as they arrive (the wire's accept: for FedKSeed server.validate_update, the in-process check);
a rejected one is logged and dropped; a node that reports an error of its own (out of sync) gets the client again
after the wire's resync (FedKSeed: the full history), once. At the round's deadline (--round_timeout, default
--flower_timeout) every client without a reply is lost for the round, and so is a client whose node sent a Flower
error (its ClientApp failed, or the SuperLink reports the node unavailable) or whose node was lost earlier in the
round.
"""
from __future__ import annotations

import logging
import time

from flwr.app import Message

from flower_app import wire
from flower_app.wire import NODE_REPORTED

logger = logging.getLogger("fedkseed")

POLL_SECONDS = 0.2  # between pulls for replies


def collect(owner, round_idx: int, selected: list) -> tuple[dict, list, list, list, list]:
    """Run the round's messages for `owner` (the FlowerClients transport: grid, hosts, names, cfg, and the method's
    wire: message(), accept(), resync()). Returns the accepted reports by client id, the rejected and the lost
    clients (dicts with reasons), and the measured sizes of the messages down and up."""
    cfg, grid = owner.cfg, owner.grid
    timeout = cfg.engine.round_timeout or cfg.engine.flower_timeout
    deadline = time.monotonic() + timeout
    late = f"no reply within --round_timeout ({timeout:g} s)"
    size = {c.client_id: len(c) for c in selected}
    queues: dict[int, list[int]] = {}
    for c in selected:
        queues.setdefault(owner.hosts[c.client_id], []).append(c.client_id)
    in_flight: dict[str, tuple[int, int]] = {}  # message id -> (client, node)
    retried: set[int] = set()
    reports, rejected, lost, down, up = {}, [], [], [], []

    def send_next(node: int) -> None:
        if not queues[node]:
            return
        cid = queues[node].pop(0)
        content = owner.wire.message(round_idx, cid, node, owner.names.get(cid, ""))
        msg = Message(content, node, wire.TRAIN, group_id=str(round_idx))
        down.append(wire.measure(msg))
        (msg_id,) = grid.push_messages([msg])
        in_flight[msg_id] = (cid, node)

    def lose(node: int, reason: str, cids: list[int]) -> None:
        for cid in cids:
            lost.append({"client": cid, "node": node, "reason": reason})
            logger.warning("round %d: lost client %d (node %d): %s", round_idx, cid, node, reason)
        queues[node] = []

    for node in queues:
        send_next(node)
    while in_flight:
        replies = list(grid.pull_messages(list(in_flight))) if time.monotonic() < deadline else []
        if not replies:
            if time.monotonic() >= deadline:
                for cid, node in in_flight.values():
                    lose(node, late, [cid, *queues[node]])
                break
            time.sleep(POLL_SECONDS)
            continue
        for reply in replies:
            if reply.metadata.reply_to_message_id not in in_flight:
                continue  # not a reply to this round's messages
            cid, node = in_flight.pop(reply.metadata.reply_to_message_id)
            if reply.has_error():
                lose(node, f"node error: {reply.error.reason}", [cid, *queues[node]])
                continue
            up.append(wire.measure(reply))
            report, reason = owner.wire.accept(reply.content, round_idx, cid, node, size[cid])
            if report is not None:
                reports[cid] = report
            if reason is not None and reason.startswith(NODE_REPORTED) and cid not in retried:
                retried.add(cid)
                owner.wire.resync(node)
                queues[node].insert(0, cid)
                logger.warning("round %d: client %d: %s; resending the full history", round_idx, cid, reason)
            elif reason is not None:
                logger.warning("round %d: rejected the reply for client %d (node %d): %s", round_idx, cid, node,
                               reason)
                rejected.append({"client": cid, "reason": reason})
            send_next(node)
    return reports, rejected, lost, down, up
