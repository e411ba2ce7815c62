"""Ferret (--method ferret): the projection is unbiased, independent of the thread count, the server's and a
replaying client's models are bit-identical, hostile uploads are refused, a resumed run equals the uninterrupted
one, and the tiny model learns."""
from __future__ import annotations

import os

os.environ["FEDKSEED_COMPILE"] = "0"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import config  # noqa: E402
import main  # noqa: E402
from conftest import tiny_flags, train  # noqa: E402
from methods.ferret import check_upload  # noqa: E402
from optimizers.block_projection import ferret_blocks, project_update, seeds_per_block  # noqa: E402
from optimizers.perturbation import Perturbation  # noqa: E402
from optimizers.seed_pool import make_seed_pool  # noqa: E402
from run_records import MEASURED, read_metrics  # noqa: E402
from streams import stream  # noqa: E402


def flags(model_dir, data_file, out, *extra) -> list[str]:
    """4 clients, 2 a round, 3 rounds of 6 steps, K = 64; zo_eps at its default."""
    return tiny_flags(model_dir, data_file, out, "--method", "ferret", *extra, K=64, local_step=6, lr="1e-2",
                      zo_eps=None, no_compile=False)


def test_blocks_follow_the_reference_rule():
    # target int(0.9 * median) = 9: the three small tensors share a block, each large one is alone
    assert ferret_blocks([1, 1, 1, 10, 10, 10, 10]).tolist() == [0, 0, 0, 1, 2, 3, 4]
    assert seeds_per_block(np.array([4.0, 1.0, 0.0]), 64).tolist() == [64, 16, 2]


def reconstruct(pert: Perturbation, blocks, pool, seeds, block_ids, gammas) -> list[torch.Tensor]:
    """sum_k gamma_{k,l} z_{k,l} written onto a zeroed copy of the model's parameters."""
    with torch.no_grad():
        for _, p in pert.params:
            p.zero_()
    used = np.unique(seeds)
    table = np.zeros((len(used), int(blocks.max()) + 1))
    table[np.searchsorted(used, seeds), block_ids] = gammas
    pert.replay_table_(pool[used].tolist(), table[:, blocks].T)
    return [p.detach().clone() for _, p in pert.params]


