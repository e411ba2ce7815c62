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

    def add_node(self, node: int) -> None:
        """Nodes keep nothing between rounds: every message carries what the client needs."""

    resync = add_node

    def message(self, round_idx: int, client_id: int, node: int, name: str) -> RecordDict:
        return array_messages.encode_instruction(array_messages.ArrayInstruction(
            round=round_idx, client=client_id, name=name, tensors=self.method.download(client_id, round_idx)))

    def accept(self, content: RecordDict, round_idx: int, client_id: int, node: int,
               num_examples: int) -> tuple[LocalReport | None, str | None]:
        report, reason = array_messages.decode_reply(content, round_idx, client_id)
        if report is not None:
            reason = self.method.check_upload(report.upload)
        return (None, reason) if reason is not None else (report, None)
