"""The evaluation flags: which held-out records, which metric, how often."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from errors import require
from flag_group import FlagGroup, parse_bool


@dataclass
class EvalConfig(FlagGroup):
    eval_metric: str
    eval_every: int
    eval_examples: int
    val_examples: int
    rouge_every: int
    eval_base: bool
    eval_batch_size: int
    max_new_tokens: int

    @staticmethod
    def add_flags(parser: argparse.ArgumentParser) -> None:
        ev = parser.add_argument_group("evaluation")
        ev.add_argument("--eval_metric", choices=["rouge", "loss"], default="rouge",
                        help="metric evaluated at the end (eval loss is evaluated every --eval_every rounds)")
        ev.add_argument("--eval_every", type=int, default=1,
                        help="rounds between eval-loss evaluations; 0 = at the end")
        ev.add_argument("--eval_examples", type=int, default=0, help="held-out examples evaluated; 0 = all")
        ev.add_argument("--val_examples", type=int, default=0,
                        help="further held-out examples, disjoint from the evaluated ones, whose loss is logged as "
                             "val_loss at every evaluation (to tune on records that are not reported); 0 = none")
        ev.add_argument("--rouge_every", type=int, default=0,
                        help="rounds between Rouge-L evaluations besides round 0 and the last (--eval_metric "
                             "rouge); 0 = none")
        ev.add_argument("--eval_base", type=parse_bool, nargs="?", const=True, default=True, metavar="BOOL",
                        help="evaluate the base model (loss and metric) as round 0, as the authors' code; "
                        "--eval_base false / --no_eval_base skips it")
        ev.add_argument("--no_eval_base", dest="eval_base", action="store_false", help=argparse.SUPPRESS)
        ev.add_argument("--eval_batch_size", type=int, default=8, help="batch size of evaluation")
        ev.add_argument("--max_new_tokens", type=int, default=128, help="greedy generation length for Rouge-L")

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
