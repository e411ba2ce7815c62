"""Records -> held-out evaluation records and each client's training records (Dolly and --dataset json).

Draws come from the run's "data" stream in a fixed order: the --eval_fraction draw, the --dataset_subsample draw,
then the split (IID permutation or Dirichlet draws), so a run is reproducible from --seed.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from errors import FedKSeedError
from utils_data.partition_data import CLIENT_SPLIT, dirichlet_partition

logger = logging.getLogger(__name__)

MIN_CLIENT_RECORDS = 10  # the paper's code redraws the Dirichlet split until every client has this many


@dataclass(frozen=True)
class HoldOut:
    """What is held out for evaluation: a category's records, a random fraction, or separate records."""

    category: str | None = None
    fraction: float = 0.0
    records: list[dict] | None = None


@dataclass
class FederatedData:
    clients: list[list[dict]]  # each client's training records
    client_names: list[str]
    eval_records: list[dict]  # the held-out records, never seen in training


def hold_out(records: list[dict], spec: HoldOut, rng: np.random.Generator, source: str) -> tuple[list[int], list[dict]]:
    """(indices of the training records, evaluation records) for the held-out spec."""
    if spec.records is not None:
        return list(range(len(records))), spec.records
    if spec.category is not None:
        categories = sorted({r["category"] for r in records})
        if spec.category not in categories:
            raise FedKSeedError(f"--eval_category {spec.category}: no such category in {source} "
                                f"(categories: {', '.join(categories) or 'none'})")
        held = [i for i, r in enumerate(records) if r["category"] == spec.category]
    else:
        count = round(spec.fraction * len(records))
        if not 1 <= count < len(records):
            raise FedKSeedError(f"--eval_fraction {spec.fraction}: holds out {count} of {len(records)} records "
                                f"of {source}; need at least one for evaluation and one for training")
        held = sorted(rng.permutation(len(records))[:count].tolist())
    chosen = set(held)
    return [i for i in range(len(records)) if i not in chosen], [records[i] for i in held]


def subsample(indices: list[int], fraction: float, rng: np.random.Generator) -> list[int]:
    """A seeded fraction of the training indices, in their order (all of them at 1)."""
    if fraction >= 1:
        return indices
    keep = np.sort(rng.choice(len(indices), size=max(1, round(fraction * len(indices))), replace=False))
    return [indices[i] for i in keep]


def by_value(values: list[str], source: str) -> tuple[list[str], list[np.ndarray]]:
    """One client per distinct value (sorted names): (names, each client's positions in `values`)."""
    names = sorted(set(values))
    if len(names) < 2:
        raise FedKSeedError(f"{source}: the client column has {len(names)} value(s) "
                            f"({', '.join(names) or 'none'}); a federation needs at least two clients")
    column = np.asarray(values, dtype=object)
    return names, [np.flatnonzero(column == name) for name in names]


def by_category(categories: list[str], num_clients: int, alpha: float | None,
                rng: np.random.Generator) -> tuple[list[str], list[np.ndarray]]:
    """num_clients parts: IID (alpha None) or Dirichlet(alpha) over the categories (dirichlet_partition)."""
    # Tiny data (tests, CPU smoke runs) cannot give every client 10 records. A Dirichlet draw almost never
    # gives every client its full fair share either, so ask for at most a third of it.
    min_size = max(1, min(MIN_CLIENT_RECORDS, len(categories) // (3 * num_clients)))
    names = sorted(set(categories))
    labels = np.array([names.index(c) for c in categories])
    parts = dirichlet_partition(labels, num_clients, alpha, rng, min_size=min_size)
    return [f"client-{c:03d}" for c in range(num_clients)], parts


def federate(records: list[dict], spec: HoldOut, iid: str | float | None, num_clients: int, fraction: float,
             rng: np.random.Generator, source: str, clients: list[str] | None = None) -> FederatedData:
    """Hold out, subsample, then split the training records: iid = CLIENT_SPLIT (one client per value of
    `clients`, parallel to records), None (IID) or a Dirichlet alpha over the category column."""
    train, eval_records = hold_out(records, spec, rng, source)
    train = subsample(train, fraction, rng)
    if not train:
        raise FedKSeedError(f"{source}: no training records outside the held-out set")
    if iid == CLIENT_SPLIT:
        names, parts = by_value([clients[i] for i in train], source)
    else:
        names, parts = by_category([records[i]["category"] for i in train], num_clients, iid, rng)
    logger.info("%s: %d training records over %d clients (%s), %d eval records",
                source, len(train), len(names), iid if iid == CLIENT_SPLIT else f"alpha={iid}", len(eval_records))
    return FederatedData(clients=[[records[train[i]] for i in part] for part in parts], client_names=names,
                 eval_records=eval_records)
