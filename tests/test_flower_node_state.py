"""A SuperNode's state on disk (flower_app/node_store.py), driven through the ClientApp's train handler in this
process, with the module-level model cache cleared to stand for Flower's fresh ClientApp process per message:
a node restarted from its state file replies bit for bit as a node that replays from round 0; a torn or corrupt
file is ignored and rebuilt; another run configuration, model or trajectory never loads it."""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("FEDKSEED_COMPILE", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("flwr")

from flwr.app import RecordDict  # noqa: E402

import config  # noqa: E402
from client import LocalTraining  # noqa: E402
from conftest import dolly_records, write_tiny_model  # noqa: E402
from flower_app import fedkseed_messages, node, node_runtime
from flower_app.node_store import NodeStore, state_key  # noqa: E402
from flower_app.run_file import write_run_file  # noqa: E402
from modeling import load_model  # noqa: E402

K, LR, STEPS = 64, 1e-3, 3


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    """A run file for one node hosting 2 clients, and a 6-round record of Delta c (a few seeds a round)."""
    work = tmp_path_factory.mktemp("node_state")
    data = work / "databricks-dolly-15k.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in dolly_records(4)))
    argv = ["--model", str(tiny_model_dir), "--dataset", "dolly", "--data_path", str(data), "-K", str(K),
            "--num_clients", "2", "--lr", str(LR), "--local_step", str(STEPS), "--no_compile",
            "--output_dir", str(work / "out")]
    cfg = config.validate(config.build_parser().parse_args(argv))
    run_file = write_run_file(work / "run.json", cfg, 1)
    rng = np.random.default_rng(0)
    history = []
    for _ in range(6):
        idx = np.unique(rng.integers(0, K, 5)).astype(np.int64)
        history.append((idx, rng.normal(0, 30, len(idx))))
    return SimpleNamespace(cfg=cfg, run_file=run_file, history=history, work=work)


def context(setup, state_dir, state: RecordDict | None = None, run_id: int = 7):
    node_config = {"partition-id": 0, "num-partitions": 1, "state-dir": str(state_dir)}
    return SimpleNamespace(run_id=run_id, node_config=node_config, run_config={"flags-file": str(setup.run_file)},
                           state=RecordDict() if state is None else state)


def server_digest(history) -> bytes:
    """The server's c after these rounds, as apply_round builds it (c + delta, round by round)."""
    c = np.zeros(K)
    for idx, val in history:
        delta = np.zeros(K)
        delta[idx] = val
        c = c + delta
    return fedkseed_messages.c_digest(c)


def send(setup, ctx, round_idx: int, base: int = 0, fresh: bool = True) -> dict:
    """One train message for client 0 in round round_idx, with the rounds base+1 .. round_idx-1 of Delta c;
    fresh: clear this process's model cache first, as a new ClientApp process would start."""
    if fresh:
        node_runtime._RUNTIMES.clear()
    ins = fedkseed_messages.Instruction(round=round_idx, client=0, local=LocalTraining(LR, 1e-3, STEPS),
                                        catchup="exact", base=base, groups=setup.history[base:round_idx - 1],
                                        c_digest=server_digest(setup.history[:round_idx - 1]))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reply = node.handle_train(fedkseed_messages.encode_instruction(ins, K), ctx)
    finally:
        torch.set_num_threads(threads)
    return dict(reply[fedkseed_messages.REPLY_RECORD])


def stored_round(state_dir, rt: node_runtime.NodeRuntime, history) -> int:
    """The round of the node's state file, if it loads for this record of Delta c (else 0)."""
    return NodeStore(state_dir, rt.store.key).load(history, rt.seeded)[1]


def runtime() -> node_runtime.NodeRuntime:
    (rt,) = node_runtime._RUNTIMES.values()
    return rt


def test_a_node_restarted_from_its_state_file_replies_as_one_that_replays_from_round_0(setup, tmp_path,
                                                                                      monkeypatch):
    reference = send(setup, context(setup, "off"), 6)  # a fresh process without a state file: replay 5 rounds
    assert runtime().store is None and "error" not in reference
    ref_weights = [p.detach().clone() for _, p in runtime().pristine.perturbation.params]

    send(setup, context(setup, tmp_path), 3)  # the node syncs to round 2 and writes its state
    assert runtime().stored_round == 2
    loads = []
    monkeypatch.setattr(node_runtime, "load_model", lambda *a: loads.append(a) or load_model(*a))
    restarted = send(setup, context(setup, tmp_path), 6)  # a restarted SuperNode: no context.state, full record
    rt = runtime()
    assert rt.loaded_round == 2 and rt.stored_round == 5  # started from the file, replayed rounds 3 .. 5
    assert loads == []  # theta0 was not read: both model copies were built from the state file
    assert restarted == reference
    for ref, (_, p) in zip(ref_weights, rt.pristine.perturbation.params, strict=True):
        assert torch.equal(ref, p)
    assert stored_round(tmp_path, rt, setup.history) == 5


def test_the_next_message_in_a_fresh_process_replays_only_the_rounds_since_the_sync(setup, tmp_path):
    ctx = context(setup, tmp_path)
    send(setup, ctx, 4)
    calls = []
    original = node_runtime.SeededModel.replay_rounds

    def counting(self, deltas):
        calls.append(len(deltas))
        return original(self, deltas)

    node_runtime.SeededModel.replay_rounds = counting
    try:
        send(setup, ctx, 6, base=3)  # the node's context.state says round 3; the round-6 message adds 4 and 5
    finally:
        node_runtime.SeededModel.replay_rounds = original
    assert calls == [2] and runtime().loaded_round == 3


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_a_torn_or_corrupt_state_file_is_ignored_rebuilt_and_never_loaded(setup, tmp_path, caplog, damage):
    reference = send(setup, context(setup, "off"), 5)
    send(setup, context(setup, tmp_path), 4)
    path = runtime().store.path
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[:len(raw) * 2 // 3]
    elif damage == "flip":
        raw[-50] ^= 0x01  # inside the last tensor's bytes: the file still parses
    else:
        raw = bytearray()
    path.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="fedkseed.flower"):
        reply = send(setup, context(setup, tmp_path), 5)
    assert runtime().loaded_round == 0 and reply == reference
    assert any("ignoring" in r.getMessage() for r in caplog.records)
    assert runtime().stored_round == 4  # rebuilt: a whole file for round 4 again
    assert stored_round(tmp_path, runtime(), setup.history) == 4


def test_the_state_is_keyed_by_model_flags_and_partition_and_checked_against_the_trajectory(setup, tmp_path):
    cfg = setup.cfg
    key = state_key(cfg, 0)
    other_model = write_tiny_model(tmp_path / "other_model", seed=1)
    copied = tmp_path / "copied_model"
    shutil.copytree(cfg.model.model, copied)
    for change in ({"lr": 2e-3}, {"K": 128}, {"seed": 1}, {"model": str(other_model)}, {"model": str(copied)},
                   {"perturbation": "rademacher"}):
        assert state_key(config.RunConfig.from_flags({**cfg.flags(), **change}), 0) != key, change
    assert state_key(cfg, 1) != key
    not_state = config.RunConfig.from_flags({**cfg.flags(), "eval_examples": 9})
    assert state_key(not_state, 0) == key  # evaluation is not part of the state

    send(setup, context(setup, tmp_path), 4)
    rt = runtime()
    other = [(idx, val * 2) for idx, val in setup.history]  # another run with the same flags: another trajectory
    assert stored_round(tmp_path, rt, other) == 0
    assert stored_round(tmp_path, rt, setup.history[:2]) == 0  # a record that ends earlier
    assert stored_round(tmp_path, rt, setup.history) == 3
    assert not any(Path(tmp_path).glob(".*.tmp"))  # the temporary file was renamed into place
