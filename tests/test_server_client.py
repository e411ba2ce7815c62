"""Server and clients: per-seed aggregation weighted by data size, the global model as
theta0 - lr * sum_j c_j z_j, catch-up by replaying Delta c, determinism, and FedKSeed-Pro's probabilities."""
from __future__ import annotations

import os

os.environ.setdefault("FEDKSEED_COMPILE", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from client import Client, ClientUpdate, LocalTraining  # noqa: E402
from conftest import (  # noqa: E402
    dolly_records,
    materialise,  # noqa: E402
    tiny_flags,
    train,
)
from modeling import load_model, load_tokenizer  # noqa: E402
from optimizers.mezo_bias_optimizer import pro_probabilities  # noqa: E402
from optimizers.seed_pool import SeededModel  # noqa: E402
from server import Server, ServerConfig, aggregate  # noqa: E402
from utils_data.llm_dataset import LLMDataset  # noqa: E402

K, LR, EPS, LOCAL_STEP = 8, 1e-3, 1e-3, 2
FP32_TOL = 1e-5


def update(indices, grads, num_samples, client_id=0) -> ClientUpdate:
    return ClientUpdate(client_id=client_id, round=1, seed_indices=np.asarray(indices, dtype=np.int64),
                        grads=np.asarray(grads, dtype=np.float64), num_samples=num_samples)


FAKE_UPDATES = [
    update([0, 2, 0], [1.0, 2.0, 3.0], num_samples=10, client_id=0),  # seed 0 used twice by one client
    update([2, 3], [-1.0, 4.0], num_samples=30, client_id=1),
    update([], [], num_samples=20, client_id=2),  # every step skipped: weight counted, nothing added
]


def test_aggregate_weights_each_client_by_its_number_of_samples():
    # weights 10/60, 30/60, 20/60
    #   seed 0: (1 + 3) / 6          = 2/3
    #   seed 1: nothing               = 0
    #   seed 2: 2/6 - 1 * 3/6         = -1/6
    #   seed 3: 4 * 3/6               = 2
    delta = aggregate(FAKE_UPDATES, k=5, equal_weight=False)
    np.testing.assert_allclose(delta, [2 / 3, 0.0, -1 / 6, 2.0, 0.0], rtol=1e-12, atol=1e-15)


def test_aggregate_equal_weight_gives_each_client_one_share():
    # weights 1/3 each: seed 0: 4/3; seed 2: (2 - 1)/3 = 1/3; seed 3: 4/3
    delta = aggregate(FAKE_UPDATES, k=5, equal_weight=True)
    np.testing.assert_allclose(delta, [4 / 3, 0.0, 1 / 3, 4 / 3, 0.0], rtol=1e-12, atol=1e-15)


def test_aggregate_of_no_updates_is_zero():
    np.testing.assert_array_equal(aggregate([], k=3, equal_weight=False), np.zeros(3))


def small_server(num_clients: int, fraction: float, seed: int = 0, **kw) -> Server:
    cfg = ServerConfig(client_ids=tuple(range(num_clients)), client_fraction=fraction, k=4,
                       local=LocalTraining(0.1, 0.01, 1), seed=seed, **kw)
    return Server(torch.nn.Linear(3, 2), cfg, compile=False)


@pytest.mark.parametrize(("n", "m", "expected"), [(10, 0.25, 2), (200, 0.05, 10), (7, 1.0, 7), (10, 0.01, 1),
                                                  (3, 0.5, 1), (1, 0.05, 1), (626, 0.003, 1), (10, 0.15, 1),
                                                  # m * n in floats is 7.000000000000001 and 28.999999999999996:
                                                  # still exactly 7 and 29 clients
                                                  (100, 0.07, 7), (50, 0.14, 7), (100, 0.29, 29)])
def test_select_clients_draws_int_m_times_n_distinct_clients(n, m, expected):
    server = small_server(n, m)
    selections = [server.select_clients() for _ in range(20)]
    for chosen in selections:
        assert len(chosen) == expected
        assert len(set(chosen)) == expected
        assert all(0 <= c < n for c in chosen)
    if 1 < expected < n:
        assert len({tuple(s) for s in selections}) > 1  # a fresh draw every round


def test_server_apply_round_moves_c_by_the_aggregate_and_keeps_the_closed_form():
    server = small_server(3, 1.0)
    theta0 = torch.nn.Linear(3, 2)
    theta0.load_state_dict(server.seeded.model.state_dict())
    updates = [update([0, 2, 0], [1.0, 2.0, 3.0], 10), update([2, 3], [-1.0, 4.0], 30)]
    delta = server.apply_round(updates)
    np.testing.assert_allclose(delta, [1.0, 0.0, 2 * 0.25 - 0.75, 3.0], rtol=1e-12)  # weights 1/4, 3/4
    np.testing.assert_array_equal(server.c, delta)
    server.apply_round(updates)
    np.testing.assert_allclose(server.c, 2 * delta, rtol=1e-12)
    rebuilt = materialise(theta0, server.seed_pool, server.c, 0.1)
    for a, b in zip(rebuilt.parameters(), server.seeded.model.parameters(), strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=FP32_TOL)


# --- in-process runs through main.train -----------------------------------------------------------------


def run_main(model_dir, data_file, out, *extra: str) -> dict:
    """A run on the tiny model: K=8, 4 clients, half of them a round, 3 rounds of 2 steps."""
    return train(tiny_flags(model_dir, data_file, out, *extra, K=K, local_step=LOCAL_STEP, eval_every=0, lr=LR,
                            zo_eps=EPS))


@pytest.fixture(scope="module")
def base_run(tiny_model_dir, data_file, tmp_path_factory):
    return run_main(tiny_model_dir, data_file, tmp_path_factory.mktemp("run"))


def max_abs_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max(float((p.detach() - q.detach()).abs().max())
               for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_global_model_equals_theta0_minus_lr_sum_c_z(base_run, tiny_model_dir):
    server = base_run["method"].server
    c = base_run["method"].c
    assert np.count_nonzero(c) >= 2
    theta0 = load_model(str(tiny_model_dir))
    assert max_abs_diff(theta0, server.seeded.model) > 1e-3  # training moved the model
    rebuilt = materialise(load_model(str(tiny_model_dir)), server.seed_pool, c, LR)
    assert max_abs_diff(rebuilt, server.seeded.model) < FP32_TOL
    assert np.isfinite(base_run["summary"]["final"]["eval_loss"])


def test_same_seed_gives_bit_identical_c_and_another_seed_does_not(base_run, tiny_model_dir, data_file, tmp_path):
    again = run_main(tiny_model_dir, data_file, tmp_path / "again")
    assert np.array_equal(again["method"].c, base_run["method"].c)
    assert np.array_equal(again["method"].server.seed_pool, base_run["method"].server.seed_pool)
    assert max_abs_diff(again["method"].server.seeded.model, base_run["method"].server.seeded.model) == 0.0
    other = run_main(tiny_model_dir, data_file, tmp_path / "other", "--seed", "7")
    assert not np.array_equal(other["method"].server.seed_pool, base_run["method"].server.seed_pool)
    assert not np.allclose(other["method"].c, base_run["method"].c)


def test_replay_client_sync_reaches_the_same_model_as_copy(base_run, tiny_model_dir, data_file, tmp_path):
    replay = run_main(tiny_model_dir, data_file, tmp_path, "--client_sync", "replay")
    # The replayed client copy matches the server's weights only to fp32 rounding, and g divides a loss
    # difference by 2 eps, so c agrees closely but not bit for bit.
    np.testing.assert_allclose(replay["method"].c, base_run["method"].c, rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(np.flatnonzero(replay["method"].c), np.flatnonzero(base_run["method"].c))
    assert max_abs_diff(replay["method"].server.seeded.model, base_run["method"].server.seeded.model) < FP32_TOL
    # replay: the clients train on the server's own model, one model in memory; copy: a second one
    assert replay["method"].work is replay["method"].server.seeded
    assert base_run["method"].work.model is not base_run["method"].server.seeded.model


def test_pro_run_samples_by_the_history_of_uploaded_gradients(base_run, tiny_model_dir, data_file, tmp_path):
    pro = run_main(tiny_model_dir, data_file, tmp_path, "--bias_sampling", "--bias_loss_clip", "2.0")
    server = pro["method"].server
    assert server.history is not None and base_run["method"].server.history is None
    # one initial entry per seed, then one entry per applied step: 3 rounds x 2 clients x 2 steps
    assert server.history.counts.sum() == K + 3 * 2 * LOCAL_STEP
    p = server.probabilities()
    np.testing.assert_allclose(p, pro_probabilities(server.history.abs_sum, server.history.counts), rtol=1e-12)
    assert p.sum() == pytest.approx(1.0)
    assert p.max() - p.min() > 0.05  # not uniform
    np.testing.assert_array_equal(server.train_config(4).probabilities, p)
    rebuilt = materialise(load_model(str(tiny_model_dir)), server.seed_pool, pro["method"].c, LR)
    assert max_abs_diff(rebuilt, server.seeded.model) < FP32_TOL


# --- the server/client loop driven directly -------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


def make_clients(tokenizer, n: int, run_seed: int) -> list[Client]:
    records = dolly_records(4)
    return [Client(i, LLMDataset(records[i::n], tokenizer, "plain", 64), tokenizer.pad_token_id, run_seed)
            for i in range(n)]


def tiny_server(model_dir, n: int, **kw) -> Server:
    cfg = ServerConfig(client_ids=tuple(range(n)), client_fraction=1.0, k=K, local=LocalTraining(LR, EPS, LOCAL_STEP),
                       seed=3, **kw)
    return Server(load_model(str(model_dir)), cfg, compile=False)


def test_clients_catch_up_by_replaying_the_change_in_c(tiny_model_dir, tokenizer):
    server = tiny_server(tiny_model_dir, 3)
    clients = make_clients(tokenizer, 3, run_seed=3)
    copies = [SeededModel(load_model(str(tiny_model_dir)), server.seed_pool, LR, compile=False) for _ in clients]
    lagging = SeededModel(load_model(str(tiny_model_dir)), server.seed_pool, LR, compile=False)

    c_before = server.c.copy()
    updates = [cl.train(copies[cl.client_id], server.c, server.train_config(1)) for cl in clients]
    # a client's own copy carries its raw local gradients: c_prev + sum of its (index, g)
    own = c_before.copy()
    np.add.at(own, updates[2].seed_indices, updates[2].grads)
    np.testing.assert_allclose(copies[2].c, own, rtol=1e-12)
    server.apply_round(updates)
    assert not np.allclose(copies[2].c, server.c)
    lagging.move_to(server.c)
    c_round1 = server.c.copy()
    assert max_abs_diff(lagging.model, server.seeded.model) < FP32_TOL

    for round_idx in (2, 3):  # client 2 and the lagging copy sit these rounds out
        server.apply_round([cl.train(copies[cl.client_id], server.c, server.train_config(round_idx))
                            for cl in clients[:2]])
    assert max_abs_diff(lagging.model, server.seeded.model) > 10 * FP32_TOL  # it really fell behind

    replayed = lagging.move_to(server.c)
    assert replayed == np.count_nonzero(server.c - c_round1)
    assert max_abs_diff(lagging.model, server.seeded.model) < FP32_TOL
    for i in (0, 2):  # client 0 trained locally in round 3; client 2 last trained in round 1
        assert max_abs_diff(copies[i].model, server.seeded.model) > 10 * FP32_TOL
        copies[i].move_to(server.c)
        assert max_abs_diff(copies[i].model, server.seeded.model) < FP32_TOL
        np.testing.assert_array_equal(copies[i].c, server.c)


def test_pro_probabilities_after_a_round_follow_the_paper_formula(tiny_model_dir, tokenizer):
    grad_initial, clip = 0.0, 2.0
    server = tiny_server(tiny_model_dir, 3, bias_sampling=True, grad_initial=grad_initial, bias_loss_clip=clip)
    clients = make_clients(tokenizer, 3, run_seed=3)
    work = SeededModel(load_model(str(tiny_model_dir)), server.seed_pool, LR, compile=False)
    first = server.train_config(1).probabilities
    np.testing.assert_allclose(first, np.full(K, 1 / K), rtol=1e-12)

    updates = []
    for cl in clients:
        work.copy_from(server.seeded)
        updates.append(cl.train(work, server.c, server.train_config(1)))
    server.apply_round(updates)

    # the paper's formula on plain lists: history_j = [grad_initial, g, g, ...]
    history = {j: [grad_initial] for j in range(K)}
    for u in updates:
        for j, g in zip(u.seed_indices.tolist(), u.grads.tolist(), strict=True):
            history[j].append(g)
    mean = np.array([np.mean(np.abs(np.clip(history[j], -clip, clip))) for j in range(K)])
    norm = (mean - mean.min()) / (mean.max() - mean.min())
    expected = np.exp(norm) / np.exp(norm).sum()
    p = server.probabilities()
    np.testing.assert_allclose(p, expected, rtol=1e-12)
    assert p.max() - p.min() > 0.05
    np.testing.assert_allclose(server.train_config(2).probabilities, expected, rtol=1e-12)
