"""A client whose every record is too long for --max_length is left out of the run, and its id with it: the round's
clients are drawn among the others (Natural Instructions at --max_length 256 leaves 42 of 644 tasks so)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import tiny_flags, train
from run_records import read_metrics
from server import sample_clients

os.environ.setdefault("FEDKSEED_COMPILE", "0")


def test_the_draw_is_of_positions_among_the_usable_ids():
    ids = [0, 2, 4, 5]
    drawn = sample_clients(np.random.default_rng(7), 0.5, ids)
    positions = sorted(np.random.default_rng(7).choice(4, size=2, replace=False).tolist())
    assert drawn == [ids[p] for p in positions]
    assert sample_clients(np.random.default_rng(7), 1.0, ids) == ids


@pytest.mark.parametrize("method", ["fedkseed", "ferret", "fedit"])
def test_a_run_trains_only_the_clients_with_a_usable_example(tiny_model_dir, tmp_path, method):
    words = "the river is long and the city is old"
    rows = []
    for client in range(6):
        unusable = client in (1, 3)  # every record's prompt fills --max_length: no response token left
        for i in range(4):
            instruction = f"{words} " * (12 if unusable else 1) + f"what is {i} ?"
            rows.append({"instruction": instruction, "context": "", "response": f"it is {i} .",
                         "category": "qa", "client": f"c{client}"})
    data = tmp_path / "own.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    train(tiny_flags(tiny_model_dir, str(data), out, "--iid", "client", "--eval_fraction", "0.25", "--max_length",
                     "48", "--method", method, dataset="json", m="1", rounds=2, clients=None))
    drawn = [r["clients"] for r in read_metrics(out / "metrics.jsonl") if r["round"] > 0]
    assert drawn == [[0, 2, 4, 5]] * 2
