"""The Flower app end to end on the tiny model: Flower's simulation engine gives the in-process engine's c bit for
bit, measures a few KB a client a round, rejects hostile replies and goes on; (slow) FedKSeed-Pro, the summed
catch-up, and a real SuperLink + 2 SuperNodes deployment on 127.0.0.1."""
from __future__ import annotations

import json
import os
import subprocess

os.environ["FEDKSEED_COMPILE"] = "0"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("flwr")
pytest.importorskip("ray")

from conftest import ROOT, run_flower_with_faults, tiny_flags, train  # noqa: E402
from run_records import read_metrics  # noqa: E402

K, STEPS = 1024, 200


def flags(model_dir, data_file, out, *extra) -> list[str]:
    """4 clients, 2 a round, 3 rounds of 200 steps with K = 1024 (the issue's size setting)."""
    return tiny_flags(model_dir, data_file, out, "--save", *extra, K=K, local_step=STEPS, eval_every=0)


@pytest.fixture(scope="module")
def inprocess(tiny_model_dir, data_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("inprocess")
    return train(flags(tiny_model_dir, data_file, out)), out


@pytest.fixture(scope="module")
def flower(tiny_model_dir, data_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("flower")
    # 2 SuperNodes for 4 clients: a node hosting two selected clients gets them in two waves, and nodes miss rounds
    return train(flags(tiny_model_dir, data_file, out, "--engine", "flower", "--flower_nodes", "2")), out


def test_flower_simulation_c_is_bit_identical_to_the_inprocess_run(inprocess, flower):
    (a, a_dir), (b, b_dir) = inprocess, flower
    assert np.count_nonzero(a["method"].c) > 100
    assert np.array_equal(a["method"].c, b["method"].c)
    assert np.array_equal(np.load(a_dir / "coefficients.npz")["c"], np.load(b_dir / "coefficients.npz")["c"])
    for p, q in zip(a["method"].global_model().parameters(), b["method"].global_model().parameters(), strict=True):
        assert torch.equal(p, q)
    rows_a, rows_b = read_metrics(a_dir / "metrics.jsonl"), read_metrics(b_dir / "metrics.jsonl")
    assert rows_a[0]["round"] == rows_b[0]["round"] == 0 and rows_a[0]["eval_loss"] == rows_b[0]["eval_loss"]
    rows_a, rows_b = rows_a[1:], rows_b[1:]  # round 0 is the base model's evaluation
    assert [r["clients"] for r in rows_a] == [r["clients"] for r in rows_b]
    assert [r["train_loss"] for r in rows_a] == [r["train_loss"] for r in rows_b]
    assert a["summary"]["final"] == b["summary"]["final"]
    assert all(r["rejected"] == [] for r in rows_b)


def test_flower_metrics_report_measured_bytes_within_the_bounds(flower):
    _, out = flower
    rows = [r for r in read_metrics(out / "metrics.jsonl") if r["round"] > 0]  # round 0: the base model
    assert len(rows) == 3
    for row in rows:
        assert row["bytes_up_payload_per_client"] == STEPS * 8  # int32 index + float32 g a step
        assert row["bytes_up_record_per_client"] <= 2048  # ~2 KB at 200 local steps
        assert row["bytes_up_per_client"] <= 2048 + 512  # plus Flower's framing
        assert row["bytes_down_max"] <= 8192  # K = 1024: within ~8 KB, framing included, in this setting
    comm = json.loads((out / "summary.json").read_text())["communication"]
    assert comm["within_paper_bound"] and comm["bytes_total_per_client_round"] < 18_000
    assert comm["bytes_down_per_client_round"] > 0 and "object tree" in comm["measured_as"]


def test_hostile_replies_are_rejected_per_message_and_the_round_goes_on(tiny_model_dir, data_file, tmp_path):
    kinds = ["nan", "inf", "index", "lengths", "zero_samples", "negative_samples", "round", "oversized"]
    argv = flags(tiny_model_dir, data_file, tmp_path / "hostile", "--engine", "flower", "--flower_nodes", "5",
                 "--num_clients", "10", "-m", "1", "--rounds", "1", "--local_step", "3", "-K", "64", "--iid", "0",
                 "--log")
    result = run_flower_with_faults(argv, kinds)
    base, row = read_metrics(tmp_path / "hostile" / "metrics.jsonl")
    assert base["round"] == 0
    assert row["selected"] == list(range(10))
    assert row["clients"] == [8, 9]  # the honest ones, aggregated
    reasons = {r["client"]: r["reason"] for r in row["rejected"]}
    expected = ["non-finite", "non-finite", "outside [0, 64)", "gradients", "not positive", "not positive",
                "round 0, expected 1", "oversized"]
    assert sorted(reasons) == list(range(8))
    for cid, phrase in enumerate(expected):
        assert phrase in reasons[cid], (kinds[cid], reasons[cid])
    assert 0 < np.count_nonzero(result["method"].c) <= 6  # 2 clients x 3 steps
    log = (tmp_path / "hostile" / "train.log").read_text()
    assert log.count("rejected the reply") == 8  # each one logged


# --- slow -------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_flower_pro_simulation_c_is_bit_identical_to_the_inprocess_run(tiny_model_dir, data_file, tmp_path):
    extra = ["--bias_sampling", "-K", "64", "--local_step", "30"]
    a = train(flags(tiny_model_dir, data_file, tmp_path / "a", *extra))
    b = train(flags(tiny_model_dir, data_file, tmp_path / "b", *extra, "--engine", "flower", "--flower_nodes", "2"))
    assert np.array_equal(a["method"].c, b["method"].c)


@pytest.mark.slow
def test_flower_summed_catchup_is_exact_in_closed_form_and_close_in_c(tiny_model_dir, data_file, tmp_path):
    """The paper's catch-up: the same round 1 (everyone starts at theta0), then c close but not bitwise equal (the
    nodes' weights differ from the server's by rounding, and so do their g; at K = 1024 / 200 steps / lr 1e-3 the
    tiny model's MeZO trajectory amplifies that, as the in-process --client_sync replay does, hence K = 64 here)."""
    from conftest import materialise
    from modeling import load_model

    small = ["-K", "64", "--local_step", "30"]
    exact = train(flags(tiny_model_dir, data_file, tmp_path / "e", *small, "--engine", "flower"))
    summed = train(flags(tiny_model_dir, data_file, tmp_path / "s", *small, "--engine", "flower",
                         "--flower_catchup", "summed"))
    c, ref = summed["method"].c, exact["method"].c
    rows_e, rows_s = read_metrics(tmp_path / "e" / "metrics.jsonl"), read_metrics(tmp_path / "s" / "metrics.jsonl")
    round_1 = [next(r for r in rows if r["round"] == 1) for rows in (rows_e, rows_s)]  # rows[0] is the base model
    assert round_1[0]["train_loss"] == round_1[1]["train_loss"]
    assert not np.array_equal(c, ref)
    assert np.max(np.abs(c - ref)) < 1e-2 * np.max(np.abs(ref))
    rebuilt = materialise(load_model(str(tiny_model_dir)), summed["method"].server.seed_pool, c, 1e-3)
    for p, q in zip(rebuilt.parameters(), summed["method"].server.seeded.model.parameters(), strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=1e-5)
    assert max(r["bytes_down_payload_per_client"] for r in rows_s[1:]) <= 64 * 8 + 64 // 8 + 8  # at most K entries


@pytest.mark.slow
def test_deployment_script_with_two_supernodes_matches_the_simulation(tiny_model_dir, data_file, tmp_path):
    small = ["--rounds", "2", "--local_step", "20", "--log"]
    deploy = subprocess.run(
        ["bash", str(ROOT / "scripts" / "flower_deploy_local.sh"), "--nodes", "2", "--port", "18790", "--",
         *flags(tiny_model_dir, data_file, tmp_path / "deploy", *small)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"})  # one torch thread, as train() runs: matmul sums depend on it
    assert deploy.returncode == 0, deploy.stderr[-3000:]
    sim = train(flags(tiny_model_dir, data_file, tmp_path / "sim", *small, "--engine", "flower",
                      "--flower_nodes", "2"))
    c = np.load(tmp_path / "deploy" / "coefficients.npz")["c"]
    assert np.count_nonzero(c) > 10 and np.array_equal(c, sim["method"].c)
    comm = json.loads((tmp_path / "deploy" / "summary.json").read_text())["communication"]
    assert comm["within_paper_bound"]
    assert "stopped 3 process groups" in deploy.stderr
