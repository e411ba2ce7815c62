"""FedKSeed / FedKSeed-Pro.

    python main.py [flags]                 train (python main.py --help lists the flags)
    python main.py --resume RUN_DIR        continue a run from its checkpoint
    python main.py export RUN_DIR OUT_DIR  write the trained model as a Hugging Face folder
"""
from __future__ import annotations

import sys
from pathlib import Path

import config
from errors import FedKSeedError
from run_lock import RunLock
from run_report import close_all
from simulation import run


def train(argv: list[str]) -> dict:
    cfg, resume = config.from_command_line(argv)
    try:
        if cfg.engine.engine == "flower":
            from flower_app.engine import run_flower

            return run_flower(cfg, resume=resume)
        return run(cfg, resume=resume)
    finally:  # the run has ended: its reporter and (if this process held it) its directory go
        close_all()
        RunLock(Path(cfg.output.output_dir)).release()


def export(argv: list[str]) -> Path:
    """Materialise theta0 - lr * sum_j c_j z_j of a run (after its last round, or --round N) and save it with its
    tokenizer."""
    at_round = None
    if len(argv) == 4 and argv[2] == "--round":
        if not argv[3].isdigit():
            raise FedKSeedError(f"export --round: expected a round number, got {argv[3]!r}")
        argv, at_round = argv[:2], int(argv[3])
    if len(argv) != 2:
        raise FedKSeedError("usage: python main.py export RUN_DIR OUT_DIR [--round N]")
    from export_model import export_run

    return export_run(Path(argv[0]), Path(argv[1]), at_round)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["export"]:
            print(export(argv[1:]))
        else:
            train(argv)
    except FedKSeedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
