"""The in-process engine: every client runs in this process, one after another, on the method's work copy of the
model (the transport InProcessClients), in the round loop of rounds.py."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from tqdm import tqdm

from checkpoint import CHECKPOINT_FILE, RunState, TensorState
from client import Client
from errors import FedKSeedError
from methods import Method, build_method
from modeling import load_model, load_tokenizer
from rounds import RoundWork, run_rounds
from run_evaluation import RoundEvaluator, report_dropped, run_prompt_format
from run_files import setup_logging, write_config
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


class InProcessClients:
    """The in-process transport: every selected client trains in this process, one after another."""

    def __init__(self, clients: list[Client]):
        self.clients = {c.client_id: c for c in clients}

    def run_round(self, method: Method, round_idx: int, selected: list[int], progress: bool) -> RoundWork:
        reports = []
        with tqdm(total=None, desc=f"round {round_idx}", unit="step", leave=False, disable=not progress) as bar:
            for n, cid in enumerate(selected, start=1):
                bar.set_postfix_str(f"client {n}/{len(selected)}")
                reports.append(method.train_client(self.clients[cid], round_idx, progress=bar))
        return RoundWork(reports)

    def summary(self, rows: list[dict]) -> dict:
        return {}


def run(args, resume: RunState | TensorState | None = None) -> dict:
    """Train for args.rounds rounds (continuing `resume` when given); returns the summary and the method."""
    out = open_run_dir(args, resume)
    data = load_for_run(args)
    tokenizer = load_tokenizer(args.model)
    clients, evaluator = build_clients(args, data, tokenizer)
    logger.info("%d clients (%d training examples), %d evaluation examples, %s on %s (%s), %s",
                len(clients), sum(len(c) for c in clients), len(evaluator), args.model, args.device, args.dtype,
                args.method)
    method = build_method(args, load_model(args.model, args.dtype, args.device), clients, resume)
    return run_rounds(args, method, InProcessClients(clients), evaluator, out, resumed=resume is not None)
