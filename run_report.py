"""--report_to: each row of metrics.jsonl also goes to TensorBoard (event files in <run_dir>/tensorboard/) or to
Weights & Biases in offline mode (<run_dir>/wandb/: no account, no network; `wandb sync` uploads it later).
Both packages are optional: neither is in requirements.txt."""
from __future__ import annotations

import atexit
import hashlib
import importlib.util
import json
from pathlib import Path

from errors import FedKSeedError

CHOICES = ("none", "tensorboard", "wandb")
OPEN: list[Reporter] = []  # closed by close_all


def package_available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def check_report_to(report_to: str) -> None:
    """Refuse, before anything loads, a --report_to whose package is not installed."""
    if report_to != "none" and not package_available(report_to):
        raise FedKSeedError(f"--report_to {report_to}: needs the {report_to} package, which is not installed "
                            f"(pip install {report_to})")


def configured(run_dir: Path) -> tuple[str, dict]:
    """--report_to and the flags of the run in run_dir, from its config.json (none when it has none)."""
    try:
        flags = json.loads((Path(run_dir) / "config.json").read_text())["flags"]
    except (OSError, ValueError, KeyError, TypeError):
        return "none", {}
    return flags.get("report_to") or "none", flags


def scalars(row: dict) -> dict[str, float]:
    """The row's numbers by their metrics.jsonl names; the round is the step, lists and nested values are left out."""
    return {name: float(value) for name, value in row.items()
            if name != "round" and isinstance(value, int | float) and not isinstance(value, bool)}


class Reporter:
    """One run's rows to TensorBoard or W&B, step = round. first_step: the round of the next row; what an earlier
    process of the run logged from it on (rounds past the checkpoint of a killed run, run again now) is dropped."""

    def __init__(self, run_dir: Path, report_to: str, first_step: int = 0, flags: dict | None = None):
        self.report_to = report_to
        if report_to == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: a reader (TensorBoard, EventAccumulator) discards the earlier files' events from that step
            self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"), purge_step=first_step)
        elif report_to == "wandb":
            import wandb

            # one id for every process that writes the run directory (the first and each --resume), so that
            # `wandb sync` files them under one run
            run_id = hashlib.blake2b(str(Path(run_dir).resolve()).encode(), digest_size=8).hexdigest()
            self.run = wandb.init(mode="offline", dir=str(run_dir), project="fedkseed", name=Path(run_dir).name,
                                  id=run_id, resume="allow", config=flags or {})
        else:
            raise ValueError(f"report_to {report_to!r}: expected tensorboard or wandb")
        OPEN.append(self)

    def log(self, row: dict) -> None:
        values, step = scalars(row), int(row["round"])
        if self.report_to == "tensorboard":
            for name, value in values.items():
                self.writer.add_scalar(name, value, global_step=step)
            self.writer.flush()  # on disk now: a run killed later keeps the rounds it reported
        else:
            self.run.log(values, step=step)

    def close(self) -> None:
        if self in OPEN:
            OPEN.remove(self)
            if self.report_to == "tensorboard":
                self.writer.close()
            else:
                self.run.finish()


@atexit.register
def close_all() -> None:
    """Close every open reporter (the end of a run: an engine does not close its metrics file)."""
    for reporter in list(OPEN):
        reporter.close()
