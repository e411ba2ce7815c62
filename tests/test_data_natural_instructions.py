"""Natural Instructions loader: task filtering and sampling on a written fixture, and on the real data."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_DATA
from errors import FedKSeedError
from utils_data.load_data import load_federated_data
from utils_data.natural_instruction_loader import load_natural_instructions

MAX_LENGTH = 100  # characters
# task -> (instances with short inputs, instances with inputs >= MAX_LENGTH)
TRAIN = {"task001_a": (30, 0), "task002_b": (75, 25), "task003_small": (10, 0), "task004_cut": (19, 6)}
TEST = {"task101_few": (15, 3), "task102_many": (1500, 0), "task103_mid": (300, 0)}


def write_task(path: Path, name: str, n_short: int, n_long: int) -> None:
    # Inputs of exactly MAX_LENGTH - 1 (kept) and MAX_LENGTH (dropped) characters test the boundary.
    short = [f"{name} input {i} ".ljust(MAX_LENGTH - 1, "x") for i in range(n_short)]
    long = [f"{name} long {i} ".ljust(MAX_LENGTH + i % 2, "y") for i in range(n_long)]
    instances = [{"id": f"{name}-{i}", "input": x, "output": [f"out {x[:20]}", "another answer"]}
                 for i, x in enumerate(short + long)]
    task = {"Contributors": ["me"], "Definition": [f"definition of {name}"], "Input_language": ["English"],
            "Positive Examples": [{"input": "p", "output": "q", "explanation": "e"}], "Instances": instances}
    path.write_text(json.dumps(task))


def make_ni(root: Path, train=TRAIN, test=TEST, missing=("task005_missing",)) -> Path:
    (root / "splits" / "default").mkdir(parents=True)
    (root / "tasks").mkdir()
    (root / "splits" / "default" / "train_tasks.txt").write_text("\n".join([*train, *missing]) + "\n")
    (root / "splits" / "default" / "test_tasks.txt").write_text("\n".join(test) + "\n")
    for name, (n_short, n_long) in {**train, **test}.items():
        write_task(root / "tasks" / f"{name}.json", name, n_short, n_long)
    return root


@pytest.fixture
def ni_root(tmp_path) -> Path:
    return make_ni(tmp_path / "natural-instructions")


def load(root, seed=0):
    return load_natural_instructions(root, MAX_LENGTH, np.random.default_rng(seed))


def test_one_client_per_usable_train_task_with_20_percent(ni_root):
    clients, names, _ = load(ni_root)
    assert names == ["task001_a", "task002_b"]  # task003 < 20 instances; task004 < 20 after the filter
    assert [len(c) for c in clients] == [6, 15]  # 20% of 30 and of the 75 short ones
    for client, name in zip(clients, names, strict=True):
        assert all(r["category"] == name and r["instruction"] == f"definition of {name}" for r in client)
        assert all(len(r["context"]) == MAX_LENGTH - 1 for r in client)
        assert all(r["response"] == f"out {r['context'][:20]}" for r in client)
        assert len({r["context"] for r in client}) == len(client)  # without replacement


def test_test_tasks_sample_max_20_and_2_percent(ni_root):
    _, _, eval_records = load(ni_root)
    counts = {name: sum(r["category"] == name for r in eval_records) for name in TEST}
    assert counts == {"task101_few": 15, "task102_many": 30, "task103_mid": 20}
    assert len(eval_records) == 65
    assert all(len(r["context"]) < MAX_LENGTH for r in eval_records)
    assert len({r["context"] for r in eval_records}) == 65


def test_missing_task_is_one_log_line(ni_root, caplog):
    with caplog.at_level(logging.INFO):
        load(ni_root)
    missing = [m for m in caplog.messages if "missing on disk" in m]
    assert missing == ["natural-instructions: 1 of 5 train tasks missing on disk, skipped"]


def test_same_seed_same_sample(ni_root):
    assert load(ni_root, seed=3) == load(ni_root, seed=3)
    assert load(ni_root, seed=3)[0] != load(ni_root, seed=4)[0]


def test_load_federated_data_instruct(ni_root, caplog):
    with caplog.at_level(logging.INFO):
        data = load_federated_data("instruct", str(ni_root.parent), num_clients=50, iid="dir0.5", zerotask=3,
                                   dataset_subsample=1.0, max_length=MAX_LENGTH, seed=0)
    assert data.client_names == ["task001_a", "task002_b"]
    assert [len(c) for c in data.clients] == [6, 15] and len(data.eval_records) == 65
    assert [m for m in caplog.messages if "--num_clients 50 ignored" in m]


def assert_one_line_error(root, match: str) -> None:
    with pytest.raises(FedKSeedError, match=match) as excinfo:
        load(root)
    assert "\n" not in str(excinfo.value)


def test_missing_split_file(ni_root):
    (ni_root / "splits" / "default" / "test_tasks.txt").unlink()
    assert_one_line_error(ni_root, "test_tasks.txt: Natural Instructions split file not found")


def test_malformed_task_json_names_the_file(ni_root):
    (ni_root / "tasks" / "task002_b.json").write_text('{"Definition": ["d"], "Instances": [')
    assert_one_line_error(ni_root, r"task002_b\.json:1: malformed JSON")


def test_task_json_without_instances_names_the_file(ni_root):
    (ni_root / "tasks" / "task001_a.json").write_text('{"Definition": ["d"]}')
    assert_one_line_error(ni_root, r"task001_a\.json: not a Natural Instructions task")


def test_no_usable_train_task(tmp_path):
    root = make_ni(tmp_path / "ni", train={"task003_small": (10, 0), "task004_cut": (19, 6)})
    assert_one_line_error(root, "no train task has 20 instances")


def test_no_eval_records(tmp_path):
    root = make_ni(tmp_path / "ni", test={"task101_long": (0, 40)})
    assert_one_line_error(root, "test tasks have no instance")


REAL_NI = SHARED_DATA / "natural-instructions"


@pytest.mark.skipif(not (REAL_NI / "tasks").is_dir(), reason=f"real Natural Instructions not at {REAL_NI}")
def test_real_natural_instructions():
    max_length = 1024
    clients, names, eval_records = load_natural_instructions(REAL_NI, max_length, np.random.default_rng(42))
    splits = REAL_NI / "splits" / "default"
    train_tasks = set(splits.joinpath("train_tasks.txt").read_text().split())
    test_tasks = set(splits.joinpath("test_tasks.txt").read_text().split())

    usable = []  # counted independently: present train tasks with >= 20 short inputs
    for name in sorted(train_tasks):
        path = REAL_NI / "tasks" / f"{name}.json"
        if path.is_file():
            instances = json.loads(path.read_text())["Instances"]
            if sum(len(i["input"]) < max_length for i in instances) >= 20:
                usable.append(name)
    assert sorted(names) == usable
    assert 600 <= len(clients) <= 690
    assert all(len(c) >= 4 for c in clients)
    assert all(len(r["context"]) < max_length for c in clients for r in c)
    assert all(r["category"] == name for c, name in zip(clients, names, strict=True) for r in c)
    assert eval_records and {r["category"] for r in eval_records} <= test_tasks
    assert all(len(r["context"]) < max_length for r in eval_records)
