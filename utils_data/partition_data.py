"""Splitting record indices over clients: IID, or label-skewed with a per-category Dirichlet draw."""
from __future__ import annotations

import re

import numpy as np

from errors import FedKSeedError

_DIR = re.compile(r"dir(\d+(?:\.\d*)?|\.\d+)")
CLIENT_SPLIT = "client"  # --iid client: one client per value of the data's client column (--dataset json)


def parse_iid(value: str) -> float | str | None:
    """--iid: "0" is IID (None); "dir<alpha>" is a Dirichlet split with concentration alpha > 0; "client" is
    CLIENT_SPLIT."""
    if value in ("0", CLIENT_SPLIT):
        return None if value == "0" else CLIENT_SPLIT
    match = _DIR.fullmatch(value)
    alpha = float(match.group(1)) if match else 0.0
    if alpha <= 0:
        raise FedKSeedError(f"--iid {value}: expected 0, dir<alpha> with alpha > 0, or client")
    return alpha


def dirichlet_partition(labels: np.ndarray, num_clients: int, alpha: float | None, rng: np.random.Generator,
                        min_size: int = 10, max_tries: int = 1000) -> list[np.ndarray]:
    """Each client's record indices; every index goes to exactly one client, each gets >= min_size.

    alpha None: a random IID split into near-equal parts. Otherwise, for every category, client
    proportions ~ Dir(alpha) split that category's shuffled indices; everything is redrawn until all
    clients have min_size records. As in the usual NIID-Bench implementation, a client already holding
    its fair share (len(labels) / num_clients) gets no more, which keeps the redraws few.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if num_clients < 1:
        raise FedKSeedError(f"--num_clients {num_clients}: expected at least 1")
    if num_clients * min_size > n:
        raise FedKSeedError(f"cannot give {num_clients} clients at least {min_size} records each "
                            f"from {n} records")
    if alpha is None:
        return [np.sort(part) for part in np.array_split(rng.permutation(n), num_clients)]

    by_category = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for _ in range(max_tries):
        parts = _dirichlet_draw(by_category, n, num_clients, alpha, rng)
        if parts is not None and min(len(p) for p in parts) >= min_size:
            return [np.sort(p) for p in parts]
    raise FedKSeedError(f"Dirichlet split (alpha={alpha}): some of {num_clients} clients got fewer than "
                        f"{min_size} records in {max_tries} tries; use fewer clients or a larger alpha")


def _dirichlet_draw(by_category: list[np.ndarray], n: int, num_clients: int, alpha: float,
                    rng: np.random.Generator) -> list[np.ndarray] | None:
    """One attempt; None when the proportions degenerate (all open clients drew exactly 0)."""
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    sizes = np.zeros(num_clients, dtype=np.int64)
    for indices in by_category:
        indices = rng.permutation(indices)
        proportions = rng.dirichlet(np.full(num_clients, alpha)) * (sizes < n / num_clients)
        if not proportions.sum() > 0:  # also catches NaN
            return None
        cuts = (np.cumsum(proportions / proportions.sum()) * len(indices)).astype(int)[:-1]
        for client, chunk in enumerate(np.split(indices, cuts)):
            parts[client].append(chunk)
            sizes[client] += len(chunk)
    return [np.concatenate(p) if p else np.zeros(0, dtype=np.int64) for p in parts]
