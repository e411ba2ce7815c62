"""Robustness in server.py, shared by both engines: hostile uploads rejected per upload (Server.accept /
validate_update), and poisoning held off by per-seed robust aggregation and the server-side bound on |g|."""
from __future__ import annotations

import logging
import os

os.environ.setdefault("FEDKSEED_COMPILE", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from client import Client, ClientUpdate, LocalTraining, TrainConfig  # noqa: E402
from conftest import dolly_records  # noqa: E402
from modeling import load_model, load_tokenizer  # noqa: E402
from optimizers.seed_pool import SeededModel  # noqa: E402
from server import Server, ServerConfig, aggregate, robust_aggregate, validate_update  # noqa: E402
from utils_data.llm_dataset import LLMDataset  # noqa: E402

K_POISON, STEPS, CLIENTS = 4, 40, 5


def upload(indices, grads, round_idx=2, n=10, client_id=0) -> ClientUpdate:
    indices = np.asarray(indices) if len(indices) else np.zeros(0, dtype=np.int64)
    return ClientUpdate(client_id=client_id, round=round_idx, seed_indices=indices,
                        grads=np.asarray(grads, dtype=np.float64), num_samples=n)


HOSTILE = {
    "nan": (upload([0, 1], [1.0, np.nan]), "non-finite"),
    "inf": (upload([0, 1], [np.inf, 1.0]), "non-finite"),
    "index_high": (upload([0, 8], [1.0, 1.0]), "outside [0, 8)"),
    "index_negative": (upload([-1, 2], [1.0, 1.0]), "outside [0, 8)"),
    "lengths": (upload([0, 1, 2], [1.0, 1.0]), "3 seed indices but 2 gradients"),
    "zero_samples": (upload([0], [1.0], n=0), "not positive"),
    "negative_samples": (upload([0], [1.0], n=-4), "not positive"),
    "round": (upload([0], [1.0], round_idx=1), "round 1, expected 2"),
    "oversized": (upload([0, 1, 2, 3, 4], [1.0] * 5), "more than the 4"),
    "float_indices": (upload(np.array([0.0, 1.0]), [1.0, 1.0]), "dtype float64"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_validate_update_rejects_each_hostile_kind(kind):
    update, phrase = HOSTILE[kind]
    reason = validate_update(update, k=8, round_idx=2, max_pairs=4)
    assert reason is not None and phrase in reason, reason


def test_server_accept_drops_and_logs_hostile_uploads_and_keeps_the_rest(caplog):
    cfg = ServerConfig(client_ids=tuple(range(4)), client_fraction=1.0, k=8, local=LocalTraining(0.1, 0.01, 4))
    server = Server(torch.nn.Linear(3, 2), cfg, compile=False)
    honest = [upload([0, 3], [1.0, -2.0], client_id=1), upload([], [], client_id=2)]
    hostile = [HOSTILE["nan"][0], HOSTILE["round"][0], HOSTILE["oversized"][0]]
    with caplog.at_level(logging.WARNING, logger="server"):
        kept = server.accept([hostile[0], honest[0], hostile[1], honest[1], hostile[2]], round_idx=2)
    assert kept == honest
    assert sum("rejected the upload" in r.getMessage() for r in caplog.records) == 3
    server.apply_round(kept)  # the round goes on with the rest
    np.testing.assert_allclose(server.c[[0, 3]], [0.5, -1.0])


def test_max_pairs_follows_the_round_mode():
    batch = Server(torch.nn.Linear(2, 1), ServerConfig(3, 1.0, 4, LocalTraining(0.1, 0.01, 7)), compile=False)
    epoch = Server(torch.nn.Linear(2, 1), ServerConfig(3, 1.0, 4, LocalTraining(
        0.1, 0.01, 7, batch_or_epoch="epoch", batch_size=4)), compile=False)
    assert batch.max_pairs(100) == 7 and epoch.max_pairs(10) == 7 * 3  # local_step epochs of ceil(10 / 4) batches


# --- poisoning ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def honest_uploads(tiny_model_dir):
    """One round of 5 real clients on the tiny model: K=4 seeds, 40 steps each, so every client uses every seed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tokenizer = load_tokenizer(str(tiny_model_dir))
        records = dolly_records(4)
        model = load_model(str(tiny_model_dir))
        pool = np.arange(1, K_POISON + 1, dtype=np.int64) * 7919
        start = SeededModel(model, pool, 1e-3, compile=False)
        work = SeededModel(load_model(str(tiny_model_dir)), pool, 1e-3, compile=False)
        config = TrainConfig(round=1, local=LocalTraining(lr=1e-3, eps=1e-3, local_step=STEPS))
        uploads = []
        for i in range(CLIENTS):
            client = Client(i, LLMDataset(records[6 * i:6 * i + 6], tokenizer, "plain", 64), tokenizer.pad_token_id, 0)
            work.copy_from(start)
            uploads.append(client.train(work, start.c, config))
        return uploads
    finally:
        torch.set_num_threads(threads)


def contributions(uploads: list[ClientUpdate]) -> np.ndarray:
    """x_ij of robust_aggregate with equal weights: each client's summed g per seed (clients x seeds)."""
    out = np.zeros((len(uploads), K_POISON))
    for i, u in enumerate(uploads):
        np.add.at(out[i], u.seed_indices, u.grads)
    return out


def test_one_client_scaling_g_by_1000_moves_the_mean_but_not_the_robust_modes(honest_uploads):
    assert all(len(np.unique(u.seed_indices)) == K_POISON for u in honest_uploads)  # every seed shared by all 5
    honest = honest_uploads[1:]
    attacker = ClientUpdate(**{**honest_uploads[0].__dict__, "grads": honest_uploads[0].grads * 1000})
    poisoned = [attacker, *honest]
    reference = aggregate(honest, K_POISON, equal_weight=True)  # the honest clients' result (the paper's mean)
    x = contributions(honest)
    spread = x.max(axis=0) - x.min(axis=0)  # per seed: how far the honest clients' own contributions disagree
    # the stated distance: robust Delta c_j stays inside the honest contributions' range, so within
    # spread_j of the honest mean, for every seed
    for mode in ("median", "trimmed_mean"):
        robust = robust_aggregate(poisoned, K_POISON, equal_weight=True, mode=mode, trim_fraction=0.2)
        assert np.all(robust >= x.min(axis=0) - 1e-12) and np.all(robust <= x.max(axis=0) + 1e-12), mode
        assert np.all(np.abs(robust - reference) <= spread + 1e-12), mode
    mean = aggregate(poisoned, K_POISON, equal_weight=True)
    assert np.max(np.abs(mean - reference) / spread) > 20  # the mean is dragged far outside it
    # the server-side bound on |g| caps the damage even for the mean
    bound = float(np.max(np.abs(np.concatenate([u.grads for u in honest]))))
    clipped = aggregate(poisoned, K_POISON, equal_weight=True, max_abs_grad=bound)
    assert np.max(np.abs(clipped - reference)) < np.max(np.abs(mean - reference)) / 20


def test_robust_modes_equal_the_mean_when_clients_agree():
    same = [upload([0, 1, 1], [1.0, 2.0, -0.5], client_id=i) for i in range(4)]
    for mode in ("median", "trimmed_mean"):
        np.testing.assert_allclose(aggregate(same, 3, True, mode=mode), aggregate(same, 3, True), rtol=1e-12)


def test_robust_aggregate_uses_only_the_clients_that_used_the_seed():
    # seed 0: clients 0, 1, 2 (values 1, 2, 100) -> median 2, scaled by 3 of 4 clients; seed 2: client 3 alone
    ups = [upload([0], [1.0]), upload([0], [2.0]), upload([0], [100.0]), upload([2], [8.0])]
    delta = robust_aggregate(ups, 3, equal_weight=True, mode="median")
    np.testing.assert_allclose(delta, [3 / 4 * 2.0, 0.0, 1 / 4 * 8.0])
    np.testing.assert_allclose(aggregate(ups, 3, True), [103 / 4, 0.0, 2.0])
