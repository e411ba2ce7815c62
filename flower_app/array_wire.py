"""The Flower messages of a method that ships arrays (methods.base.ArrayMethod: --method fedit, fedavg): each
selected client's download goes to its node as an ArrayRecord and its upload comes back as one, checked by the
method before the round loop combines it."""
from __future__ import annotations

from flwr.app import RecordDict

from flower_app import array_messages
from methods.base import ArrayMethod, LocalReport


class ArrayWire:
    """An array-shipping method's side of the Flower messages."""

    def __init__(self, method: ArrayMethod):
        self.method = method
        self.node_synced: dict[int, int] = {}  # node id -> the round its copy holds, as its last reply said

    def add_node(self, node: int) -> None:
        """A node that passed the set-up query holds theta0 (a method whose messages carry its tensors whole
        ignores this)."""
        self.node_synced[node] = 0

    resync = add_node  # a node that reported being out of sync is sent everything from theta0

    def message(self, round_idx: int, client_id: int, node: int, name: str) -> RecordDict:
        tensors = self.method.download(client_id, round_idx, since=self.node_synced.get(node, 0))
        return array_messages.encode_instruction(array_messages.ArrayInstruction(
            round=round_idx, client=client_id, name=name, tensors=tensors))

    def accept(self, content: RecordDict, round_idx: int, client_id: int, node: int,
               num_examples: int) -> tuple[LocalReport | None, str | None]:
        report, reason = array_messages.decode_reply(content, round_idx, client_id)
        if report is not None:
            reason = self.method.check_upload(report.upload)
        if reason is None and "synced" in report.upload:  # the round the node's copy now holds
            self.node_synced[node] = max(0, min(int(report.upload["synced"][0]), round_idx - 1))
        return (None, reason) if reason is not None else (report, None)
