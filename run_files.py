"""The run directory: opening it for one writer (run_lock.py), config.json and the log (its metrics and generations:
run_records.py)."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from checkpoint import CHECKPOINT_FILE, RunState, TensorState
from errors import FedKSeedError
from run_lock import acquire_run_lock

if TYPE_CHECKING:
    from config import RunConfig

PACKAGES = ("torch", "transformers", "numpy", "rouge-score", "gguf", "accelerate", "datasets", "peft")


def setup_logging(log_file: Path | None) -> None:
    """Log lines to stderr, and to log_file when given."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        handlers=handlers, force=True)
    logging.getLogger("absl").setLevel(logging.WARNING)  # rouge-score's "Using default tokenizer." on every call


def git_revision() -> str | None:
    """The project's commit (with '+dirty' when the tree has changes), or None outside a checkout."""
    root = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if rev.returncode != 0:
        return None
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def write_config(path: Path, flags: dict, resumed_at: int | None = None) -> None:
    """Every resolved flag, the git revision and the library versions. A run resumed at round N keeps those of
    the sittings before it, so that every commit that trained it stays on record."""
    doc = {"flags": flags, "git_revision": git_revision(), "versions": versions()}
    if resumed_at is not None:
        doc["earlier_sittings"] = earlier_sittings(path, resumed_at)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def earlier_sittings(path: Path, resumed_at: int) -> list[dict]:
    """The sittings recorded in the config.json being replaced, then its own, which reached round resumed_at
    (an unreadable config.json leaves that sitting's revision unknown: null)."""
    try:
        before = json.loads(path.read_text())
    except (OSError, ValueError):
        before = {}
    last = {"git_revision": before.get("git_revision"), "versions": before.get("versions"), "until_round": resumed_at}
    return [*before.get("earlier_sittings", []), last]


def open_run_dir(cfg: RunConfig, resume: RunState | TensorState | None) -> Path:
    """The run directory, ready for a run (either engine): a new run never overwrites a checkpoint; logging set
    up, config.json written, torch seeded."""
    torch.manual_seed(cfg.federation.seed)
    out = Path(cfg.output.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        acquire_run_lock(out)  # one writer per run directory (run_lock.py), till the run or process ends
        if resume is None and (out / CHECKPOINT_FILE).exists():  # checked under the lock: a run just finished counts
            raise FedKSeedError(f"--output_dir {out}: already holds a run; continue it with --resume {out}")
        write_config(out / "config.json", cfg.flags(), resumed_at=None if resume is None else resume.round)
    except OSError as exc:
        raise FedKSeedError(f"--output_dir {out}: cannot write the run directory ({exc.strerror or exc})") from None
    setup_logging(out / "train.log" if cfg.output.log else None)
    return out
