"""parse_iid and dirichlet_partition: coverage, skew vs alpha, min_size, determinism, impossible requests."""
from __future__ import annotations

import numpy as np
import pytest

from errors import FedKSeedError
from utils_data.partition_data import dirichlet_partition, parse_iid


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


def tv_distances(parts: list[np.ndarray], labels: np.ndarray) -> np.ndarray:
    """Total-variation distance between each client's category mix and the global one."""
    k = labels.max() + 1
    overall = np.bincount(labels, minlength=k) / len(labels)
    return np.array([0.5 * np.abs(np.bincount(labels[p], minlength=k) / len(p) - overall).sum() for p in parts])


LABELS = np.repeat(np.arange(8), 500)  # 8 balanced categories, 4000 records


@pytest.mark.parametrize("value, expected", [("0", None), ("dir0.5", 0.5), ("dir5.0", 5.0), ("dir1", 1.0),
                                             ("dir0.1", 0.1)])
def test_parse_iid_accepts(value, expected):
    assert parse_iid(value) == expected


@pytest.mark.parametrize("value", ["dir", "dirx", "dir-1", "dir0", "dir0.0", "meta", "1", "", "dir 1", "DIR1"])
def test_parse_iid_rejects(value):
    with pytest.raises(FedKSeedError) as excinfo:
        parse_iid(value)
    message = one_line_error(excinfo)
    assert message.startswith(f"--iid {value}:") and "dir<alpha>" in message


@pytest.mark.parametrize("alpha", [None, 0.1, 0.5, 1000.0])
def test_every_index_in_exactly_one_client(alpha):
    parts = dirichlet_partition(LABELS, 10, alpha, np.random.default_rng(0))
    assert len(parts) == 10
    joined = np.concatenate(parts)
    assert len(joined) == len(LABELS)
    assert np.array_equal(np.sort(joined), np.arange(len(LABELS)))


def test_iid_sizes_are_near_equal_and_mixed():
    parts = dirichlet_partition(LABELS, 7, None, np.random.default_rng(0))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert tv_distances(parts, LABELS).max() < 0.1


def test_large_alpha_gives_near_global_category_mix():
    parts = dirichlet_partition(LABELS, 10, 1000.0, np.random.default_rng(0))
    assert tv_distances(parts, LABELS).max() < 0.1


def test_small_alpha_gives_skewed_category_mix():
    parts = dirichlet_partition(LABELS, 10, 0.1, np.random.default_rng(0))
    assert tv_distances(parts, LABELS).mean() > 0.4


def test_min_size_is_respected_where_it_binds():
    labels = np.repeat(np.arange(4), 100)
    # With no minimum this seed leaves some client below 10 records ...
    loose = dirichlet_partition(labels, 20, 0.5, np.random.default_rng(3), min_size=0)
    assert min(len(p) for p in loose) < 10
    # ... and asking for 10 redraws until every client has them.
    strict = dirichlet_partition(labels, 20, 0.5, np.random.default_rng(3), min_size=10)
    assert min(len(p) for p in strict) >= 10
    assert sum(len(p) for p in strict) == len(labels)


def test_same_seed_same_partition_other_seed_differs():
    a = dirichlet_partition(LABELS, 10, 0.5, np.random.default_rng(7))
    b = dirichlet_partition(LABELS, 10, 0.5, np.random.default_rng(7))
    c = dirichlet_partition(LABELS, 10, 0.5, np.random.default_rng(8))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_string_labels_work():
    labels = np.array(["closed_qa", "open_qa", "summarization"] * 40)
    parts = dirichlet_partition(labels, 4, 0.5, np.random.default_rng(0), min_size=5)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(120))


def test_too_few_records_for_min_size_is_an_error():
    with pytest.raises(FedKSeedError) as excinfo:
        dirichlet_partition(np.zeros(99, dtype=int), 10, 0.5, np.random.default_rng(0), min_size=10)
    assert "10 clients" in one_line_error(excinfo) and "99 records" in str(excinfo.value)
    with pytest.raises(FedKSeedError):  # the IID split keeps the same promise
        dirichlet_partition(np.zeros(99, dtype=int), 10, None, np.random.default_rng(0), min_size=10)


def test_unreachable_min_size_gives_up_after_max_tries():
    labels = np.repeat(np.arange(8), 25)  # 200 records, 20 clients, min 10: only an exact split works
    with pytest.raises(FedKSeedError) as excinfo:
        dirichlet_partition(labels, 20, 0.01, np.random.default_rng(0), min_size=10, max_tries=5)
    assert "5 tries" in one_line_error(excinfo)


def test_zero_clients_is_an_error():
    with pytest.raises(FedKSeedError) as excinfo:
        dirichlet_partition(LABELS, 0, 0.5, np.random.default_rng(0))
    assert "--num_clients 0" in one_line_error(excinfo)
