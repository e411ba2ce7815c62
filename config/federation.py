"""The federation flags: how many clients, which of them a round samples, how much each trains, how the server
combines their uploads, and the seed of every random choice."""
from __future__ import annotations

from dataclasses import dataclass

from errors import require
from flag_group import FlagGroup, flag


@dataclass
class FederationConfig(FlagGroup):
    title = "federation"

    num_clients: int = flag(200, "clients (Dolly); on Natural Instructions the number of usable train tasks")
    m: float = flag(0.05, "fraction of clients sampled a round", option="-m")
    rounds: int = flag(40, "communication rounds")
    local_step: int = flag(200, "local MeZO steps a round (batch mode)")
    batch_or_epoch: str = flag("batch", "local_step steps, or one epoch over the client's data",
                               choices=["batch", "epoch"])
    equal_weight: bool = flag(False, "weight clients equally in aggregation instead of by data size")
    client_sync: str = flag("copy", "how the in-process client copy reaches the global model: a tensor copy, or the "
                            "paper's catch-up by replaying the change in c (what a remote client does)",
                            choices=["copy", "replay"])
    aggregation: str = flag("mean", "per-seed aggregation of the clients' g: the paper's weighted mean, or a robust "
                            "one", choices=["mean", "median", "trimmed_mean"])
    trim_fraction: float = flag(0.2, "trimmed_mean: share of a seed's client contributions cut at each end")
    max_abs_grad: float = flag(0.0, "server-side bound: clip every uploaded g to [-B, B] before aggregating; 0 = off")
    seed: int = flag(42, "seed of every random choice of the run")

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
