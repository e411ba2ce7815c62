"""The other methods in Flower's simulation engine on the tiny model: FedIT's adapters travel as ArrayRecords and end
bit-identical to the in-process run, with the measured message sizes in metrics.jsonl; hostile tensor uploads are
rejected per message; FedKSeed on LoRA gives the in-process c bit for bit; FedAvg's full weights travel the same
way; a node holds one copy of the model."""
from __future__ import annotations

import gc
import json
import os

os.environ["FEDKSEED_COMPILE"] = "0"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("flwr")
pytest.importorskip("ray")

import config  # noqa: E402
from conftest import run_flower_with_faults, tiny_flags, train  # noqa: E402
from run_records import read_metrics  # noqa: E402

ADAPTER_BYTES = 2 * ((8 * 32 + 32 * 8) + (8 * 32 + 16 * 8)) * 4  # tiny model, r 8 on q_proj and v_proj, float32


# 4 clients, 2 a round, 3 rounds of 4 steps; K and zo_eps are left to their defaults
SETTINGS = {"K": None, "local_step": 4, "eval_every": 1, "lr": "1e-2", "zo_eps": None}


def flags(model_dir, data_file, out, *extra) -> list[str]:
    """Dropout on, so that its seeding is part of what must match."""
    return tiny_flags(model_dir, data_file, out, "--lora_dropout", "0.1", *extra, **SETTINGS)


def fedavg_flags(model_dir, data_file, out, *extra) -> list[str]:
    """flags() without its LoRA dropout, which --method fedavg refuses."""
    return tiny_flags(model_dir, data_file, out, "--method", "fedavg", *extra, **SETTINGS)


@pytest.fixture(scope="module")
def fedit_runs(tiny_model_dir, data_file, tmp_path_factory):
    a_dir, b_dir = tmp_path_factory.mktemp("inprocess"), tmp_path_factory.mktemp("flower")
    a = train(flags(tiny_model_dir, data_file, a_dir, "--method", "fedit"))
    b = train(flags(tiny_model_dir, data_file, b_dir, "--method", "fedit", "--engine", "flower",
                    "--flower_nodes", "2"))
    return (a, a_dir), (b, b_dir)


def test_fedit_in_flower_is_bit_identical_to_the_inprocess_run(fedit_runs):
    (a, a_dir), (b, b_dir) = fedit_runs
    ta, tb = a["method"].global_tensors, b["method"].global_tensors
    assert ta.keys() == tb.keys() and len(ta) == 8  # A and B on q_proj, v_proj of 2 layers
    assert any(np.any(t != 0) for name, t in ta.items() if "lora_B" in name)  # trained: B starts at zero
    assert all(np.array_equal(ta[name], tb[name]) for name in ta)
    rows_a, rows_b = read_metrics(a_dir / "metrics.jsonl"), read_metrics(b_dir / "metrics.jsonl")
    assert [r["round"] for r in rows_b] == [0, 1, 2, 3]
    for key in ("clients", "train_loss", "eval_loss", "forward_equivalents_per_client"):
        assert [r.get(key) for r in rows_a] == [r.get(key) for r in rows_b], key
    assert rows_b[-1]["eval_loss"] < rows_b[0]["eval_loss"]


def test_fedit_in_flower_reports_the_measured_adapter_messages(fedit_runs):
    _, (b, b_dir) = fedit_runs
    for row in read_metrics(b_dir / "metrics.jsonl")[1:]:
        assert row["rejected"] == [] and row["lost"] == []
        # the .npy serialization of each adapter: its float32 data and a header of at most 128 bytes
        for way in ("down", "up"):
            payload = row[f"bytes_{way}_payload_per_client"]
            assert ADAPTER_BYTES < payload <= ADAPTER_BYTES + 8 * 128  # 8 tensors
            assert row[f"bytes_{way}_per_client"] > payload  # the whole message: records, metadata, ids
        assert row["peak_memory_bytes"] > 0 and row["client_seconds"] > 0
    summary = json.loads((b_dir / "summary.json").read_text())
    assert summary["engine"] == "flower" and summary["method"] == "fedit"
    assert summary["communication"]["bytes_up_per_client_round"] > ADAPTER_BYTES


def test_hostile_tensor_uploads_are_rejected_and_the_round_goes_on(tiny_model_dir, data_file, tmp_path):
    kinds = ["tensor_nan", "tensor_shape", "tensor_missing", "tensor_dtype"]
    argv = flags(tiny_model_dir, data_file, tmp_path / "hostile", "--method", "fedit", "--engine", "flower",
                 "--num_clients", "6", "-m", "1", "--rounds", "1", "--local_step", "1", "--flower_nodes", "2",
                 "--iid", "0")
    result = run_flower_with_faults(argv, kinds)
    row = read_metrics(tmp_path / "hostile" / "metrics.jsonl")[-1]
    assert row["clients"] == [4, 5]  # the honest ones
    reasons = {r["client"]: r["reason"] for r in row["rejected"]}
    assert sorted(reasons) == [0, 1, 2, 3]
    for cid, phrase in enumerate(["non-finite", "expected float32", "names 7 tensors", "float64"]):
        assert phrase in reasons[cid], (kinds[cid], reasons[cid])
    assert all(np.isfinite(t).all() for t in result["method"].global_tensors.values())


