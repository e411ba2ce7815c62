"""The in-process engine: every client runs in this process, one after another, on the method's work copy of the
model (the transport InProcessClients), in the round loop of rounds.py."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from tqdm import tqdm

from checkpoint import RunState, TensorState
from client import Client
from methods import Method, build_method, method_class
from modeling import check_fits, load_model, load_tokenizer
from rounds import RoundWork, run_rounds
from run_data import training_clients
from run_evaluation import RoundEvaluator
from run_files import open_run_dir
from utils_data.load_data import load_for_run

if TYPE_CHECKING:
    from config import RunConfig

logger = logging.getLogger("fedkseed")


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


def run(cfg: RunConfig, resume: RunState | TensorState | None = None) -> dict:
    """Train for --rounds rounds (continuing `resume` when given); returns the summary and the method."""
    check_fits(cfg.model.model, cfg.model.dtype, *method_class(cfg.method.method).weight_copies(cfg))
    out = open_run_dir(cfg, resume)
    data = load_for_run(cfg)
    tokenizer = load_tokenizer(cfg.model.model)
    clients = training_clients(cfg, data, tokenizer)
    evaluator = RoundEvaluator(cfg, data.eval_records, tokenizer)
    logger.info("%d clients (%d training examples), %d evaluation examples, %s on %s (%s), %s",
                len(clients), sum(len(c) for c in clients), len(evaluator), cfg.model.model, cfg.model.device,
                cfg.model.dtype, cfg.method.method)
    method = build_method(cfg, load_model(cfg.model.model, cfg.model.dtype, cfg.model.device), clients, resume)
    return run_rounds(cfg, method, InProcessClients(clients), evaluator, out, resumed=resume is not None)
