"""A SuperNode's synced model state on disk, so that a fresh ClientApp process (Flower 1.42 starts one per
message) costs one load plus a replay of the rounds since the last sync instead of a replay from round 0.

One safetensors file per run configuration and partition, in the node's state directory (node config
`state-dir`, default $FLWR_HOME/fedkseed-node or ~/.flwr/fedkseed-node; `state-dir=off` turns it off). It
holds the pristine weights of the last synced round (every trained parameter, as the node's pristine
SeededModel has them: theta0 with rounds 1..r of Delta c replayed), that copy's float64 c, and in its
metadata the round r, the state key and a digest of the node's record of Delta c for rounds 1..r. It is only
loaded when all three match the node's own record, so another run, model, flag set or trajectory never uses it.

Written atomically (a temporary file in the same directory, fsync, os.replace) with a CRC-32 over the metadata
and every tensor's bytes: a torn or corrupt file is ignored with a warning, never loaded, and rebuilt by the
next save. Loaded memory-mapped (safetensors), checked, then copied into the model in place.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from modeling import resolve_model_path
from optimizers.seed_pool import SeededModel

if TYPE_CHECKING:
    from config import RunConfig

logger = logging.getLogger("fedkseed.flower")

MAGIC = "fedkseed-node-state-v1"
OFF = "off"
C_TENSOR = "c"  # the copy's float64 c; parameters are stored as "p.<name>"
# flags that make two runs' pristine weights differ for the same record of Delta c
STATE_FLAGS = ("model", "K", "seed", "lr", "perturbation", "dtype", "device")


def default_dir() -> Path:
    """$FLWR_HOME/fedkseed-node, or ~/.flwr/fedkseed-node: beside the SuperNode's own Flower files."""
    home = os.environ.get("FLWR_HOME") or str(Path.home() / ".flwr")
    return Path(home) / "fedkseed-node"


def model_identity(spec: str) -> list:
    """The base model's files by resolved path, size and mtime: cheap, and changes when the files do."""
    directory, gguf = resolve_model_path(spec)
    files = [directory / gguf] if gguf else sorted(p for p in directory.iterdir() if p.is_file())
    return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def state_key(cfg: RunConfig, partition: int) -> str:
    """What the state depends on besides the record of Delta c: base model files, the seed pool's flags, lr,
    z kind, dtype, device, and the node's partition (nodes sharing a directory keep their own files)."""
    flags = cfg.flags()
    doc = {"flags": {name: flags[name] for name in STATE_FLAGS}, "model": model_identity(cfg.model.model),
           "partition": partition}
    return hashlib.blake2b(json.dumps(doc, sort_keys=True, default=str).encode(), digest_size=12).hexdigest()


def history_digest(history: list[tuple[np.ndarray, np.ndarray]]) -> str:
    """blake2b over rounds' (int64 indices, float64 values), in order, with each round's length."""
    h = hashlib.blake2b(digest_size=16)
    for indices, values in history:
        h.update(len(indices).to_bytes(8, "little"))
        h.update(np.ascontiguousarray(indices, dtype="<i8").tobytes())
        h.update(np.ascontiguousarray(values, dtype="<f8").tobytes())
    return h.hexdigest()


