"""The evaluation flags: which held-out records, which metric, how often."""
from __future__ import annotations

from dataclasses import dataclass

from errors import require
from flag_group import FlagGroup, flag


@dataclass
class EvalConfig(FlagGroup):
    title = "evaluation"

    eval_metric: str = flag("rouge", "metric evaluated at the end (eval loss is evaluated every --eval_every rounds)",
                            choices=["rouge", "loss"])
    eval_every: int = flag(1, "rounds between eval-loss evaluations; 0 = at the end")
    eval_examples: int = flag(0, "held-out examples evaluated; 0 = all")
    val_examples: int = flag(0, "further held-out examples, disjoint from the evaluated ones, whose loss is logged as "
                             "val_loss at every evaluation (to tune on records that are not reported); 0 = none")
    rouge_every: int = flag(0, "rounds between Rouge-L evaluations besides round 0 and the last (--eval_metric "
                            "rouge); 0 = none")
    eval_base: bool = flag(True, "evaluate the base model (loss and metric) as round 0, as the authors' code; "
                           "--eval_base false / --no_eval_base skips it", negatable=True)
    eval_batch_size: int = flag(8, "batch size of evaluation")
    max_new_tokens: int = flag(128, "greedy generation length for Rouge-L")

    def check(self) -> None:
        require([
            (self.eval_every >= 0, f"--eval_every {self.eval_every}: must be >= 0"),
            (self.eval_examples >= 0, f"--eval_examples {self.eval_examples}: must be >= 0"),
            (self.val_examples >= 0, f"--val_examples {self.val_examples}: must be >= 0"),
            (self.val_examples == 0 or self.eval_examples > 0, f"--val_examples {self.val_examples}: needs "
             "--eval_examples N > 0 (with 0 every held-out record is evaluated, none is left to validate on)"),
            (self.rouge_every >= 0, f"--rouge_every {self.rouge_every}: must be >= 0"),
            (self.eval_batch_size >= 1, f"--eval_batch_size {self.eval_batch_size}: must be at least 1"),
            (self.max_new_tokens >= 1, f"--max_new_tokens {self.max_new_tokens}: must be at least 1"),
        ])
