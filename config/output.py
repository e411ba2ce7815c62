"""The output flags: where a run's directory is, what it writes there, and resuming it."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from errors import require
from flag_group import FlagGroup
from run_report import CHOICES, check_report_to


@dataclass
class OutputConfig(FlagGroup):
    log: bool
    report_to: str
    log_root: str
    output_dir: str | None
    save: bool
    save_every: int
    resume: str | None
    quiet: bool

    @staticmethod
    def add_flags(parser: argparse.ArgumentParser) -> None:
        out = parser.add_argument_group("output")
        out.add_argument("--log", action="store_true", help="also write the log to <output_dir>/train.log")
        out.add_argument("--report_to", choices=CHOICES, default="none",
                         help="also send each metrics.jsonl row to TensorBoard (<output_dir>/tensorboard/) or to "
                         "Weights & Biases in offline mode (<output_dir>/wandb/); needs that package (not in "
                         "requirements.txt)")
        out.add_argument("--log_root", default="runs", help="parent folder of run directories (the paper's: logs)")
        out.add_argument("--output_dir", default=None,
                         help="run directory; default <log_root>/<dataset>-<method>-<time>")
        out.add_argument("--save", action="store_true",
                         help="also write coefficients.npz (c and the seed pool) at the end")
        out.add_argument("--save_every", type=int, default=1,
                         help="rounds between checkpoints (a few KB: c, per-round Delta c, RNG); 0 = only at the end")
        out.add_argument("--resume", default=None, metavar="RUN_DIR",
                         help="continue the run in RUN_DIR from its checkpoint (its flags are reused)")
        out.add_argument("--quiet", action="store_true", help="no progress bars")

    def check(self) -> None:
        require([(self.save_every >= 0, f"--save_every {self.save_every}: must be >= 0")])
        check_report_to(self.report_to)
