"""The ServerApp's round under faults, on a Grid stand-in that hands each message to the ClientApp's handlers in
this process (as a fresh ClientApp process: the model cache is cleared per message); a dead node never replies.
A lost node's clients are named in metrics.jsonl and c is the aggregation of exactly the accepted replies; with
fewer accepted replies than --min_replies the run stops with c unchanged and --resume reaches the uninterrupted
c; a node that joins later (a restarted SuperNode, new node id) takes over its partition from its state file.
The real SuperLink versions of these are the slow tests in test_flower_deployment_faults.py."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

os.environ["FEDKSEED_COMPILE"] = "0"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("flwr")

from flwr.app import Error, Message, RecordDict  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

import config  # noqa: E402
from checkpoint import load_checkpoint  # noqa: E402
from conftest import dolly_records, force_selections, one_thread_call, tiny_flags, train  # noqa: E402
from errors import FedKSeedError  # noqa: E402
from flower_app import collect, node, node_runtime, wire
from flower_app.run_file import write_run_file  # noqa: E402
from flower_app.server_app import serve as serve_flower  # noqa: E402
from run_records import read_metrics  # noqa: E402


class FakeGrid:
    """Nodes by id -> their context; kill[node] = the round from whose train message on the node is gone;
    error[node] = a round in which its ClientApp fails; joins[node] = the dead node it replaces (it connects once
    that one is gone); wipe[node] = a round before which it restarts under the same id (its context.state is lost,
    its node directory kept: a SuperNode with a registered key)."""

    def __init__(self, nodes: dict[int, SimpleNamespace], kill: dict[int, int] | None = None,
                 error: dict[int, int] | None = None, joins: dict[int, int] | None = None,
                 wipe: dict[int, int] | None = None):
        self.nodes, self.kill, self.error, self.joins = nodes, kill or {}, error or {}, joins or {}
        self.wipe = wipe or {}
        self.dead: set[int] = set()
        self.replies: dict[str, Message] = {}

    def get_node_ids(self) -> list[int]:
        return [n for n in self.nodes if n not in self.dead and self.joins.get(n, n) in self.dead | {n}]

    def push_messages(self, msgs: list[Message]) -> list[str]:
        """Handle each message at once (its reply is kept for pull_messages), unless its node is dead."""
        ids = []
        for msg in msgs:
            msg.metadata.__dict__["_message_id"] = msg.object_id
            ids.append(msg.object_id)
            dst, train = msg.metadata.dst_node_id, msg.metadata.message_type == wire.TRAIN
            if train and int(msg.metadata.group_id) >= self.kill.get(dst, math.inf):
                self.dead.add(dst)
            if dst in self.dead:
                continue
            if train and int(msg.metadata.group_id) == self.wipe.get(dst):
                self.nodes[dst].state = RecordDict()
                del self.wipe[dst]
            if train and int(msg.metadata.group_id) == self.error.get(dst):
                self.replies[msg.object_id] = Message(Error(code=0, reason="ClientApp crashed"), reply_to=msg)
                continue
            node_runtime._RUNTIMES.clear()
            ctx = self.nodes[dst]
            content = node.handle_train(msg.content, ctx) if train else node.handle_query(ctx)
            self.replies[msg.object_id] = Message(content, reply_to=msg)
        return ids

    def pull_messages(self, ids: list[str]) -> list[Message]:
        return [self.replies.pop(i) for i in ids if i in self.replies]

    def send_and_receive(self, msgs: list[Message], timeout: float) -> list[Message]:
        return self.pull_messages(self.push_messages(msgs))


class VirtualClock:
    """collect.py's clock in these tests: time passes only while it waits for replies, so a round's deadline
    does not depend on how long the synchronous handlers take, and a dead node costs no real time."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    for name, value in (("_run_id", 1), ("_task_id", 1), ("_node_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)
    monkeypatch.setattr(collect, "time", VirtualClock())


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("rounds") / "databricks-dolly-15k.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in dolly_records(4)))
    return path