def _checksum(meta: dict, tensors: dict[str, torch.Tensor]) -> str:
    crc = zlib.crc32(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        crc = zlib.crc32(name.encode(), crc)
        crc = zlib.crc32(t.view(torch.uint8).reshape(-1).numpy(), crc)
    return f"{crc:08x}"


class NodeStore:
    """The state file of one run configuration and partition (see the module doc)."""

    def __init__(self, directory: Path, key: str):
        self.directory = Path(directory)
        self.key = key
        self.path = self.directory / f"state-{key}.safetensors"

    def save(self, seeded: SeededModel, round_idx: int, history: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """Write the copy's weights and c as the state of round `round_idx` (history: rounds 1..round_idx)."""
        tensors = {f"{kind}.{name}": t.detach() for kind, name, t in _tensors(seeded.model)}
        tensors[C_TENSOR] = torch.from_numpy(np.ascontiguousarray(seeded.c, dtype=np.float64))
        meta = {"magic": MAGIC, "key": self.key, "round": str(round_idx),
                "history": history_digest(history[:round_idx]), "config": seeded.model.config.to_json_string()}
        meta["checksum"] = _checksum(meta, tensors)
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            save_file(tensors, str(tmp), metadata=meta)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:  # a full or read-only disk costs speed, not correctness
            logger.warning("node state: cannot write %s (%s); continuing without it", self.path, exc)
            tmp.unlink(missing_ok=True)

    def load(self, history: list[tuple[np.ndarray, np.ndarray]],
             make: Callable[[torch.nn.Module], SeededModel]) -> tuple[SeededModel | None, int]:
        """The stored copy, (make(model) at the stored c, its round), when the file is whole and matches this
        node's record of Delta c; else (None, 0). The model is built from the stored config and filled from the
        file: theta0 is not read."""
        meta, tensors = self._read(history)
        if meta is None:
            return None, 0
        model = empty_model(meta["config"], next(t.dtype for name, t in tensors.items() if name.startswith("p.")))
        names = {f"{kind}.{name}" for kind, name, _ in _tensors(model)}
        if names | {C_TENSOR} != set(tensors):
            logger.warning("node state: ignoring %s: its tensors do not match the model", self.path)
            return None, 0
        with torch.no_grad():
            for kind, name, t in _tensors(model):
                t.copy_(tensors[f"{kind}.{name}"])
        seeded = make(model)
        seeded.c = tensors[C_TENSOR].numpy().astype(np.float64)
        return seeded, int(meta["round"])

    def _read(self, history: list[tuple[np.ndarray, np.ndarray]]) -> tuple[dict | None, dict]:
        """The file's metadata and tensors (memory-mapped) when it is whole and for this node's trajectory."""
        if not self.path.exists():
            return None, {}
        try:
            with safe_open(str(self.path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (not a dict)
        except Exception as exc:  # safetensors raises its own error types for a torn header or short file
            logger.warning("node state: ignoring %s: unreadable (%s); rebuilding it", self.path,
                           exc.__class__.__name__)
            return None, {}
        stored = meta.pop("checksum", None)
        if meta.get("magic") != MAGIC or stored != _checksum(meta, tensors) or C_TENSOR not in tensors:
            logger.warning("node state: ignoring %s: checksum mismatch (torn or corrupt); rebuilding it", self.path)
            return None, {}
        round_idx = int(meta["round"])
        if meta["key"] != self.key or round_idx > len(history) or \
                meta["history"] != history_digest(history[:round_idx]):
            logger.info("node state: %s is for another trajectory (round %d); not used", self.path, round_idx)
            return None, {}
        return meta, tensors


def _tensors(model: torch.nn.Module) -> list[tuple[str, str, torch.Tensor]]:
    """Every parameter (tied ones once) and buffer of a model: ("p" or "b", name, tensor)."""
    return [("p", n, p) for n, p in model.named_parameters()] + [("b", n, b) for n, b in model.named_buffers()]


def empty_model(config_json: str, dtype: torch.dtype) -> torch.nn.Module:
    """A causal LM of the architecture in a transformers config JSON, weights not initialised (to be filled)."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    with no_init_weights():
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**json.loads(config_json)), dtype=dtype)
    model.tie_weights()
    return model.eval()


def store_for(node_config, cfg: RunConfig, partition: int, enabled: bool) -> NodeStore | None:
    """The node's store: node config `state-dir` (off = none), else the default directory when `enabled`
    (deployments; the simulation engine keeps models in its actors and passes enabled=False)."""
    value = str(node_config.get("state-dir", "") or "")
    if value == OFF or (not value and not enabled):
        return None
    return NodeStore(Path(value) if value else default_dir(), state_key(cfg, partition))
