"""The round loop, written once for every engine: base evaluation as round 0, then each round's clients (drawn by
the method), their work (moved by a transport: in-process clients, or a Flower Grid), the method's combination of
what was accepted, the evaluation schedule, one metrics row, checkpoints, and at the end the summary.

The loop knows a method (methods.base.Method), a transport, the evaluator and the run directory; nothing of how
a method trains or aggregates, nor of how a transport reaches its clients.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from tqdm import tqdm

from errors import FedKSeedError
from methods.base import LocalReport, Method
from run_evaluation import RoundEvaluator
from run_records import MetricsFile

if TYPE_CHECKING:
    from config import RunConfig

logger = logging.getLogger("fedkseed")


@dataclass
class RoundWork:
    """What a transport brings back from a round: the accepted reports in the order of the selection (so that
    float sums are the same in every engine), and its own entries of the metrics row."""

    reports: list[LocalReport]
    row: dict = field(default_factory=dict)
    aborted: str | None = None  # why the round cannot be combined (the model then stays as it was)


class Transport(Protocol):
    """How a round's selected clients get their work done and their uploads back."""

    def run_round(self, method: Method, round_idx: int, selected: list[int], progress: bool) -> RoundWork:
        """Every selected client's local work (or why it was lost or rejected)."""

    def summary(self, rows: list[dict]) -> dict:
        """The transport's entries of summary.json from this sitting's rows."""


def cost_metrics(reports: list[LocalReport]) -> dict:
    """What the round's clients sent, received and spent, per client (the same keys for every method)."""
    if not reports:
        return {"clients": [], "train_loss": float("nan")}
    skipped = sorted({kind for r in reports for kind in r.skipped})
    return {
        "clients": [r.client_id for r in reports],
        "train_loss": float(np.nanmean([r.train_loss for r in reports])),
        **{f"skipped_{kind}": sum(r.skipped.get(kind, 0) for r in reports) for kind in skipped},
        "bytes_down_per_client": float(np.mean([r.bytes_down for r in reports])),
        "bytes_up_per_client": float(np.mean([r.bytes_up for r in reports])),
        "forward_equivalents_per_client": float(np.mean([r.forward_equivalents for r in reports])),
        **({"overhead_forward_equivalents_per_client": round(float(np.mean(
            [r.overhead_forward_equivalents for r in reports])), 3)}
           if any(r.overhead_forward_equivalents for r in reports) else {}),
        "client_seconds": round(float(np.mean([r.seconds for r in reports])), 3),
        "peak_memory_bytes": int(max((r.peak_bytes for r in reports), default=0)),
    }


def run_rounds(cfg: RunConfig, method: Method, transport: Transport, evaluator: RoundEvaluator, out: Path,
               resumed: bool) -> dict:
    """Rounds method.round + 1 .. --rounds into the run directory `out`; returns the summary and the method."""
    show = not cfg.output.quiet and sys.stderr.isatty()
    metrics = MetricsFile(out / "metrics.jsonl", fresh=not resumed)
    if resumed:
        metrics.keep_rounds_up_to(method.round)
        logger.info("resumed %s at round %d", out, method.round)
    if cfg.evaluation.eval_base and not resumed:
        method.base_eval = evaluator(method.global_model(), 0, cfg.evaluation.eval_metric, progress=show)
        metrics.write({"round": 0, **method.base_eval})

    rows: list[dict] = []
    for round_idx in tqdm(range(method.round + 1, cfg.federation.rounds + 1), desc="rounds", disable=not show):
        start = time.time()
        work = transport.run_round(method, round_idx, method.select_clients(round_idx), show)
        row = {"round": round_idx, **cost_metrics(work.reports), **work.row}  # a transport's measured bytes win
        if work.aborted is None:
            row.update(method.finish_round(round_idx, work.reports))
            metric = evaluator.metric_due(round_idx)
            if metric is not None:
                row.update(evaluator(method.global_model(), round_idx, metric, progress=show))
        else:
            row["aborted"] = True
        row["seconds"] = round(time.time() - start, 3)
        metrics.write(row)
        if work.aborted is not None:
            raise FedKSeedError(f"round {round_idx}: {work.aborted}; the run stopped with the model as after round "
                                f"{round_idx - 1}: --resume {out}")
        logger.info("round %d: train loss %.4f, %d clients, %.0f B down, %.0f B up, %.0f forward-equivalents per "
                    "client", round_idx, row["train_loss"], len(row["clients"]), row.get("bytes_down_per_client", 0),
                    row.get("bytes_up_per_client", 0), row.get("forward_equivalents_per_client", 0))
        rows.append(row)
        save_every = cfg.output.save_every
        if round_idx == cfg.federation.rounds or (save_every and round_idx % save_every == 0):
            method.save(out)

    final = rows[-1] if rows else {}
    summary = {"base": method.base_eval, "final": {k: final[k] for k in ("eval_loss", "rouge_l") if k in final},
               "rounds": cfg.federation.rounds, **method.finish(out), **transport.summary(rows)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return {"summary": summary, "method": method}
