"""Every random choice of a run comes from --seed, each consumer on a stream of its own.

numpy pads a seed sequence with zeros, so default_rng([s, 1]) and default_rng([s, 1, 0]) are one generator; every
stream here starts with its own tag after the seed, and a tag always takes the same number of ids, so no two
streams (nor two ids of one stream) can share a generator.
"""
from __future__ import annotations

import numpy as np

from errors import FedKSeedError

# consumer -> (tag, number of ids). Tags are arbitrary distinct non-zero constants; changing one changes results.
STREAMS = {
    "server": (0x5EED, 0),  # the seed pool, then each round's client sampling (checkpointed with the run)
    "data": (0xDA7A, 0),  # the federated split: Dirichlet draws, subsampling, Natural Instructions sampling
    "eval": (0xE7A1, 0),  # the held-out records evaluated (--eval_examples)
    "client": (0xC11E, 2),  # (round, client id): a client's data order and seed choices in one round
    "torch": (0x70C4, 2),  # (round, client id): the torch seed of a first-order client's dropout in one round
    "ferret": (0xFE77, 2),  # (round, client id): the seeds a Ferret client projects its update onto
}


def stream(seed: int, name: str, *ids: int) -> np.random.Generator:
    """The generator of consumer `name` (one of STREAMS) for run seed `seed` and the consumer's ids."""
    tag, count = STREAMS[name]
    if len(ids) != count:
        raise ValueError(f"stream {name!r} takes {count} ids, got {len(ids)}")
    if seed < 0 or any(i < 0 for i in ids):
        raise FedKSeedError(f"--seed {seed}: must be a non-negative integer")
    return np.random.default_rng([seed, tag, *ids])
