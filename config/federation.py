"""The federation flags: how many clients, which of them a round samples, how much each trains, how the server
combines their uploads, and the seed of every random choice."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from errors import require
from flag_group import FlagGroup


@dataclass
class FederationConfig(FlagGroup):
    num_clients: int
    m: float
    rounds: int
    local_step: int
    batch_or_epoch: str
    equal_weight: bool
    client_sync: str
    aggregation: str
    trim_fraction: float
    max_abs_grad: float
    seed: int

    @staticmethod
    def add_flags(parser: argparse.ArgumentParser) -> None:
        fed = parser.add_argument_group("federation")
        fed.add_argument("--num_clients", type=int, default=200,
                         help="clients (Dolly); on Natural Instructions the number of usable train tasks")
        fed.add_argument("-m", type=float, default=0.05, dest="m", help="fraction of clients sampled a round")
        fed.add_argument("--rounds", type=int, default=40, help="communication rounds")
        fed.add_argument("--local_step", type=int, default=200, help="local MeZO steps a round (batch mode)")
        fed.add_argument("--batch_or_epoch", choices=["batch", "epoch"], default="batch",
                         help="local_step steps, or one epoch over the client's data")
        fed.add_argument("--equal_weight", action="store_true",
                         help="weight clients equally in aggregation instead of by data size")
        fed.add_argument("--client_sync", choices=["copy", "replay"], default="copy",
                         help="how the in-process client copy reaches the global model: a tensor copy, or "
                         "the paper's catch-up by replaying the change in c (what a remote client does)")
        fed.add_argument("--aggregation", choices=["mean", "median", "trimmed_mean"], default="mean",
                         help="per-seed aggregation of the clients' g: the paper's weighted mean, or a robust one")
        fed.add_argument("--trim_fraction", type=float, default=0.2,
                         help="trimmed_mean: share of a seed's client contributions cut at each end")
        fed.add_argument("--max_abs_grad", type=float, default=0.0,
                         help="server-side bound: clip every uploaded g to [-B, B] before aggregating; 0 = off")
        fed.add_argument("--seed", type=int, default=42, help="seed of every random choice of the run")

    def check(self) -> None:
        require([
            (0 < self.m <= 1, f"-m {self.m}: the client fraction must be in (0, 1]"),
            (self.num_clients >= 1, f"--num_clients {self.num_clients}: need at least one client"),
            (self.rounds >= 1, f"--rounds {self.rounds}: need at least one round"),
            (self.local_step >= 1, f"--local_step {self.local_step}: need at least one step"),
            (0 <= self.trim_fraction < 0.5, f"--trim_fraction {self.trim_fraction}: must be in [0, 0.5)"),
            (self.max_abs_grad >= 0, f"--max_abs_grad {self.max_abs_grad}: must be >= 0"),
            (self.seed >= 0, f"--seed {self.seed}: must be a non-negative integer"),
        ])
