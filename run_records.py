"""A run's records: metrics.jsonl (one row a round) and generations-<round>.jsonl. Light to import (no torch), so
that study reports and plots read runs quickly."""
from __future__ import annotations

import json
from pathlib import Path

from run_report import Reporter, configured

# metrics that are timings or memory (or derived from them), not results
MEASURED = ("seconds", "client_seconds", "peak_memory_bytes", "overhead_forward_equivalents_per_client")


class MetricsFile:
    """metrics.jsonl: one JSON object a round, flushed as it is written; each row also goes where --report_to says
    (run_report.py). The one writer of rows for both engines."""

    def __init__(self, path: Path, fresh: bool):
        """--report_to as the run directory's config.json says, which both engines write first (open_run_dir), so
        that neither has to hand the flag over."""
        self.path = path
        self.report_to, self.flags = configured(path.parent)
        self.reporter: Reporter | None = None
        self.first_step = 0  # a fresh run's reporter drops whatever an earlier run in the directory reported
        if fresh:
            path.write_text("")

    def keep_rounds_up_to(self, last_round: int) -> None:
        """On resume: drop the rows of rounds after the checkpoint (they will be run again)."""
        rows = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line)["round"] <= last_round]
        self.path.write_text("".join(r + "\n" for r in rows))
        self.first_step = last_round + 1

    def write(self, row: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.report_to != "none":
            if self.reporter is None:  # opened at the first row, once keep_rounds_up_to has told where it starts
                self.reporter = Reporter(self.path.parent, self.report_to, self.first_step, self.flags)
            self.reporter.log(row)

    def close(self) -> None:
        if self.reporter is not None:
            self.reporter.close()


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def write_generations(run_dir: Path, round_idx: int, rows: list[dict]) -> Path:
    """generations-<round>.jsonl: one evaluated record a line (its greedy prediction, reference and Rouge-L), so
    that a Rouge-L that moves can be read; a resumed run that evaluates the round again overwrites it."""
    path = Path(run_dir) / f"generations-{round_idx}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path