def flags(model_dir, data_file, out, *extra) -> list[str]:
    """4 clients on 2 nodes (client i on partition i mod 2), 2 a round, 3 rounds of 5 steps, K = 64; no round 0."""
    return tiny_flags(model_dir, data_file, out, "--no_eval_base", "--round_timeout", "30", *extra, K=64,
                      local_step=5, eval_every=0)


def contexts(run_file, state_dir, run_id: int = 1, ids=(11, 12)) -> dict[int, SimpleNamespace]:
    return {nid: SimpleNamespace(run_id=run_id, state=RecordDict(), run_config={"flags-file": str(run_file)},
                                 node_config={"partition-id": p, "num-partitions": 2, "state-dir": str(state_dir)})
            for p, nid in enumerate(ids)}


def parsed(argv: list[str]):
    return config.validate(config.build_parser().parse_args(argv + ["--engine", "flower"]))


def serve(cfg, grid_of, resume=None) -> tuple[dict | None, str | None]:
    """A Flower server's run over the grid grid_of(run_file) builds: (result, None) or (None, its one-line error)."""
    run_file = write_run_file(Path(f"{cfg.output.output_dir}.{resume is not None}.json"), cfg, 2)
    try:
        return one_thread_call(serve_flower, cfg, grid_of(run_file), 2, resume), None
    except FedKSeedError as exc:
        return None, str(exc)


def inprocess_with(argv: list[str], selections: list[list[int]], monkeypatch) -> np.ndarray:
    """The in-process engine's c when round r trains exactly the clients selections[r - 1]."""
    force_selections(monkeypatch, selections)
    return train(argv)["method"].c


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the reference run has a round without clients
def test_a_lost_node_is_named_and_c_aggregates_exactly_the_accepted_replies(tiny_model_dir, data_file, tmp_path,
                                                                             monkeypatch):
    argv = flags(tiny_model_dir, data_file, tmp_path / "flower", "--min_replies", "0")  # round 3: no reply at all
    result, error = serve(parsed(argv), lambda rf: FakeGrid(contexts(rf, "off"), kill={12: 2}, error={11: 1}))
    assert error is None
    rows = read_metrics(tmp_path / "flower" / "metrics.jsonl")
    for row in rows:  # round 1: node 11 (even clients) fails; from round 2 on node 12 (odd clients) is gone
        lost = {entry["client"]: entry for entry in row["lost"]}
        assert sorted(row["clients"] + list(lost)) == row["selected"] and row["rejected"] == []
        assert lost and all(cid % 2 == (row["round"] > 1) for cid in lost), row
        assert row["clients"] or row["round"] == 3  # round 3 drew clients 1 and 3, both on node 12
        for entry in lost.values():
            assert entry["node"] == (11 if row["round"] == 1 else 12)
            expected = "node error: ClientApp crashed" if row["round"] == 1 else "no reply within --round_timeout (30"
            assert expected in entry["reason"]
    accepted = [row["clients"] for row in rows]
    c = inprocess_with(flags(tiny_model_dir, data_file, tmp_path / "ref"), accepted, monkeypatch)
    assert np.count_nonzero(result["method"].c) > 0 and np.array_equal(result["method"].c, c)


