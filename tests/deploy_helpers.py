"""Shared pieces of the slow deployment tests (test_flower_deployment_faults.py, test_flower_secure.py): the run's
flags on the tiny model, a started local deployment, metrics rows, and the in-process reference c."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from conftest import force_selections, tiny_flags, train
from flower_app.deploy import LocalDeployment
from flower_app.stage import prepare
from run_records import read_metrics

WAIT = 600  # seconds a deployed run may take on a slow shared machine


def flags(model_dir, data_file, out, *extra) -> list[str]:
    """4 clients on 2 SuperNodes (client i on partition i mod 2), 4 rounds of 20 steps, K = 64; no round 0 (metrics
    rows are rounds 1, 2, ...)."""
    return tiny_flags(model_dir, data_file, out, "--no_eval_base", "--save", "--log", *extra, K=64, rounds=4,
                      local_step=20, eval_every=0)


def rows_of(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    return read_metrics(path) if path.exists() else []


def inprocess_c(argv: list[str], selections: list[list[int]] | None = None, monkeypatch=None) -> np.ndarray:
    """The in-process engine's c (round r trains exactly selections[r - 1] when given)."""
    if selections is not None:
        force_selections(monkeypatch, selections)
    return train(argv)["method"].c


def started(tmp_path: Path, port: int, argv: list[str], nodes: int = 2, **kw) -> tuple[LocalDeployment, Path]:
    dep = LocalDeployment(tmp_path / "work", port, **kw)
    dep.env["OMP_NUM_THREADS"] = "1"  # the SuperNodes' torch sums then match the in-process reference's
    cfg = prepare(dep.work / "app", dep.work / "run.json", nodes, argv)
    dep.start_superlink()
    for i in range(nodes):
        dep.start_supernode(i, nodes)
    assert dep.submit(dep.work / "app", dep.work / "run.json").returncode == 0
    return dep, Path(cfg.output.output_dir)