def test_the_projection_reconstructs_the_update_without_bias():
    """Averaged over independent seed pools, sum_k gamma z equals Delta: within 0.35 of |Delta| after 300 pools,
    where a reconstruction of Delta / 3 (the reference's scale) is 0.67 away."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16, bias=False), torch.nn.Linear(16, 8, bias=False))
    pert = Perturbation(model)  # the native kernels where they build: the eager path is ten times slower here
    blocks = ferret_blocks([p.numel() for _, p in pert.params])
    delta = [torch.randn_like(p) for _, p in pert.params]
    total = [torch.zeros_like(p, dtype=torch.float64) for _, p in pert.params]
    trials = 300
    for t in range(trials):
        pool = make_seed_pool(64, stream(t, "server"))
        seeds, block_ids, gammas = project_update(pert, blocks, delta, pool, stream(t, "ferret", 1, 0))
        for acc, part in zip(total, reconstruct(pert, blocks, pool, seeds, block_ids, gammas), strict=True):
            acc += part.double()
    mean = torch.cat([(acc / trials).flatten() for acc in total])
    want = torch.cat([d.double().flatten() for d in delta])
    error = float((mean - want).norm() / want.norm())
    assert error < 0.35, error
    assert float((mean / 3 - want).norm() / want.norm()) > 0.5  # the biased scale fails the same bound


def test_the_projection_does_not_depend_on_the_thread_count():
    """Large enough tensors that torch's and the native kernel's work is split across threads."""
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(2048, 1024, bias=False), torch.nn.Linear(1024, 512))
    pert = Perturbation(model)  # the native kernel where it builds: its blocks split across threads
    blocks = ferret_blocks([p.numel() for _, p in pert.params])
    delta = [torch.randn_like(p) for _, p in pert.params]
    pool = make_seed_pool(4, stream(0, "server"))
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(project_update(pert, blocks, delta, pool, stream(0, "ferret", 1, 0)))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results, strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_the_native_projection_agrees_with_the_reference_stream(kind):
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Linear(301, 33), torch.nn.Linear(33, 3))  # odd sizes: partial pairs, words
    native, reference = Perturbation(model, kind=kind), Perturbation(model, kind=kind, compile=False)
    if not native.native:
        pytest.skip("the native kernel is off (FEDKSEED_NATIVE=0)")
    for i, (_, p) in enumerate(native.params):
        values = torch.randn_like(p)
        a, b = native.project(i, values, [3, 99, 2**30]), reference.project(i, values, [3, 99, 2**30])
        assert np.allclose(a, b, rtol=1e-5, atol=1e-5), (a, b)


def upload(**changes) -> dict[str, np.ndarray]:
    arrays = {"seeds": np.array([0, 1, 1], np.int32), "blocks": np.array([0, 0, 1], np.int32),
              "gammas": np.array([0.5, -0.25, 1.0], np.float32), "synced": np.array([0], np.int64)}
    return {**arrays, **changes}


@pytest.mark.parametrize("changes, reason", [
    ({}, None),
    ({"seeds": np.array([0, 1, 64], np.int32)}, "seed index outside [0, 64)"),
    ({"seeds": np.array([0, -1, 3], np.int32)}, "seed index outside [0, 64)"),
    ({"blocks": np.array([0, 0, 2], np.int32)}, "block index outside [0, 2)"),
    ({"gammas": np.array([0.5, np.nan, 1.0], np.float32)}, "non-finite"),
    ({"gammas": np.array([0.5, np.inf, 1.0], np.float32)}, "non-finite"),
    ({"seeds": np.array([1, 1, 0], np.int32), "blocks": np.array([0, 0, 1], np.int32)}, "appears twice"),
    ({"gammas": np.array([0.5, 1.0], np.float32)}, "differ in length"),
    ({"seeds": np.array([0.0, 1.0, 1.0])}, "seeds: float64"),
    ({"extra": np.zeros(1)}, "upload holds"),
])
def test_hostile_uploads_are_refused(changes, reason):
    got = check_upload(upload(**changes), k=64, n_blocks=2)
    assert (got is None) if reason is None else (reason in got)


def test_ferret_learns_and_a_replaying_client_holds_the_servers_model_bit_for_bit(tiny_model_dir, data_file,
                                                                                  tmp_path):
    result = train(flags(tiny_model_dir, data_file, tmp_path / "run", "--save"))
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert rows[-1]["eval_loss"] < rows[0]["eval_loss"] - 0.5  # base 4.56 on the tiny model
    assert all(r["bytes_up_per_client"] > 8 for r in rows[1:])
    # the passes (6 first-order steps) counted exactly; catch-up and projection measured against them
    assert all(r["forward_equivalents_per_client"] == 18 and r["overhead_forward_equivalents_per_client"] > 0
               for r in rows[1:])
    method = result["method"]
    assert np.count_nonzero(method.c) > 100
    from checkpoint import load_checkpoint
    from methods.ferret import Ferret
    from modeling import load_model

    args = config.validate(config.build_parser().parse_args(flags(tiny_model_dir, data_file, tmp_path / "x")))
    replayed = Ferret(args, load_model(str(tiny_model_dir)), [], load_checkpoint(tmp_path / "run"))
    for p, q in zip(replayed.global_model().parameters(), method.global_model().parameters(), strict=True):
        assert torch.equal(p, q)
    assert main.main(["export", str(tmp_path / "run"), str(tmp_path / "exported")]) == 0
    exported = load_model(str(tmp_path / "exported"))
    for p, q in zip(exported.parameters(), method.global_model().parameters(), strict=True):
        assert torch.equal(p, q)


def test_a_resumed_run_equals_the_uninterrupted_one(tiny_model_dir, data_file, tmp_path):
    whole = train(flags(tiny_model_dir, data_file, tmp_path / "whole"))
    train(flags(tiny_model_dir, data_file, tmp_path / "cut", "--rounds", "1"))
    again = train(["--resume", str(tmp_path / "cut"), "--rounds", "3"])
    assert np.array_equal(whole["method"].c, again["method"].c)
    rows = [[{k: v for k, v in r.items() if k not in MEASURED} for r in read_metrics(tmp_path / d / "metrics.jsonl")]
            for d in ("whole", "cut")]
    assert rows[0] == rows[1]


def test_a_client_is_charged_the_entries_of_c_changed_since_it_last_synced(tiny_model_dir, data_file, tmp_path):
    """As FedKSeed: the download is the summed catch-up (12 B an entry of c that changed), never more than the whole
    K x L table, and less than the rounds of Delta c it replaces once a client has missed rounds that overlap."""
    from checkpoint import load_checkpoint
    from studies.quality_cost.ferret_download import charged

    result = train(flags(tiny_model_dir, data_file, tmp_path / "run", "--rounds", "4"))
    rows, deltas = read_metrics(tmp_path / "run" / "metrics.jsonl"), load_checkpoint(tmp_path / "run").deltas
    assert charged(deltas, rows) == {r["round"]: r["bytes_down_per_client"] for r in rows if r["round"] > 0}
    assert rows[1]["bytes_down_per_client"] == 0  # nothing to catch up in round 1
    table = 12 * result["method"].c.size
    assert all(r["bytes_down_per_client"] <= table for r in rows[1:])
    rounds_of_delta = sum(12 * len(idx) for idx, _ in deltas[:3])  # a client new in round 4 lacks rounds 1-3
    union = 12 * len(np.unique(np.concatenate([idx for idx, _ in deltas[:3]])))
    assert union < rounds_of_delta
    assert charged(deltas, [{"round": 4, "clients": [99]}]) == {4: union}


@pytest.mark.parametrize("extra, message", [
    (["--dtype", "bfloat16"], "--method ferret: needs --dtype float32"),
    (["--server_lr", "0"], "--server_lr 0.0: must be positive"),
    (["--aggregation", "median"], "--method ferret averages gamma"),
])
def test_impossible_ferret_flags_are_one_line_errors(tiny_model_dir, data_file, tmp_path, capsys, extra, message):
    assert main.main(flags(tiny_model_dir, data_file, tmp_path / "run", *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_node_copy_catches_up_bit_for_bit_or_says_it_is_out_of_sync(tiny_model_dir, data_file, tmp_path):
    from methods.ferret import Ferret, OutOfSync
    from modeling import load_model

    result = train(flags(tiny_model_dir, data_file, tmp_path / "run", "--rounds", "2"))
    method = result["method"]
    args = config.validate(config.build_parser().parse_args(flags(tiny_model_dir, data_file, tmp_path / "x")))
    fresh = Ferret.build_client(args, load_model(str(tiny_model_dir)))
    with pytest.raises(OutOfSync, match="out of sync"):  # a node that lost its copy is sent only round 2
        fresh.catch_up(method.download(0, 3, since=1), 3)
    fresh.catch_up(method.download(0, 3, since=0), 3)  # the resync: every round from theta0
    assert fresh.held.round == 2 and np.array_equal(fresh.held.c, method.c)
    for p, q in zip(fresh.held.model.parameters(), method.global_model().parameters(), strict=True):
        assert torch.equal(p, q)
