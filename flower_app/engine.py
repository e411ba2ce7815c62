"""main.py --engine flower: the run in Flower's simulation engine (flwr.simulation.run_simulation, Ray backend).

One virtual SuperNode per client (or --flower_nodes N, client i on node i mod N), one CPU per ClientApp actor,
so on 2 cores two clients train at once. The ServerApp runs in a thread of this process. context.run_config is
empty in this engine, so the app reads the resolved flags from a run file (<output_dir>/flower_run.json) named
by $FEDKSEED_FLOWER_RUN, which the Ray actors inherit.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from checkpoint import RunState
from errors import FedKSeedError
from flower_app.run_file import RUN_ENV, write_run_file
from run_lock import acquire_run_lock
from utils_data.load_data import load_for_run

if TYPE_CHECKING:
    from config import RunConfig

RUN_FILE = "flower_run.json"


def node_count(cfg: RunConfig) -> int:
    """--flower_nodes, or one SuperNode per client of the data split."""
    return cfg.engine.flower_nodes or len(load_for_run(cfg).clients)


def run_flower(cfg: RunConfig, resume: RunState | None = None, faults: dict | None = None) -> dict:
    """Run --rounds rounds in the simulation engine; returns what simulation.run returns (summary, method)."""
    import ray  # noqa: F401  (imported here, in the main thread: see below)
    import transformers
    from flwr.simulation import run_simulation

    from flower_app import client_app, server_app

    # The ServerApp thread loads the model while the main thread starts Ray: finish the heavy first-time
    # imports (transformers' lazy modules, Ray) before the two run side by side.
    _ = transformers.AutoModelForCausalLM, transformers.AutoTokenizer, transformers.PreTrainedTokenizerFast

    out = Path(cfg.output.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    acquire_run_lock(out)  # before the run file is written; the ServerApp's open_run_dir, in this process, re-enters it
    nodes = node_count(cfg)
    run_file = write_run_file(out / RUN_FILE, cfg, nodes, resume=cfg.output.resume if resume is not None else None,
                              faults=faults, node_state=False)  # the Ray actors keep their models
    gpu = str(cfg.model.device).startswith("cuda")
    backend_config = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.5 if gpu else 0.0},
        "init_args": {"num_cpus": os.cpu_count() or 1, "num_gpus": 1 if gpu else 0},
    }
    previous = os.environ.get(RUN_ENV)
    os.environ[RUN_ENV] = str(run_file.resolve())
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        run_simulation(server_app=server_app.app, client_app=client_app.app, num_supernodes=nodes,
                       backend_config=backend_config)
    finally:
        if previous is None:
            os.environ.pop(RUN_ENV, None)
        else:
            os.environ[RUN_ENV] = previous
        root.handlers[:] = handlers  # the ServerApp set up the run's log handlers; give the caller's back
        root.setLevel(level)
    result = server_app.RESULTS.pop(str(cfg.output.output_dir), None)
    if result is None:
        raise FedKSeedError("the Flower simulation ended without finishing the run (see the log above)")
    if "error" in result:
        raise FedKSeedError(result["error"])
    return result
