"""The Flower ServerApp's side of a method that ships arrays (methods.base.ArrayMethod: --method fedit, fedavg): the
method itself runs on the server (sampling, FedAvg, checkpoints); each selected client's download goes to its node
as an ArrayRecord and its upload comes back as one, checked by the method before it is combined."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from flwr.app import RecordDict

from checkpoint import TensorState, model_fingerprint
from client import Client
from flower_app import array_messages
from methods import build_method
from methods.base import ArrayMethod, LocalReport


class ArrayWire:
    """The server of an array-shipping method reached through Flower messages."""

    def __init__(self, args: argparse.Namespace, model: torch.nn.Module):
        self.args = args
        self.model = model
        self.fingerprint = model_fingerprint(model)  # of the base model: every node loads the same

    def start(self, clients: list[Client], resume: TensorState | None) -> None:
        method = build_method(self.args, self.model, clients, resume)
        assert isinstance(method, ArrayMethod)
        self.method = method

    @property
    def round(self) -> int:
        return self.method.round

    @property
    def base_eval(self) -> dict | None:
        return self.method.base_eval

    @base_eval.setter
    def base_eval(self, value: dict | None) -> None:
        self.method.base_eval = value

    def global_model(self) -> torch.nn.Module:
        return self.method.global_model()

    def add_node(self, node: int) -> None:
        """Nodes keep nothing between rounds: every message carries what the client needs."""

    resync = add_node

    def select(self, round_idx: int) -> list[int]:
        return self.method.select_clients(round_idx)

    def message(self, round_idx: int, client_id: int, node: int, name: str) -> RecordDict:
        return array_messages.encode_instruction(array_messages.ArrayInstruction(
            round=round_idx, client=client_id, name=name, tensors=self.method.download(client_id, round_idx)))

    def accept(self, content: RecordDict, round_idx: int, client_id: int, node: int,
               num_examples: int) -> tuple[LocalReport | None, str | None]:
        report, reason = array_messages.decode_reply(content, round_idx, client_id)
        if report is not None:
            reason = self.method.check_upload(report.upload)
        return (None, reason) if reason is not None else (report, None)

    def finish_round(self, round_idx: int, reports: list[LocalReport]) -> dict:
        self.method.finish_round(round_idx, reports)
        return {}

    def save(self, out: Path) -> None:
        self.method.save(out)

    def finish(self, out: Path) -> dict:
        return self.method.finish(out)

    def result(self) -> dict:
        return {"method": self.method}
