"""Faults on a real Flower deployment (SuperLink + SuperNodes on 127.0.0.1, flower_app/deploy.py), slow:
a SuperNode SIGKILLed while its ClientApp runs: the round ends with the replies that arrived, metrics name the
lost clients, and c is the aggregation of exactly the accepted replies; the node restarted catches up from its
state file and the server's record of Delta c, and its replies are what an uninterrupted node sends (c matches
the in-process engine run on the accepted clients); the ServerApp, or the SuperLink with it, SIGKILLed mid-run:
a new `flwr run --resume` reaches the uninterrupted c."""
from __future__ import annotations

import os
from pathlib import Path

os.environ["FEDKSEED_COMPILE"] = "0"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("flwr")

from deploy_helpers import WAIT, flags, inprocess_c, rows_of, started  # noqa: E402
from flower_app.stage import prepare  # noqa: E402

pytestmark = pytest.mark.slow


def test_a_supernode_killed_mid_round_is_lost_and_catches_up_when_restarted(tiny_model_dir, dolly_file, tmp_path,
                                                                            monkeypatch):
    out = tmp_path / "run"
    argv = flags(tiny_model_dir, dolly_file, out, "-m", "1", "--round_timeout", "40")  # every client, every round
    dep, out = started(tmp_path, 18810, argv)
    with dep:
        dep.wait_until(lambda: len(rows_of(out)) >= 2, WAIT, "round 2")  # each node has synced once: a state file
        dep.wait_until(lambda: len(dep.tree("supernode-1")) > 2, WAIT, "a ClientApp on SuperNode 1", every=0.1)
        killed_in = len(rows_of(out)) + 1
        dep.kill("supernode-1")  # SIGKILL to the node and the ClientApp it runs
        state_files = list((dep.flwr_home / "fedkseed-node").glob("state-*.safetensors"))
        dep.start_supernode(1, 2, name="supernode-1")  # restarted: same node directory, a new node id
        dep.wait_until(lambda: (out / "summary.json").exists(), WAIT, "the run to finish", every=2)
    rows = rows_of(out)
    lost = rows[killed_in - 1]["lost"]
    assert lost and all(entry["client"] % 2 == 1 for entry in lost)  # SuperNode 1 hosts the odd clients
    assert all("no reply within --round_timeout (40 s)" in entry["reason"] or "node error" in entry["reason"]
               for entry in lost)
    assert rows[-1]["clients"] == [0, 1, 2, 3] and rows[-1]["lost"] == []  # the restarted node is back
    assert len(state_files) == 2  # each node had written its state before the kill
    c = np.load(out / "coefficients.npz")["c"]
    reference = inprocess_c(flags(tiny_model_dir, dolly_file, tmp_path / "ref"), [r["clients"] for r in rows],
                            monkeypatch)
    assert np.count_nonzero(c) > 10 and np.array_equal(c, reference)


@pytest.mark.parametrize("victim", ["serverapp", "superlink"])
def test_the_serverapp_or_superlink_killed_mid_run_resumes_with_a_new_flwr_run_to_the_same_c(
        tiny_model_dir, dolly_file, tmp_path, victim):
    argv = flags(tiny_model_dir, dolly_file, tmp_path / "run")
    dep, out = started(tmp_path, 18830 if victim == "serverapp" else 18840, argv)
    with dep:
        dep.wait_until(lambda: len(rows_of(out)) >= 2, WAIT, "round 2")
        serverapps = [pid for pid in dep.tree("superlink")
                      if b"flwr-serverapp" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert serverapps, "no ServerApp process under the SuperLink"
        if victim == "serverapp":
            for pid in serverapps:
                os.kill(pid, 9)
        else:  # the SuperLink and its ServerApp; its state (runs, node registrations) was in memory, and the
            dep.kill("superlink")  # SuperNodes retry their old registration forever: they are restarted too
            dep.start_superlink()
            for i in range(2):
                dep.kill(f"supernode-{i}")
                dep.start_supernode(i, 2)
        done = len(rows_of(out))
        assert done < 4
        prepare(dep.work / "app", dep.work / "resume.json", 2, ["--resume", str(out)])
        assert dep.submit(dep.work / "app", dep.work / "resume.json").returncode == 0
        dep.wait_until(lambda: (out / "summary.json").exists(), WAIT, "the resumed run to finish", every=2)
    assert [r["round"] for r in rows_of(out)] == [1, 2, 3, 4]
    assert f"resumed {out} at round" in (out / "train.log").read_text()  # continued, not started over
    reference = inprocess_c(flags(tiny_model_dir, dolly_file, tmp_path / "ref"))
    c = np.load(out / "coefficients.npz")["c"]
    assert np.count_nonzero(c) > 10 and np.array_equal(c, reference)
