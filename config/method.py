"""The method flags: which method, its learning rate and seeds, FedKSeed's perturbation and Pro sampling, LoRA's
adapters. A method checks how these fit the other groups (Method.check_flags); flags that only one method reads are
declared in that method's home (Method.flags)."""
from __future__ import annotations

from dataclasses import dataclass

from errors import require
from flag_group import FlagGroup, flag
from methods import METHODS
from optimizers.perturbation import KINDS
from optimizers.seed_pool import SEED_RANGE

LORA_FLAGS = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")
LORA = "LoRA (--method fedit, or fedkseed with --peft lora)"  # the LoRA flags' --help heading


@dataclass
class MethodConfig(FlagGroup):
    title = "method and optimisation"

    method: str = flag("fedkseed", "fedkseed: zeroth-order steps on K seeds, seeds and scalars on the wire "
                       "(--bias_sampling: FedKSeed-Pro); fedit: LoRA adapters trained with AdamW, FedAvg of the "
                       "adapters; fedavg: all weights trained with AdamW, FedAvg of the weights (the paper's "
                       "baselines); ferret: SGD steps, the update projected per block onto seeded bases, (seed, "
                       "block, scalar) triples on the wire", choices=list(METHODS))
    peft: str = flag("none", "fedkseed: perturb and train all weights (none), or LoRA adapters only (lora); fedit is "
                     "always LoRA", choices=["none", "lora"])
    lr: float = flag(3e-7, "learning rate")
    weight_decay: float = flag(0.0, "must be 0: decay breaks the seed-only closed form theta0 - lr*sum c_j z_j")
    grad_clip: float = flag(-100.0, "skip a step whose |L+ - L-| exceeds this; <= 0 turns it off")
    K: int = flag(4096, "number of candidate seeds", option="-K")
    zo_eps: float = flag(0.0005, "perturbation scale eps")
    perturbation: str = flag("gaussian", "distribution of z", choices=KINDS)
    bias_sampling: bool = flag(False, "FedKSeed-Pro: sample seeds by importance")
    bias_loss_clip: float = flag(1000.0, "Pro: clip of |g| before averaging a seed's history")
    grad_initial: float = flag(0.0, "Pro: initial history entry per seed")
    lora_r: int = flag(8, "LoRA rank", section=LORA)
    lora_alpha: int = flag(16, "LoRA scaling numerator (scale = alpha / r)", section=LORA)
    lora_dropout: float = flag(0.05, "dropout on the LoRA input", section=LORA)
    lora_target_modules: str = flag("q_proj,v_proj", "comma-separated module names that get adapters (LLaMA-family "
                                    "attention projections)", section=LORA)

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
        defaults = MethodConfig.defaults()
        given = [f"--{name}" for name in LORA_FLAGS if getattr(self, name) != defaults[name]]
        require([(not given, f"{', '.join(given)}: LoRA flags need --method fedit or --peft lora "
                  f"(this run is --method {self.method})")])

    @property
    def run_name(self) -> str:
        """The method's name in run directories and logs (FedKSeed with --bias_sampling: fedkseed-pro)."""
        if self.method != "fedkseed":
            return self.method
        return "fedkseed-pro" if self.bias_sampling else "fedkseed"
