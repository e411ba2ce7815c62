"""The data entry point: --dataset, --data_path, --iid, ... -> clients' training records and eval records."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from errors import FedKSeedError
from streams import stream
from utils_data.federate import FederatedData, HoldOut, federate
from utils_data.json_loader import DOLLY_FIELDS, Fields, load_records
from utils_data.natural_instruction_loader import load_natural_instructions
from utils_data.partition_data import CLIENT_SPLIT, parse_iid

if TYPE_CHECKING:
    from config import DataConfig, RunConfig

logger = logging.getLogger(__name__)

RECORD_KEYS = tuple(DOLLY_FIELDS)
DOLLY_FILE = "databricks-dolly-15k.jsonl"
DEFAULT_EVAL_FRACTION = 0.1  # --dataset json without a held-out flag
DEFAULT_CLIENT_FIELD = "client"  # --iid client without --client_field


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


@dataclass(frozen=True)
class EvalOptions:
    """--eval_category, --eval_fraction, --eval_path: at most one; none = the dataset's default hold-out."""

    category: str | None = None
    fraction: float = 0.0
    path: str | None = None
    read_path: bool = True  # False: a Flower node, which trains on all of --data_path and never evaluates


def load_federated_data(dataset: str, data_path: str, num_clients: int, iid: str, zerotask: int,
                        dataset_subsample: float, max_length: int, seed: int, fields: Fields | None = None,
                        evaluation: EvalOptions | None = None) -> FederatedData:
    """Clients' training records and the eval records for --dataset dolly, json or instruct."""
    rng = stream(seed, "data")
    fields, evaluation = fields or Fields(), evaluation or EvalOptions()
    if dataset in ("dolly", "json"):
        alpha = parse_iid(iid)  # check the flags before the slow part
        if not 0 < dataset_subsample <= 1:
            raise FedKSeedError(f"--dataset_subsample {dataset_subsample}: expected a fraction in (0, 1]")
        if num_clients < 1:
            raise FedKSeedError(f"--num_clients {num_clients}: expected at least 1")
        if dataset == "dolly":
            records, clients, source = _read_dolly(Path(data_path), alpha)
        else:
            records, clients, source = _read_json(data_path, alpha, fields)
        spec = _hold_out_spec(dataset, records, zerotask, evaluation, fields, source)
        return federate(records, spec, alpha, num_clients, dataset_subsample, rng, source, clients)
    if dataset == "instruct":
        return _load_instruct(Path(data_path), num_clients, dataset_subsample, max_length, rng)
    raise FedKSeedError(f"--dataset {dataset}: expected instruct, dolly or json")


def _read_dolly(path: Path, alpha) -> tuple[list[dict], None, str]:
    """The Dolly-15K file (the folder's databricks-dolly-15k.jsonl, or the file itself)."""
    if alpha == CLIENT_SPLIT:
        raise FedKSeedError("--iid client: Dolly has no client column; use --dataset json --client_field COLUMN")
    file = path / DOLLY_FILE if path.is_dir() else path
    return read_jsonl(file), None, str(path)


def _read_json(data_path: str, alpha, fields: Fields) -> tuple[list[dict], list[str] | None, str]:
    """--dataset json's records, with their client values for the client split."""
    client = (fields.client or DEFAULT_CLIENT_FIELD) if alpha == CLIENT_SPLIT else None
    return *load_records(data_path, replace(fields, client=client)), data_path


def _hold_out_spec(dataset: str, records: list[dict], zerotask: int, evaluation: EvalOptions, fields: Fields,
                   source: str) -> HoldOut:
    """The held-out set the flags ask for; default: Dolly's --zerotask category, json's DEFAULT_EVAL_FRACTION."""
    if evaluation.path is not None:
        if not evaluation.read_path:
            return HoldOut(records=[])
        return HoldOut(records=load_records(evaluation.path, replace(fields, client=None))[0])
    if evaluation.category is not None or evaluation.fraction:
        return HoldOut(category=evaluation.category, fraction=evaluation.fraction)
    if dataset == "json":
        return HoldOut(fraction=DEFAULT_EVAL_FRACTION)
    categories = sorted({r["category"] for r in records})
    if not 0 <= zerotask < len(categories):
        raise FedKSeedError(f"--zerotask {zerotask}: expected 0..{len(categories) - 1} "
                            f"(categories of {source}: {', '.join(categories) or 'none'})")
    return HoldOut(category=categories[zerotask])


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


def fields_of(data: DataConfig) -> Fields:
    """The column names of a run's --*_field flags (Dolly's by default)."""
    return Fields(instruction=data.instruction_field or "instruction", input=data.input_field,
                  response=data.response_field or "response", category=data.category_field, client=data.client_field)


def load_for_run(cfg: RunConfig, evaluation: bool = True) -> FederatedData:
    """load_federated_data with a run's flags; evaluation=False skips reading --eval_path (a Flower node holds the
    training data only)."""
    data = cfg.data
    held_out = EvalOptions(category=data.eval_category, fraction=data.eval_fraction, path=data.eval_path,
                           read_path=evaluation)
    return load_federated_data(data.dataset, data.data_path, cfg.federation.num_clients, data.iid, data.zerotask,
                               data.dataset_subsample, data.max_length, cfg.federation.seed, fields_of(data), held_out)


def load_eval_records(data: DataConfig) -> list[dict]:
    """The --eval_path records alone (the Flower server with --flower_data node holds no training data)."""
    return load_records(data.eval_path, replace(fields_of(data), client=None))[0]