@pytest.mark.slow  # a long end-to-end check: the default suite keeps FedIT's in Flower
def test_fedkseed_on_lora_in_flower_gives_the_inprocess_c(tiny_model_dir, data_file, tmp_path):
    extra = ["--peft", "lora", "-K", "64", "--local_step", "20", "--lr", "1e-3", "--lora_dropout", "0", "--save"]
    a = train(flags(tiny_model_dir, data_file, tmp_path / "a", *extra))
    b = train(flags(tiny_model_dir, data_file, tmp_path / "b", *extra, "--engine", "flower", "--flower_nodes", "2"))
    assert np.count_nonzero(a["method"].c) > 10
    assert np.array_equal(a["method"].c, b["method"].c)
    rows_a, rows_b = read_metrics(tmp_path / "a" / "metrics.jsonl"), read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert [r["eval_loss"] for r in rows_a] == [r["eval_loss"] for r in rows_b]


@pytest.mark.slow  # a long end-to-end check: the default suite keeps FedIT's in Flower
def test_fedit_in_flower_resumed_from_a_checkpoint_ends_as_the_uninterrupted_run(fedit_runs, tiny_model_dir, data_file,
                                                                                 tmp_path):
    _, (b, b_dir) = fedit_runs
    out = tmp_path / "resumed"
    argv = flags(tiny_model_dir, data_file, out, "--method", "fedit", "--engine", "flower", "--flower_nodes", "2")
    train([*argv[:argv.index("--rounds") + 1], "2", *argv[argv.index("--rounds") + 2:]])
    resumed = train(["--resume", str(out), "--rounds", "3", "--quiet"])
    assert resumed["summary"]["engine"] == "flower"
    tb, tr = b["method"].global_tensors, resumed["method"].global_tensors
    assert all(np.array_equal(tb[name], tr[name]) for name in tb)
    rows_b, rows_r = read_metrics(b_dir / "metrics.jsonl"), read_metrics(out / "metrics.jsonl")
    assert [(r["round"], r.get("train_loss"), r["eval_loss"]) for r in rows_b] == \
        [(r["round"], r.get("train_loss"), r["eval_loss"]) for r in rows_r]


@pytest.mark.slow  # a long end-to-end check: the default suite keeps FedIT's in Flower
def test_fedavg_in_flower_is_bit_identical_to_the_inprocess_run(tiny_model_dir, data_file, tmp_path):
    extra = ["--rounds", "2", "--lr", "1e-3"]
    a = train(fedavg_flags(tiny_model_dir, data_file, tmp_path / "a", *extra))
    b = train(fedavg_flags(tiny_model_dir, data_file, tmp_path / "b", *extra, "--engine", "flower",
                           "--flower_nodes", "2"))
    ta, tb = a["method"].global_tensors, b["method"].global_tensors
    assert ta.keys() == tb.keys() and not any("lora" in name for name in ta)
    assert sum(t.size for t in ta.values()) == sum(p.numel() for p in a["method"].server_model.parameters())
    assert all(np.array_equal(ta[name], tb[name]) for name in ta)
    rows_a, rows_b = read_metrics(tmp_path / "a" / "metrics.jsonl"), read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert [r.get("eval_loss") for r in rows_a] == [r.get("eval_loss") for r in rows_b]
    assert rows_b[-1]["eval_loss"] < rows_b[0]["eval_loss"]
    weights = sum(t.nbytes for t in ta.values())
    assert all(r["bytes_up_payload_per_client"] > weights for r in rows_b[1:])


def weights_alive() -> dict[int, int]:
    """The parameter tensors of every model in the process: data pointer -> elements."""
    from transformers import PreTrainedModel

    return {p.data_ptr(): p.numel() for o in gc.get_objects() if isinstance(o, PreTrainedModel)
            for p in o.parameters()}


@pytest.mark.parametrize("method", ["fedit", "fedavg"])
def test_a_node_holds_one_copy_of_the_model(method, tiny_model_dir, data_file, tmp_path):
    """A node trains the client side alone: no server copy of the model beside its work copy."""
    from flower_app.node_runtime import NodeRuntime

    argv = (fedavg_flags if method == "fedavg" else flags)(tiny_model_dir, data_file, tmp_path, "--method", method,
                                                          "--engine", "flower")
    args = config.validate(config.build_parser().parse_args(argv))
    before = weights_alive()
    rt = NodeRuntime(args)
    assert rt.fingerprint
    new = {ptr: n for ptr, n in weights_alive().items() if ptr not in before}
    assert sum(new.values()) == sum(p.numel() for p in rt.array_client.work.parameters())
