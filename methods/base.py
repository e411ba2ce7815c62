"""The seam between the engines and the methods: what a method does in a round, and what a client's work cost.

The round loop (rounds.py) and its transports (in-process clients; a Flower Grid) move work to clients and record
metrics; they know nothing of how a method trains or aggregates. A method knows nothing of the engine that runs it.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from client import Client
from flag_group import FlagGroup

if TYPE_CHECKING:
    from config import RunConfig

ZO_STEP_FORWARDS = 2  # a zeroth-order step: two forward passes
FO_STEP_FORWARDS = 3  # a first-order step: a forward and a backward, counted as two forwards


@dataclass
class LocalReport:
    """One client's round: its upload (method-specific), what crossed the wire, and what the work cost."""

    client_id: int
    upload: object
    bytes_down: int
    bytes_up: int
    forward_equivalents: int
    train_loss: float
    seconds: float = 0.0
    peak_bytes: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    # work that is neither a forward nor a backward pass (Ferret's catch-up and projection), counted as the forwards
    # the same client's own passes took in the same time: a measurement, like seconds
    overhead_forward_equivalents: float = 0.0


def summed_catch_up_bytes(deltas: list[tuple[np.ndarray, np.ndarray]], since_round: int) -> int:
    """The paper's catch-up of a client that last synced to round `since_round`, for a method whose model is linear
    in a coefficient table c (FedKSeed's K seeds, Ferret's K x L): the entries of c that changed in the rounds since,
    each an int32 index and a float64 value. In-process runs charge every client this; the Flower engine measures
    what it sends (its exact catch-up sends the rounds themselves)."""
    touched = [idx for idx, _ in deltas[since_round:]]
    return 12 * (len(np.unique(np.concatenate(touched))) if touched else 0)


class Method(ABC):
    """A federated fine-tuning method: the server's plan for a round, a client's local work, the server's
    combination of uploads, its state for checkpoints, and the model to evaluate and export."""

    name: str
    fingerprint: str  # of the base model (as the method wraps it): every remote client must hold the same
    round: int = 0  # the last finished round
    base_eval: dict | None = None
    flags: type[FlagGroup] | None = None  # the method's own flags, declared in its home (config builds them)

    @staticmethod
    def weight_copies(cfg: RunConfig) -> tuple[float, str]:
        """How many weight-sized buffers an in-process run holds at its peak, and what they are (for the refusal of
        a run that cannot fit, before loading: modeling.check_fits)."""
        return 2, "the server's model and the clients' copy"

    @staticmethod
    def check_flags(cfg: RunConfig) -> None:
        """Refuse (FedKSeedError, one line) a flag combination this method cannot run; config.validate calls it."""
        return None  # most methods run with any flags the parser accepts

    @abstractmethod
    def select_clients(self, round_idx: int) -> list[int]:
        """The ids of the round's clients (and whatever the server prepares for the round)."""

    @abstractmethod
    def train_client(self, client: Client, round_idx: int, progress=None) -> LocalReport:
        """What one client computes from what the server sends it, and uploads."""

    @abstractmethod
    def finish_round(self, round_idx: int, reports: list[LocalReport]) -> dict:
        """Combine the round's uploads into the global model; returns the method's own metrics of the round."""

    @abstractmethod
    def global_model(self) -> torch.nn.Module:
        """The global model as it stands (for evaluation)."""

    @abstractmethod
    def save(self, out: Path) -> None:
        """Checkpoint the run's state into the run directory (atomically)."""

    @abstractmethod
    def finish(self, out: Path) -> dict:
        """At the end of the run: write the method's final files into the run directory; returns its entries of
        summary.json."""


class ArrayClient(ABC):
    """The client side of an ArrayMethod: trains from the arrays it receives and holds no server state, so a node
    builds only this (one copy of the model)."""

    fingerprint: str  # of the base model it was built around

    @abstractmethod
    def local_work(self, client: Client, round_idx: int, received: dict[str, np.ndarray], progress=None) -> LocalReport:
        """The client's round from what it received (anywhere: in-process or on a node); its upload is arrays."""


class ArrayMethod(Method):
    """A method whose messages are named arrays: the server sends a client arrays, the client trains from them and
    uploads arrays. The engines carry them as they are (Flower: one ArrayRecord each way) and measure them."""

    @abstractmethod
    def download(self, client_id: int, round_idx: int, since: int | None = None) -> dict[str, np.ndarray]:
        """What the server sends the client this round; `since`: the last round whose state the receiving side
        said it holds (None: the method's own record of the client)."""

    @abstractmethod
    def client_side(self) -> ArrayClient:
        """The client side that trains in this process (in-process runs)."""

    @staticmethod
    @abstractmethod
    def build_client(cfg: RunConfig, model: torch.nn.Module) -> ArrayClient:
        """The client side alone, around the loaded base model: what a Flower node trains with."""

    @abstractmethod
    def check_upload(self, upload: dict[str, np.ndarray]) -> str | None:
        """Why an upload from an untrusted client cannot be combined (names, shapes, dtypes, values), or None."""

    def train_client(self, client: Client, round_idx: int, progress=None) -> LocalReport:
        return self.client_side().local_work(client, round_idx, self.download(client.client_id, round_idx), progress)
