"""Ferret in Flower's simulation engine: the in-process run's c, model and metrics bit for bit (nodes catch their
copy up round by round from the Delta c they lack), and hostile uploads rejected per message."""
from __future__ import annotations

import os

os.environ["FEDKSEED_COMPILE"] = "0"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("ray")

from conftest import run_flower_with_faults, train  # noqa: E402
from run_records import MEASURED, read_metrics  # noqa: E402
from test_ferret import flags  # noqa: E402

NPY_HEADER = 128  # Flower serializes an array as .npy: 128 bytes of header before a small array's data


def test_ferret_in_flower_is_bit_identical_to_the_inprocess_run(tiny_model_dir, data_file, tmp_path):
    a = train(flags(tiny_model_dir, data_file, tmp_path / "a"))
    b = train(flags(tiny_model_dir, data_file, tmp_path / "b", "--engine", "flower",
                    "--flower_nodes", "2"))
    assert np.count_nonzero(a["method"].c) > 100 and np.array_equal(a["method"].c, b["method"].c)
    for p, q in zip(a["method"].global_model().parameters(), b["method"].global_model().parameters(), strict=True):
        assert torch.equal(p, q)
    rows_a, rows_b = read_metrics(tmp_path / "a" / "metrics.jsonl"), read_metrics(tmp_path / "b" / "metrics.jsonl")
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert rb.get("rejected", []) == [] and rb.get("lost", []) == []
        keep = [k for k in ra if k not in MEASURED and not k.startswith("bytes_")]
        assert {k: ra[k] for k in keep} == {k: rb[k] for k in keep}
    for ra, rb in zip(rows_a[1:], rows_b[1:], strict=True):  # the arrays sent are what in-process counts
        assert rb["bytes_up_payload_per_client"] == ra["bytes_up_per_client"] + 4 * NPY_HEADER


def test_hostile_ferret_uploads_are_rejected_and_the_round_goes_on(tiny_model_dir, data_file, tmp_path):
    argv = flags(tiny_model_dir, data_file, tmp_path / "run", "--engine", "flower", "--flower_nodes", "2",
                 "--num_clients", "4", "-m", "1.0")
    run_flower_with_faults(argv, ["index_high", "value_nan", "", ""])
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")[1:]
    for row in rows:
        reasons = {r["client"]: r["reason"] for r in row["rejected"]}
        assert "block index outside" in reasons[0] and "non-finite gamma" in reasons[1], reasons
        assert sorted(row["clients"]) == [2, 3]
    assert rows[-1]["eval_loss"] < read_metrics(tmp_path / "run" / "metrics.jsonl")[0]["eval_loss"]
