"""The in-process engine: every client runs in this process, one after another, on the method's work copy of the
model. It moves work and records metrics; what a client computes and how uploads combine is the method's."""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from checkpoint import CHECKPOINT_FILE, RunState
from client import Client
from errors import FedKSeedError
from methods import LocalReport, build_method
from modeling import load_model, load_tokenizer
from run_evaluation import RoundEvaluator, report_dropped, run_prompt_format
from run_files import MetricsFile, setup_logging, write_config
from run_lock import acquire_run_lock
from utils_data.llm_dataset import LLMDataset
from utils_data.load_data import load_for_run

logger = logging.getLogger("fedkseed")


def training_clients(args, data, tokenizer) -> list[Client]:
    """The clients with at least one usable example (what a Flower node needs; no evaluation set)."""
    datasets = [LLMDataset(records, tokenizer, run_prompt_format(args), args.max_length)
                for records in data.clients]
    report_dropped("training", datasets, args.max_length)
    clients = [Client(i, ds, tokenizer.pad_token_id, args.seed) for i, ds in enumerate(datasets)]
    clients = [c for c in clients if len(c) > 0]
    if not clients:
        raise FedKSeedError("no usable training examples after tokenisation (check --max_length)")
    return clients


def build_clients(args, data, tokenizer) -> tuple[list[Client], RoundEvaluator]:
    """The usable clients and the run's evaluator (its evaluation and validation sets)."""
    return training_clients(args, data, tokenizer), RoundEvaluator(args, data.eval_records, tokenizer)


def open_run_dir(args, resume: RunState | None) -> Path:
    """The run directory, ready for a run (either engine): a new run never overwrites a checkpoint; logging set
    up, config.json written, torch seeded."""
    torch.manual_seed(args.seed)
    out = Path(args.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        acquire_run_lock(out)  # one writer per run directory (run_lock.py), till the run or process ends
        if resume is None and (out / CHECKPOINT_FILE).exists():  # checked under the lock: a run just finished counts
            raise FedKSeedError(f"--output_dir {out}: already holds a run; continue it with --resume {out}")
        write_config(out / "config.json", args, resumed_at=None if resume is None else resume.round)
    except OSError as exc:
        raise FedKSeedError(f"--output_dir {out}: cannot write the run directory ({exc.strerror or exc})") from None
    setup_logging(out / "train.log" if args.log else None)
    return out


def cost_metrics(reports: list[LocalReport]) -> dict:
    """What the round's clients sent, received and spent, per client (the same keys for every method)."""
    skipped = sorted({kind for r in reports for kind in r.skipped})
    return {
        "train_loss": float(np.nanmean([r.train_loss for r in reports])) if reports else float("nan"),
        **{f"skipped_{kind}": sum(r.skipped.get(kind, 0) for r in reports) for kind in skipped},
        "bytes_down_per_client": float(np.mean([r.bytes_down for r in reports])),
        "bytes_up_per_client": float(np.mean([r.bytes_up for r in reports])),
        "forward_equivalents_per_client": float(np.mean([r.forward_equivalents for r in reports])),
        "client_seconds": round(float(np.mean([r.seconds for r in reports])), 3),
        "peak_memory_bytes": int(max((r.peak_bytes for r in reports), default=0)),
    }


def run(args, resume: RunState | None = None) -> dict:
    """Train for args.rounds rounds (continuing `resume` when given); returns the summary and the method."""
    out = open_run_dir(args, resume)
    show = not args.quiet and sys.stderr.isatty()

    data = load_for_run(args)
    tokenizer = load_tokenizer(args.model)
    clients, evaluator = build_clients(args, data, tokenizer)
    logger.info("%d clients (%d training examples), %d evaluation examples, %s on %s (%s), %s",
                len(clients), sum(len(c) for c in clients), len(evaluator), args.model, args.device, args.dtype,
                args.method)
    method = build_method(args, load_model(args.model, args.dtype, args.device), clients, resume)
    metrics = MetricsFile(out / "metrics.jsonl", fresh=resume is None)
    if resume is not None:
        metrics.keep_rounds_up_to(method.round)
        logger.info("resumed %s at round %d", out, method.round)

    if args.eval_base and resume is None:
        method.base_eval = evaluator(method.global_model(), 0, args.eval_metric, progress=show)
        metrics.write({"round": 0, **method.base_eval})
    row = {}
    for round_idx in tqdm(range(method.round + 1, args.rounds + 1), desc="rounds", disable=not show):
        start = time.time()
        selected = [clients[i] for i in method.select_clients(round_idx)]
        with tqdm(total=None, desc=f"round {round_idx}", unit="step", leave=False, disable=not show) as bar:
            reports = []
            for n, client in enumerate(selected, start=1):
                bar.set_postfix_str(f"client {n}/{len(selected)}")
                reports.append(method.train_client(client, round_idx, progress=bar))
        row = {"round": round_idx, **method.finish_round(round_idx, reports), **cost_metrics(reports)}
        metric = evaluator.metric_due(round_idx)
        if metric is not None:
            row.update(evaluator(method.global_model(), round_idx, metric, progress=show))
        row["seconds"] = round(time.time() - start, 3)
        metrics.write(row)
        logger.info("round %d: train loss %.4f, %d clients, %.0f B up, %.0f B down, %.0f forward-equivalents "
                    "per client", round_idx, row["train_loss"], len(reports), row["bytes_up_per_client"],
                    row["bytes_down_per_client"], row["forward_equivalents_per_client"])
        if round_idx == args.rounds or (args.save_every and round_idx % args.save_every == 0):
            method.save(out)

    summary = {"base": method.base_eval, "final": {k: row[k] for k in ("eval_loss", "rouge_l") if k in row},
               "rounds": args.rounds, **method.finish(out)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return {"summary": summary, "method": method, "c": getattr(method, "c", None),
            "server": getattr(method, "server", None)}
