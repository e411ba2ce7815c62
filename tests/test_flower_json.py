"""--dataset json in the Flower engine: each SuperNode reads only its own file (--flower_data node) and the run gives
the in-process run's c bit for bit on the same records read as one glob; a node's node-config data-path wins; a
client held by two nodes is refused."""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

os.environ["FEDKSEED_COMPILE"] = "0"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("flwr")
pytest.importorskip("ray")

import config  # noqa: E402
from conftest import WORDS, tiny_flags, train  # noqa: E402
from errors import FedKSeedError  # noqa: E402
from flower_app import wire  # noqa: E402
from flower_app.discovery import discover  # noqa: E402
from flower_app.run_file import read_run_file, write_run_file  # noqa: E402
from run_records import read_metrics  # noqa: E402

# node 0 holds clinics a and b, node 1 clinics c and d; every clinic's records live in one file
SITES = {0: ["clinic-a", "clinic-b"], 1: ["clinic-c", "clinic-d"]}


def rows(site: str, n: int = 8, offset: int = 0) -> list[dict]:
    """Records in the tiny tokenizer's words, under the user's own column names."""
    out = []
    for i in range(n):
        w = WORDS[(offset + 5 * i + 3 * len(site) + ord(site[-1])) % len(WORDS)]
        out.append({"q": f"what is {w} ?", "a": f"{w} is a {WORDS[(i + 7) % len(WORDS)]} .", "site": site})
    return out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def site_files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sites")
    for node, sites in SITES.items():
        write_jsonl(folder / f"site-{node}.jsonl", [r for s in sites for r in rows(s)])
    write_jsonl(folder / "eval.jsonl", rows("held", n=4, offset=1))
    return folder


def flags(model_dir, folder: Path, data_path: str, out: Path, *extra) -> list[str]:
    """The clients are the sites of the `site` column; the held-out records are folder/eval.jsonl."""
    return tiny_flags(model_dir, data_path, out, "--instruction_field", "q", "--response_field", "a", "--iid",
                      "client", "--client_field", "site", "--eval_path", str(folder / "eval.jsonl"), *extra,
                      dataset="json", K=64, rounds=2, local_step=10, clients=None, eval_examples=None, eval_every=0)


def test_each_supernode_reads_its_own_file_and_c_is_the_inprocess_c(tiny_model_dir, site_files, tmp_path):
    inprocess = train(flags(tiny_model_dir, site_files, str(site_files / "site-*.jsonl"), tmp_path / "in"))
    flower = train(flags(tiny_model_dir, site_files, str(site_files / "site-{node}.jsonl"), tmp_path / "fl",
                         "--engine", "flower", "--flower_data", "node", "--flower_nodes", "2"))
    assert np.count_nonzero(inprocess["method"].c) > 10
    assert np.array_equal(inprocess["method"].c, flower["method"].c)
    rows_in, rows_fl = read_metrics(tmp_path / "in" / "metrics.jsonl"), read_metrics(tmp_path / "fl" / "metrics.jsonl")
    assert [r.get("clients") for r in rows_in] == [r.get("clients") for r in rows_fl]
    assert [r.get("eval_loss") for r in rows_in] == [r.get("eval_loss") for r in rows_fl]
    assert all(r["rejected"] == [] for r in rows_fl[1:])


def context(node_config: dict, run_file: Path) -> SimpleNamespace:
    return SimpleNamespace(run_config={"flags-file": str(run_file)}, node_config=node_config)


def test_a_node_reads_its_node_config_data_path_or_its_partition_file(tmp_path):
    argv = ["--dataset", "json", "--data_path", "/srv/site-{node}.parquet", "--iid", "client", "--eval_path",
            "e.jsonl", "--engine", "flower", "--flower_data", "node", "--flower_nodes", "2"]
    args = config.validate(config.build_parser().parse_args(argv))
    run_file = write_run_file(tmp_path / "run.json", args, 2)
    own, _ = read_run_file(context({"partition-id": 1, "num-partitions": 2, "data-path": "/data/mine.csv"}, run_file))
    assert own.data.data_path == "/data/mine.csv"
    by_partition, _ = read_run_file(context({"partition-id": 1, "num-partitions": 2}, run_file))
    assert by_partition.data.data_path == "/srv/site-1.parquet"


def fake_grid(held_by_node: dict[int, dict[str, int]], fingerprint="f", pool="p"):
    """A Grid whose nodes answer the set-up query as node.handle_query would (node data)."""
    def reply(node):
        content = wire.encode_query_reply(node, len(held_by_node), [], fingerprint, pool, held_by_node[node])
        return SimpleNamespace(metadata=SimpleNamespace(src_node_id=node), has_error=lambda: False, content=content)

    return SimpleNamespace(get_node_ids=lambda: list(held_by_node),
                           send_and_receive=lambda queries, timeout: [reply(n) for n in held_by_node])


def test_discovery_numbers_the_nodes_clients_by_name():
    found = discover(fake_grid({7: {"b": 3, "d": 1}, 9: {"a": 2, "c": 5}}), 2, 5.0)
    clients, hosts = found.remote_clients()
    assert [(c.client_id, c.name, len(c)) for c in clients] == [(0, "a", 2), (1, "b", 3), (2, "c", 5), (3, "d", 1)]
    assert hosts == {0: 9, 1: 7, 2: 9, 3: 7}


def test_a_client_on_two_nodes_is_refused():
    with pytest.raises(FedKSeedError, match="client 'b' is held by two SuperNodes"):
        discover(fake_grid({7: {"a": 3, "b": 1}, 9: {"b": 2}}), 2, 5.0)


def test_node_data_flags_are_checked():
    argv = ["--dataset", "json", "--iid", "client", "--engine", "flower", "--flower_data", "node"]
    with pytest.raises(FedKSeedError, match="--flower_data node: needs --eval_path FILE, --flower_nodes N"):
        config.validate(config.build_parser().parse_args(argv))



@pytest.mark.slow
def test_deployed_supernodes_read_their_own_files(tiny_model_dir, site_files, tmp_path):
    """A SuperLink and 2 SuperNodes on 127.0.0.1 (scripts/flower_deploy_local.sh), each SuperNode reading
    site-<partition-id>.jsonl: the same c as the simulation engine's run."""
    import subprocess

    from conftest import ROOT

    node_flags = ["--engine", "flower", "--flower_data", "node", "--flower_nodes", "2", "--save", "--log"]
    argv = flags(tiny_model_dir, site_files, str(site_files / "site-{node}.jsonl"), tmp_path / "deploy", *node_flags)
    deploy = subprocess.run(
        ["bash", str(ROOT / "scripts" / "flower_deploy_local.sh"), "--nodes", "2", "--port", "18890", "--", *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert deploy.returncode == 0, deploy.stderr[-3000:]
    sim = train(flags(tiny_model_dir, site_files, str(site_files / "site-{node}.jsonl"), tmp_path / "sim",
                      *node_flags))
    c = np.load(tmp_path / "deploy" / "coefficients.npz")["c"]
    assert np.count_nonzero(c) > 10 and np.array_equal(c, sim["method"].c)
