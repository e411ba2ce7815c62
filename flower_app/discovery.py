"""Before round 1: wait for the SuperNodes, ask each which clients it hosts, and check its base model and seed pool.

Shared data (--flower_data shared): every node computed the same split and hosts clients i mod num-partitions.
Node data (--flower_data node): each node read only its own file and names the clients in it (client-column
values) with their sizes; the server numbers all of them in sorted name order, which is the order the in-process
engine gives the same records read as one file, so the two runs draw the same clients and seeds.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from flwr.serverapp import Grid

from errors import FedKSeedError
from flower_app import wire


@dataclass
class RemoteClient:
    """A client whose data lives on a SuperNode (--flower_data node): the server knows its id, name and size."""

    client_id: int
    name: str
    size: int

    def __len__(self) -> int:
        return self.size


@dataclass
class Discovery:
    nodes: list[int]
    hosts: dict[int, int] = field(default_factory=dict)  # shared data: client id -> node id
    held: dict[str, tuple[int, int]] = field(default_factory=dict)  # node data: client name -> (node id, size)
    holds: dict[int, tuple[int, str, str]] = field(default_factory=dict)  # node -> (partition, fingerprint, pool)

    def check(self, fingerprint: str, pool_digest: str) -> None:
        """Refuse the run when a node holds another base model or seed pool than the server."""
        for node, (partition, theirs, pool) in self.holds.items():
            if theirs != fingerprint or pool != pool_digest:
                raise FedKSeedError(f"Flower: SuperNode {node} (partition {partition}) holds a different base "
                                    "model or seed pool than the server (fingerprint mismatch)")

    def remote_clients(self) -> tuple[list[RemoteClient], dict[int, int]]:
        """Node data: the clients in sorted name order, and client id -> node id."""
        clients = [RemoteClient(i, name, size) for i, (name, (_, size)) in enumerate(sorted(self.held.items()))]
        if len(clients) < 2:
            raise FedKSeedError(f"Flower: the SuperNodes hold {len(clients)} client(s); a federation needs two")
        return clients, {c.client_id: self.held[c.name][0] for c in clients}


def wait_for_nodes(grid: Grid, expected: int, timeout: float) -> list[int]:
    """The node ids, once `expected` SuperNodes are connected."""
    deadline = time.time() + timeout
    while len(nodes := sorted(grid.get_node_ids())) < expected:
        if time.time() > deadline:
            raise FedKSeedError(f"Flower: {len(nodes)} SuperNodes connected, {expected} expected")
        time.sleep(0.5)
    return nodes


def discover(grid: Grid, expected: int, timeout: float) -> Discovery:
    """Query every node: which clients it hosts and what it holds (Discovery.check compares that with the
    server's); refuse a client two nodes hold."""
    found = Discovery(nodes=wait_for_nodes(grid, expected, timeout))
    for reply in grid.send_and_receive(wire.query_messages(found.nodes), timeout=timeout):
        node = reply.metadata.src_node_id
        if reply.has_error():
            raise FedKSeedError(f"Flower: SuperNode {node} failed its set-up: {reply.error.reason}")
        rec = reply.content.config_records[wire.QUERY_RECORD]
        found.holds[node] = (rec["partition"], rec["fingerprint"], rec["pool_digest"])
        for cid in rec["clients"]:
            found.hosts.setdefault(int(cid), node)
        for name, size in zip(rec.get("names", []), rec.get("sizes", []), strict=True):
            if name in found.held:
                raise FedKSeedError(f"Flower: client {name!r} is held by two SuperNodes (partition "
                                    f"{rec['partition']} and another); each client's records must live on one node")
            found.held[name] = (node, int(size))
    return found
