"""The method flags: which method, its learning rate and seeds, FedKSeed's perturbation and Pro sampling, LoRA's
adapters. A method checks how these fit the other groups (Method.check_flags); flags that only one method reads are
declared in that method's home (Method.flags)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from errors import require
from flag_group import FlagGroup, group_defaults
from methods import METHODS
from optimizers.perturbation import KINDS
from optimizers.seed_pool import SEED_RANGE

LORA_FLAGS = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")


@dataclass
class MethodConfig(FlagGroup):
    method: str
    peft: str
    lr: float
    weight_decay: float
    grad_clip: float
    K: int
    zo_eps: float
    perturbation: str
    bias_sampling: bool
    bias_loss_clip: float
    grad_initial: float
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    lora_target_modules: str

    @staticmethod
    def add_flags(parser: argparse.ArgumentParser) -> None:
        p = parser.add_argument_group("method and optimisation")
        p.add_argument("--method", choices=list(METHODS), default="fedkseed",
                       help="fedkseed: zeroth-order steps on K seeds, seeds and scalars on the wire (--bias_sampling: "
                       "FedKSeed-Pro); fedit: LoRA adapters trained with AdamW, FedAvg of the adapters; fedavg: all "
                       "weights trained with AdamW, FedAvg of the weights (the paper's baselines); ferret: SGD steps, "
                       "the update projected per block onto seeded bases, (seed, block, scalar) triples on the wire")
        p.add_argument("--peft", choices=["none", "lora"], default="none",
                       help="fedkseed: perturb and train all weights (none), or LoRA adapters only (lora); fedit is "
                       "always LoRA")
        p.add_argument("--lr", type=float, default=3e-7, help="learning rate")
        p.add_argument("--weight_decay", type=float, default=0.0,
                       help="must be 0: decay breaks the seed-only closed form theta0 - lr*sum c_j z_j")
        p.add_argument("--grad_clip", type=float, default=-100.0,
                       help="skip a step whose |L+ - L-| exceeds this; <= 0 turns it off")
        p.add_argument("-K", type=int, default=4096, dest="K", help="number of candidate seeds")
        p.add_argument("--zo_eps", type=float, default=0.0005, help="perturbation scale eps")
        p.add_argument("--perturbation", choices=KINDS, default="gaussian", help="distribution of z")
        p.add_argument("--bias_sampling", action="store_true", help="FedKSeed-Pro: sample seeds by importance")
        p.add_argument("--bias_loss_clip", type=float, default=1000.0,
                       help="Pro: clip of |g| before averaging a seed's history")
        p.add_argument("--grad_initial", type=float, default=0.0, help="Pro: initial history entry per seed")
        lora = parser.add_argument_group("LoRA (--method fedit, or fedkseed with --peft lora)")
        lora.add_argument("--lora_r", type=int, default=8, help="LoRA rank")
        lora.add_argument("--lora_alpha", type=int, default=16, help="LoRA scaling numerator (scale = alpha / r)")
        lora.add_argument("--lora_dropout", type=float, default=0.05, help="dropout on the LoRA input")
        lora.add_argument("--lora_target_modules", default="q_proj,v_proj",
                          help="comma-separated module names that get adapters (LLaMA-family attention projections)")

    def check(self) -> None:
        require([
            (self.K >= 1, f"-K {self.K}: need at least one seed"),
            (self.K <= SEED_RANGE, f"-K {self.K}: at most {SEED_RANGE} distinct seeds exist"),
            (self.lr > 0, f"--lr {self.lr}: must be positive"),
            (self.zo_eps > 0, f"--zo_eps {self.zo_eps}: must be positive"),
            (self.weight_decay >= 0, f"--weight_decay {self.weight_decay}: must be >= 0"),
            (not self.bias_sampling or self.method == "fedkseed", f"--bias_sampling: FedKSeed-Pro's seed sampling; "
             f"--method {self.method} does not sample seeds by importance"),
            (self.lora_r >= 1, f"--lora_r {self.lora_r}: must be at least 1"),
            (0 <= self.lora_dropout < 1, f"--lora_dropout {self.lora_dropout}: must be in [0, 1)"),
            (self.bias_loss_clip > 0, f"--bias_loss_clip {self.bias_loss_clip}: must be positive"),
            (not (self.peft == "lora" and self.method == "fedavg"),
             "--peft lora: fedavg trains every weight; use --method fedit for LoRA with FedAvg"),
        ])
        self.check_lora_flags()

    def check_lora_flags(self) -> None:
        """LoRA flags only make sense for a method that trains adapters."""
        if self.method == "fedit" or self.peft == "lora":
            return
        defaults = group_defaults(MethodConfig)
        given = [f"--{name}" for name in LORA_FLAGS if getattr(self, name) != defaults[name]]
        require([(not given, f"{', '.join(given)}: LoRA flags need --method fedit or --peft lora "
                  f"(this run is --method {self.method})")])

    @property
    def run_name(self) -> str:
        """The method's name in run directories and logs (FedKSeed with --bias_sampling: fedkseed-pro)."""
        if self.method != "fedkseed":
            return self.method
        return "fedkseed-pro" if self.bias_sampling else "fedkseed"
