"""The output flags: where a run's directory is, what it writes there, and resuming it."""
from __future__ import annotations

from dataclasses import dataclass

from errors import require
from flag_group import FlagGroup, flag
from run_report import CHOICES, check_report_to


@dataclass
class OutputConfig(FlagGroup):
    title = "output"

    log: bool = flag(False, "also write the log to <output_dir>/train.log")
    report_to: str = flag("none", "also send each metrics.jsonl row to TensorBoard (<output_dir>/tensorboard/) or to "
                          "Weights & Biases in offline mode (<output_dir>/wandb/); needs that package (not in "
                          "requirements.txt)", choices=CHOICES)
    log_root: str = flag("runs", "parent folder of run directories (the paper's: logs)")
    output_dir: str | None = flag(None, "run directory; default <log_root>/<dataset>-<method>-<time>")
    save: bool = flag(False, "also write coefficients.npz (c and the seed pool) at the end")
    save_every: int = flag(1, "rounds between checkpoints (a few KB: c, per-round Delta c, RNG); 0 = only at the "
                           "end")
    resume: str | None = flag(None, "continue the run in RUN_DIR from its checkpoint (its flags are reused)",
                              metavar="RUN_DIR")
    quiet: bool = flag(False, "no progress bars")

    def check(self) -> None:
        require([(self.save_every >= 0, f"--save_every {self.save_every}: must be >= 0")])
        check_report_to(self.report_to)
