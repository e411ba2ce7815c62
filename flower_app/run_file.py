"""The run file: the resolved flags of a Flower run (JSON), which the ServerApp and every ClientApp read (Flower's
simulation engine leaves context.run_config empty, so the app takes its settings from here); a node's config may
override its node-local model, data path and device."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from config import RunConfig, recorded
from errors import FedKSeedError

RUN_ENV = "FEDKSEED_FLOWER_RUN"  # path of the run file (flags JSON) when context.run_config has none
NODE_OVERRIDES = ("model", "data_path", "device")  # node_config keys model, data-path, device: node-local paths


def write_run_file(path: Path, cfg: RunConfig, expected_nodes: int, resume: str | None = None,
                   faults: dict | None = None, node_state: bool = True) -> Path:
    """The resolved flags of a run, read by the ServerApp and every ClientApp (run_config is empty in the
    simulation engine, so the app takes its settings from here). `faults` is a test hook: client id -> a kind of
    hostile reply that client sends (see FAULTS). `node_state`: nodes keep a state file by default."""
    doc = {"flags": cfg.flags(), "expected_nodes": expected_nodes, "resume": resume, "faults": faults or {},
           "node_state": node_state}
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return path


def read_run_file(context) -> tuple[RunConfig, dict]:
    """The run's flags: run_config["flags-file"] (flwr run), else $FEDKSEED_FLOWER_RUN (simulation); node_config
    may override the node-local model, data-path and device."""
    path = str(context.run_config.get("flags-file", "") or os.environ.get(RUN_ENV, ""))
    if not path:
        raise FedKSeedError(f"Flower app: no run file (set run_config flags-file or ${RUN_ENV})")
    doc = json.loads(Path(path).read_text())
    flags = dict(doc["flags"])
    for key in NODE_OVERRIDES:
        value = context.node_config.get(key.replace("_", "-"))
        if value:
            flags[key] = str(value)
    if flags.get("flower_data") == "node":  # the node's own data: {node} in --data_path is its partition id
        flags["data_path"] = str(flags["data_path"]).replace("{node}", str(context.node_config.get("partition-id")))
    return recorded(flags), doc


def flags_key(cfg: RunConfig) -> str:
    return hashlib.blake2b(json.dumps(cfg.flags(), sort_keys=True, default=str).encode(), digest_size=8).hexdigest()
