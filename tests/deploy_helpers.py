"""Shared pieces of the slow deployment tests (test_flower_deployment_faults.py, test_flower_secure.py): the run's
flags on the tiny model, a started local deployment, metrics rows, and the in-process reference c."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import main
import server
from conftest import one_thread_call
from flower_app.deploy import LocalDeployment
from flower_app.stage import prepare
from run_files import read_metrics

WAIT = 600  # seconds a deployed run may take on a slow shared machine


def flags(model_dir, data_file, out, *extra) -> list[str]:
    """4 clients on 2 SuperNodes (client i on partition i mod 2), 4 rounds of 20 steps, K = 64; no round 0 (metrics
    rows are rounds 1, 2, ...)."""
    return ["--model", str(model_dir), "--dataset", "dolly", "--data_path", str(data_file), "-K", "64",
            "--rounds", "4", "--local_step", "20", "--num_clients", "4", "-m", "0.5", "--eval_examples", "4",
            "--eval_metric", "loss", "--eval_every", "0", "--lr", "1e-3", "--zo_eps", "1e-3", "--quiet",
            "--no_compile", "--no_eval_base", "--save", "--log", "--output_dir", str(out), *extra]


def rows_of(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    return read_metrics(path) if path.exists() else []


def inprocess_c(argv: list[str], selections: list[list[int]] | None = None, monkeypatch=None) -> np.ndarray:
    """The in-process engine's c (round r trains exactly selections[r - 1] when given)."""
    if selections is not None:
        rounds = iter(selections)
        monkeypatch.setattr(server.Server, "select_clients", lambda self: list(next(rounds)))
    return one_thread_call(main.train, argv)["method"].c


def started(tmp_path: Path, port: int, argv: list[str], nodes: int = 2, **kw) -> tuple[LocalDeployment, Path]:
    dep = LocalDeployment(tmp_path / "work", port, **kw)
    dep.env["OMP_NUM_THREADS"] = "1"  # the SuperNodes' torch sums then match the in-process reference's
    args = prepare(dep.work / "app", dep.work / "run.json", nodes, argv)
    dep.start_superlink()
    for i in range(nodes):
        dep.start_supernode(i, nodes)
    assert dep.submit(dep.work / "app", dep.work / "run.json").returncode == 0
    return dep, Path(args.output_dir)
