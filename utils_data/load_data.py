"""The data entry point: --dataset, --data_path, --iid, ... -> clients' training records and eval records."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from errors import FedKSeedError
from streams import stream
from utils_data.natural_instruction_loader import load_natural_instructions
from utils_data.partition_data import dirichlet_partition, parse_iid

logger = logging.getLogger(__name__)

RECORD_KEYS = ("instruction", "context", "response", "category")
DOLLY_FILE = "databricks-dolly-15k.jsonl"
MIN_CLIENT_RECORDS = 10  # the paper's code redraws the Dirichlet split until every client has this many


@dataclass
class FederatedData:
    clients: list[list[dict]]  # each client's training records
    client_names: list[str]
    eval_records: list[dict]  # the held-out task(s), never seen in training


def read_jsonl(path: Path) -> list[dict]:
    """Dolly-schema records (instruction, context, response, category: all strings), one per line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FedKSeedError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FedKSeedError(f"{path}: cannot read ({exc.__class__.__name__})") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise FedKSeedError(f"{path}:{number}: malformed JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise FedKSeedError(f"{path}:{number}: expected a JSON object")
        for key in RECORD_KEYS:
            if key not in record:
                raise FedKSeedError(f"{path}:{number}: missing key {key!r}")
            if not isinstance(record[key], str):
                raise FedKSeedError(f"{path}:{number}: {key!r} must be a string")
        records.append({key: record[key] for key in RECORD_KEYS})
    return records


def load_federated_data(dataset: str, data_path: str, num_clients: int, iid: str, zerotask: int,
                        dataset_subsample: float, max_length: int, seed: int) -> FederatedData:
    """Clients' training records and the eval records for --dataset dolly or instruct."""
    rng = stream(seed, "data")
    if dataset == "dolly":
        return _load_dolly(Path(data_path), num_clients, iid, zerotask, dataset_subsample, rng)
    if dataset == "instruct":
        return _load_instruct(Path(data_path), num_clients, dataset_subsample, max_length, rng)
    raise FedKSeedError(f"--dataset {dataset}: expected instruct or dolly")


def _load_dolly(path: Path, num_clients: int, iid: str, zerotask: int, subsample: float,
                rng: np.random.Generator) -> FederatedData:
    """Hold out category number `zerotask` (sorted names) for eval; split the rest over the clients."""
    alpha = parse_iid(iid)  # check the flags before the slow part
    if not 0 < subsample <= 1:
        raise FedKSeedError(f"--dataset_subsample {subsample}: expected a fraction in (0, 1]")
    if num_clients < 1:
        raise FedKSeedError(f"--num_clients {num_clients}: expected at least 1")
    records = read_jsonl(path / DOLLY_FILE if path.is_dir() else path)
    categories = sorted({r["category"] for r in records})
    if not 0 <= zerotask < len(categories):
        raise FedKSeedError(f"--zerotask {zerotask}: expected 0..{len(categories) - 1} "
                            f"(categories of {path}: {', '.join(categories) or 'none'})")
    held_out = categories[zerotask]
    eval_records = [r for r in records if r["category"] == held_out]
    train = [r for r in records if r["category"] != held_out]
    if subsample < 1:
        keep = np.sort(rng.choice(len(train), size=max(1, round(subsample * len(train))), replace=False))
        train = [train[i] for i in keep]
    if not train:
        raise FedKSeedError(f"{path}: no training records outside the held-out category {held_out}")

    # Tiny data (tests, CPU smoke runs) cannot give every client 10 records. A Dirichlet draw almost never
    # gives every client its full fair share either, so ask for at most a third of it.
    min_size = max(1, min(MIN_CLIENT_RECORDS, len(train) // (3 * num_clients)))
    labels = np.array([categories.index(r["category"]) for r in train])
    parts = dirichlet_partition(labels, num_clients, alpha, rng, min_size=min_size)
    logger.info("dolly: %d training records over %d clients (iid=%s), %d eval records of %s",
                len(train), num_clients, iid, len(eval_records), held_out)
    return FederatedData(clients=[[train[i] for i in part] for part in parts],
                         client_names=[f"client-{c:03d}" for c in range(num_clients)],
                         eval_records=eval_records)


def _load_instruct(path: Path, num_clients: int, subsample: float, max_length: int,
                   rng: np.random.Generator) -> FederatedData:
    """One client per usable Natural Instructions train task; sampled test tasks for eval."""
    root = path if (path / "splits").is_dir() else path / "natural-instructions"
    if not root.is_dir():
        raise FedKSeedError(f"--data_path {path}: no natural-instructions folder in it")
    clients, names, eval_records = load_natural_instructions(root, max_length, rng)
    if num_clients != len(clients):
        logger.info("instruct: %d clients, one per usable train task (--num_clients %d ignored)",
                    len(clients), num_clients)
    if subsample != 1:
        logger.info("instruct: --dataset_subsample %s ignored (the tasks are already sampled)", subsample)
    return FederatedData(clients=clients, client_names=names, eval_records=eval_records)


def load_for_run(args) -> FederatedData:
    """load_federated_data with a run's flags (main.py's argparse namespace)."""
    return load_federated_data(args.dataset, args.data_path, args.num_clients, args.iid, args.zerotask,
                               args.dataset_subsample, args.max_length, args.seed)
