"""read_jsonl and load_federated_data for Dolly: held-out category, partition, subsample, bad input."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from conftest import ROOT, SHARED_DATA, dolly_records
from errors import FedKSeedError
from utils_data.load_data import FederatedData, load_federated_data, read_jsonl

CATEGORIES = sorted({r["category"] for r in dolly_records()})


def load(path, num_clients=4, iid="dir0.5", zerotask=7, subsample=1.0, seed=0) -> FederatedData:
    return load_federated_data("dolly", str(path), num_clients=num_clients, iid=iid, zerotask=zerotask,
                               dataset_subsample=subsample, max_length=1024, seed=seed)


def key(record: dict) -> str:
    return json.dumps(record, sort_keys=True)


def error_message(call) -> str:
    with pytest.raises(FedKSeedError) as excinfo:
        call()
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


def test_read_jsonl_round_trips(dolly_file):
    assert read_jsonl(dolly_file) == dolly_records()


def test_read_jsonl_skips_blank_lines_and_extra_keys(tmp_path):
    path = tmp_path / "d.jsonl"
    extra = {**dolly_records()[0], "source": "x"}
    path.write_text("\n" + json.dumps(extra) + "\n\n")
    assert read_jsonl(path) == [dolly_records()[0]]


@pytest.mark.parametrize("zerotask", range(8))
def test_held_out_category_is_eval_only(dolly_file, zerotask):
    data = load(dolly_file, zerotask=zerotask)
    held_out = CATEGORIES[zerotask]
    assert {r["category"] for r in data.eval_records} == {held_out}
    assert len(data.eval_records) == 12
    training = [r for c in data.clients for r in c]
    assert held_out not in {r["category"] for r in training}
    # Every other category is trained on, whole (the paper's code also drops category 7; we don't).
    expected = Counter(key(r) for r in dolly_records() if r["category"] != held_out)
    assert Counter(key(r) for r in training) == expected


def test_categories_are_numbered_in_sorted_order(dolly_file):
    assert load(dolly_file, zerotask=7).eval_records[0]["category"] == "summarization"
    assert load(dolly_file, zerotask=0).eval_records[0]["category"] == "brainstorming"


def test_directory_or_file_path(dolly_file):
    assert load(dolly_file.parent) == load(dolly_file)


@pytest.mark.parametrize("num_clients, min_size", [(20, 1), (4, 7), (2, 10)])
def test_clients_names_and_min_size_fit_tiny_data(dolly_file, num_clients, min_size):
    # 84 training records: min_size = min(10, 84 // (3 * num_clients)), at least 1
    data = load(dolly_file, num_clients=num_clients, iid="dir0.1")
    assert data.client_names == [f"client-{i:03d}" for i in range(num_clients)]
    assert len(data.clients) == num_clients and min(len(c) for c in data.clients) >= min_size
    assert sum(len(c) for c in data.clients) == 84


def test_iid_split_is_balanced(dolly_file):
    sizes = [len(c) for c in load(dolly_file, num_clients=5, iid="0").clients]
    assert sorted(sizes) == [16, 17, 17, 17, 17]


def test_subsample_only_the_training_records(dolly_file):
    data = load(dolly_file, subsample=0.5)
    training = [r for c in data.clients for r in c]
    assert len(training) == 42 and len(data.eval_records) == 12
    assert len({key(r) for r in training}) == 42


def test_same_seed_same_data(dolly_file):
    assert load(dolly_file, seed=5) == load(dolly_file, seed=5)
    assert load(dolly_file, seed=5).clients != load(dolly_file, seed=6).clients


def test_committed_sample(tmp_path):
    data = load(ROOT / "data" / "databricks-dolly-15k-sample.jsonl", num_clients=10, iid="dir0.5")
    assert len(data.eval_records) == 40
    assert {r["category"] for r in data.eval_records} == {"summarization"}
    assert sum(len(c) for c in data.clients) == 420 and min(len(c) for c in data.clients) >= 10


def test_missing_file(tmp_path):
    message = error_message(lambda: read_jsonl(tmp_path / "nope.jsonl"))
    assert "nope.jsonl: file not found" in message
    message = error_message(lambda: load(tmp_path))  # a directory without the Dolly file
    assert "databricks-dolly-15k.jsonl: file not found" in message


def write_lines(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_malformed_line_names_file_and_line(tmp_path):
    good = json.dumps(dolly_records()[0])
    path = write_lines(tmp_path, [good, good, '{"instruction": "x", ', good])
    assert f"{path}:3: malformed JSON" in error_message(lambda: read_jsonl(path))


def test_missing_key_names_file_and_line(tmp_path):
    record = dict(dolly_records()[0])
    del record["category"]
    path = write_lines(tmp_path, [json.dumps(dolly_records()[0]), json.dumps(record)])
    assert error_message(lambda: read_jsonl(path)) == f"{path}:2: missing key 'category'"


@pytest.mark.parametrize("line", ['["a", "list"]', '{"instruction": 1, "context": "", "response": "r", '
                                                   '"category": "c"}'])
def test_wrong_types_name_file_and_line(tmp_path, line):
    path = write_lines(tmp_path, [line])
    assert f"{path}:1: " in error_message(lambda: read_jsonl(path))


def test_unknown_dataset(dolly_file):
    message = error_message(lambda: load_federated_data("alpaca", str(dolly_file), 4, "0", 7, 1.0, 1024, 0))
    assert message == "--dataset alpaca: expected instruct, dolly or json"


def test_malformed_iid(dolly_file):
    assert error_message(lambda: load(dolly_file, iid="dirx")).startswith("--iid dirx:")


@pytest.mark.parametrize("zerotask", [8, -1])
def test_zerotask_out_of_range(dolly_file, zerotask):
    assert error_message(lambda: load(dolly_file, zerotask=zerotask)).startswith(
        f"--zerotask {zerotask}: expected 0..7")


@pytest.mark.parametrize("subsample", [0.0, 1.5, -0.1])
def test_subsample_out_of_range(dolly_file, subsample):
    assert f"--dataset_subsample {subsample}" in error_message(lambda: load(dolly_file, subsample=subsample))


def test_more_clients_than_records(dolly_file):
    assert "200 clients" in error_message(lambda: load(dolly_file, num_clients=200))


REAL_DOLLY = SHARED_DATA / "databricks-dolly-15k.jsonl"


@pytest.mark.skipif(not REAL_DOLLY.is_file(), reason=f"real Dolly-15K not at {REAL_DOLLY}")
def test_real_dolly_200_clients_dir05():
    data = load(REAL_DOLLY, num_clients=200, iid="dir0.5", zerotask=7, seed=42)
    assert len(data.eval_records) == 1188
    assert {r["category"] for r in data.eval_records} == {"summarization"}
    training = [r for c in data.clients for r in c]
    assert len(training) == 13823 and len({id(r) for r in training}) == 13823
    assert "summarization" not in {r["category"] for r in training}
    assert len(data.clients) == 200 and min(len(c) for c in data.clients) >= 10