def test_below_min_replies_the_run_stops_with_c_unchanged_and_resume_reaches_the_same_c(tiny_model_dir, data_file,
                                                                                         tmp_path):
    whole, error = serve(parsed(flags(tiny_model_dir, data_file, tmp_path / "whole")),
                         lambda rf: FakeGrid(contexts(rf, "off")))
    assert error is None
    argv = flags(tiny_model_dir, data_file, tmp_path / "cut", "--min_replies", "2")
    _, error = serve(parsed(argv), lambda rf: FakeGrid(contexts(rf, "off"), kill={11: 2, 12: 2}))
    assert error is not None and "round 2: 0 of 2 replies accepted (2 lost, 0 rejected), fewer than --min_replies 2" \
        in error and f"--resume {tmp_path / 'cut'}" in error
    rows = read_metrics(tmp_path / "cut" / "metrics.jsonl")
    assert [r["round"] for r in rows] == [1, 2] and rows[-1]["aborted"] and not rows[0].get("aborted")
    saved = load_checkpoint(tmp_path / "cut")
    assert saved.round == 1 and len(saved.deltas) == 1  # c as after round 1
    # a new ServerApp (new run: new node ids, empty node states) resumes from the checkpoint
    cfg, saved = config.from_command_line(["--resume", str(tmp_path / "cut")])
    again, error = serve(cfg, lambda rf: FakeGrid(contexts(rf, "off", run_id=2, ids=(21, 22))), resume=saved)
    assert error is None and np.array_equal(again["method"].c, whole["method"].c)
    assert [r["round"] for r in read_metrics(tmp_path / "cut" / "metrics.jsonl")] == [1, 2, 3]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the reference run has a round without clients
def test_a_restarted_node_joins_under_a_new_id_and_catches_up_from_its_state_file(tiny_model_dir, data_file,
                                                                                   tmp_path, monkeypatch):
    argv = flags(tiny_model_dir, data_file, tmp_path / "flower", "--rounds", "5", "--min_replies", "0")
    state_dir = tmp_path / "nodes"
    loaded = []
    original = node_runtime.NodeRuntime.reset_pristine

    def spy(self, history=None):
        original(self, history)
        loaded.append(self.loaded_round)

    monkeypatch.setattr(node_runtime.NodeRuntime, "reset_pristine", spy)

    def grid_of(run_file):
        nodes = contexts(run_file, state_dir)
        nodes[13] = contexts(run_file, state_dir, ids=(99, 13))[13]  # partition 1 again, empty context.state
        return FakeGrid(nodes, kill={12: 3}, joins={13: 12})

    result, error = serve(parsed(argv), grid_of)
    assert error is None
    rows = read_metrics(tmp_path / "flower" / "metrics.jsonl")
    odd_after = [cid for row in rows[2:] for cid in row["clients"] if cid % 2]
    assert odd_after, "the restarted node trained no client after rejoining"
    assert all(entry["node"] == 12 for row in rows for entry in row["lost"])
    assert any(loaded)  # some fresh process started from a state file
    c = inprocess_with(flags(tiny_model_dir, data_file, tmp_path / "ref", "--rounds", "5"),
                       [row["clients"] for row in rows], monkeypatch)
    assert np.array_equal(result["method"].c, c)


def test_a_node_restarted_under_the_same_id_is_sent_the_whole_record_and_starts_from_its_state_file(
        tiny_model_dir, data_file, tmp_path, monkeypatch):
    argv = flags(tiny_model_dir, data_file, tmp_path / "flower", "--rounds", "5")
    loaded = []
    original = node_runtime.NodeRuntime.reset_pristine

    def spy(self, history=None):
        original(self, history)
        loaded.append((len(history or []), self.loaded_round))

    monkeypatch.setattr(node_runtime.NodeRuntime, "reset_pristine", spy)
    # node 12 (odd clients) trains in every round; before round 4 it restarts and forgets its context.state
    result, error = serve(parsed(argv), lambda rf: FakeGrid(contexts(rf, tmp_path / "nodes"), wipe={12: 4}))
    assert error is None
    rows = read_metrics(tmp_path / "flower" / "metrics.jsonl")
    assert all(row["lost"] == [] and row["rejected"] == [] for row in rows)  # the out-of-sync reply was retried
    assert any(cid % 2 for cid in rows[3]["clients"])  # node 12 (odd clients) trains in round 4
    assert (3, 2) in loaded  # the full record of rounds 1-3, started from the state file of round 2
    c = inprocess_with(flags(tiny_model_dir, data_file, tmp_path / "ref", "--rounds", "5"),
                       [row["clients"] for row in rows], monkeypatch)
    assert np.array_equal(result["method"].c, c)
