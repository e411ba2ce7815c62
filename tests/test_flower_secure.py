"""Secure mode on 127.0.0.1 (flower_app/deploy.py --secure, slow): TLS with a CA made for the run, SuperNode
authentication with registered EC keys, the flwr CLI over TLS. The run completes with the c of the in-process
engine (which the insecure deployment matches bit for bit: test_flower_simulation.py); a SuperNode whose key is
not registered is refused; a SuperNode or a flwr CLI without the run's CA certificate cannot connect; a node
sending hostile replies is rejected and logged, and the run goes on."""
from __future__ import annotations

import json
import os

os.environ["FEDKSEED_COMPILE"] = "0"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("flwr")

from deploy_helpers import WAIT, flags, inprocess_c, rows_of, started  # noqa: E402
from flower_app.deploy import CONNECTION  # noqa: E402
from flower_app.secure import make_certificates  # noqa: E402
from flower_app.stage import prepare  # noqa: E402

pytestmark = pytest.mark.slow


def test_secure_deployment_matches_the_inprocess_c_and_refuses_strangers(tiny_model_dir, dolly_file, tmp_path):
    argv = flags(tiny_model_dir, dolly_file, tmp_path / "run", "--rounds", "2")
    dep, out = started(tmp_path, 18850, argv, secure=True)
    with dep:
        stranger = dep.start_supernode(1, 2, name="stranger", key=dep.node_key("stranger", register=False))
        wrong_ca = dep.start_supernode(1, 2, name="wrong-ca", ca=make_certificates(dep.work / "other")["ca.pem"])
        dep.wait_until(lambda: (out / "summary.json").exists(), WAIT, "the run to finish", every=2)
        assert stranger.wait(timeout=60) != 0 and wrong_ca.wait(timeout=60) != 0
        assert dep.flwr(["ls", CONNECTION]).returncode == 0  # the CLI with the run's CA
        dep.write_cli_config(make_certificates(dep.work / "other2")["ca.pem"])
        assert dep.flwr(["ls", CONNECTION]).returncode != 0  # ... and with another CA
        dep.write_cli_config(insecure=True)
        assert dep.flwr(["ls", CONNECTION]).returncode != 0  # ... and without TLS
        dep.write_cli_config()

        # a second run on the same federation: SuperNode 1's client 1 sends NaN gradients
        hostile = prepare(dep.work / "app", dep.work / "hostile.json", 2,
                          flags(tiny_model_dir, dolly_file, tmp_path / "hostile", "--rounds", "1", "-m", "1"))
        doc = json.loads((dep.work / "hostile.json").read_text())
        doc["faults"] = {"1": "nan"}
        (dep.work / "hostile.json").write_text(json.dumps(doc))
        assert dep.submit(dep.work / "app", dep.work / "hostile.json").returncode == 0
        hostile_out = tmp_path / "hostile"
        dep.wait_until(lambda: (hostile_out / "summary.json").exists(), WAIT, "the hostile run", every=2)
    assert "Failed to activate SuperNode" in (dep.work / "stranger.log").read_text()
    assert "CERTIFICATE_VERIFY_FAILED" in (dep.work / "wrong-ca.log").read_text()
    c = np.load(out / "coefficients.npz")["c"]
    reference = inprocess_c(flags(tiny_model_dir, dolly_file, tmp_path / "ref", "--rounds", "2"))
    assert np.count_nonzero(c) > 10 and np.array_equal(c, reference)
    assert all(row["rejected"] == [] and row["lost"] == [] for row in rows_of(out))
    (row,) = rows_of(hostile_out)
    assert row["clients"] == [0, 2, 3] and [r["client"] for r in row["rejected"]] == [1]
    assert "non-finite" in row["rejected"][0]["reason"] and hostile.output.output_dir == str(hostile_out)
    assert "rejected the reply for client 1" in (hostile_out / "train.log").read_text()
