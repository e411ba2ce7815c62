"""The run's training data as the round loop needs it: each client's records tokenised with the run's prompt format,
the clients that keep at least one usable example, and one log line for the records that cannot fit."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from client import Client
from errors import FedKSeedError
from utils_data.default_tokens import prompt_format
from utils_data.llm_dataset import LLMDataset

if TYPE_CHECKING:
    from config import DataConfig, RunConfig
    from utils_data.federate import FederatedData

logger = logging.getLogger("fedkseed")


def run_prompt_format(data: DataConfig) -> str:
    return prompt_format(data.dataset, data.use_prompts, data.prompt_format)


def report_dropped(kind: str, datasets: list[LLMDataset], max_length: int) -> None:
    """One log line for all the records of `datasets` that cannot fit max_length tokens."""
    dropped = sum(ds.dropped for ds in datasets)
    if dropped:
        total = dropped + sum(len(ds) for ds in datasets)
        logger.info("skipped %d of %d %s records: no response token left within --max_length %d",
                    dropped, total, kind, max_length)


def training_clients(cfg: RunConfig, data: FederatedData, tokenizer) -> list[Client]:
    """The clients with at least one usable example (what a Flower node needs; no evaluation set)."""
    datasets = [LLMDataset(records, tokenizer, run_prompt_format(cfg.data), cfg.data.max_length)
                for records in data.clients]
    report_dropped("training", datasets, cfg.data.max_length)
    clients = [Client(i, ds, tokenizer.pad_token_id, cfg.federation.seed) for i, ds in enumerate(datasets) if len(ds)]
    if not clients:
        raise FedKSeedError("no usable training examples after tokenisation (check --max_length)")
    return clients
