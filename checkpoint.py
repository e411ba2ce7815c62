"""Checkpoints of a run: the few numbers that define it (c, per-round Delta c, RNG, Pro history), written atomically
with a checksum so that a torn or truncated file is refused, never loaded."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from errors import FedKSeedError

MAGIC = "fedkseed-checkpoint-v1"
CHECKPOINT_FILE = "checkpoint.json"


def encode_array(a: np.ndarray) -> dict:
    """An array as dtype, shape and base64 bytes: exact, and a fraction of the size of JSON numbers."""
    a = np.ascontiguousarray(a)
    return {"dtype": str(a.dtype), "shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode()}


def decode_array(d: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(d["data"]), dtype=np.dtype(d["dtype"])).reshape(d["shape"]).copy()


def model_fingerprint(model: torch.nn.Module) -> str:
    """blake2b over every parameter's name, dtype, shape and bytes: identifies the base model theta0."""
    h = hashlib.blake2b(digest_size=16)
    for name, p in model.named_parameters():
        h.update(f"{name}|{p.dtype}|{tuple(p.shape)}".encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass
class RunState:
    """Everything a run needs to continue exactly where it stopped."""

    round: int
    fingerprint: str
    flags: dict
    seed_pool: np.ndarray
    c: np.ndarray
    deltas: list[tuple[np.ndarray, np.ndarray]]  # per round: (seed indices, Delta c values), in order
    server_rng: dict
    last_round: dict[int, int]  # client id -> the round whose c it last synced to (0 = theta0)
    history: tuple[np.ndarray, np.ndarray] | None = None  # Pro: clipped |g| sums and counts per seed
    base_eval: dict | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "round": self.round, "fingerprint": self.fingerprint, "flags": self.flags,
            "seed_pool": encode_array(self.seed_pool), "c": encode_array(self.c),
            "deltas": [[encode_array(i), encode_array(v)] for i, v in self.deltas],
            "server_rng": self.server_rng,
            "last_round": {str(k): v for k, v in self.last_round.items()},
            "history": None if self.history is None else [encode_array(a) for a in self.history],
            "base_eval": self.base_eval, "extra": self.extra,
        }

    def at_round(self, n: int) -> RunState:
        """The run as it stood after its first n rounds, as far as the model goes: every round's Delta c is kept, so
        c is the sum of the first n in the order the run added them (the same floats). Sampling state is not."""
        c = np.zeros_like(self.c)
        for indices, values in self.deltas[:n]:
            np.add.at(c.reshape(-1), indices, values)
        return replace(self, round=n, c=c, deltas=self.deltas[:n])

    @classmethod
    def from_json(cls, d: dict) -> RunState:
        return cls(
            round=d["round"], fingerprint=d["fingerprint"], flags=d["flags"],
            seed_pool=decode_array(d["seed_pool"]), c=decode_array(d["c"]),
            deltas=[(decode_array(i), decode_array(v)) for i, v in d["deltas"]],
            server_rng=d["server_rng"], last_round={int(k): v for k, v in d["last_round"].items()},
            history=None if d["history"] is None else tuple(decode_array(a) for a in d["history"]),
            base_eval=d["base_eval"], extra=d.get("extra", {}),
        )


TENSORS_FILE = "tensors-{round}.npz"


@dataclass
class TensorState:
    """The state of a run whose model crosses the wire (FedIT, FedAvg): the global trained tensors, the server's
    RNG and the round. The tensors live in tensors-<round>.npz beside checkpoint.json, which names that file and
    holds its SHA-256."""

    round: int
    fingerprint: str
    flags: dict
    server_rng: dict
    tensors: dict[str, np.ndarray]
    base_eval: dict | None = None


def _write_atomic(path: Path, data: bytes) -> None:
    """Write-then-rename: a crash mid-write leaves the previous file, never a torn one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_verified(path: Path, doc: dict) -> None:
    body = json.dumps(doc, separators=(",", ":")).encode()
    _write_atomic(path, f"{MAGIC} {len(body)} {hashlib.sha256(body).hexdigest()}\n".encode() + body)


def save_checkpoint(path: Path, state: RunState | TensorState) -> None:
    """checkpoint.json, written atomically with a length and checksum header. A TensorState's tensors go first into
    a file of their round's own, which the new checkpoint.json then names: a crash between the two leaves the
    previous checkpoint and its tensors whole. Older tensor files are removed after."""
    if isinstance(state, RunState):
        _write_verified(path, state.to_json())
        return
    buffer = io.BytesIO()
    np.savez(buffer, **state.tensors)
    data = buffer.getvalue()
    name = TENSORS_FILE.format(round=state.round)
    _write_atomic(path.with_name(name), data)
    _write_verified(path, {"kind": "tensors", "round": state.round, "fingerprint": state.fingerprint,
                           "flags": state.flags, "server_rng": state.server_rng, "base_eval": state.base_eval,
                           "tensors_file": name, "tensors_sha256": hashlib.sha256(data).hexdigest()})
    for old in path.parent.glob(TENSORS_FILE.format(round="*")):
        if old.name != name:
            old.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> RunState | TensorState:
    """Read and verify a checkpoint; any damage is a one-line FedKSeedError."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    try:
        raw = path.read_bytes()
    except OSError:
        raise FedKSeedError(f"--resume {path}: no checkpoint there") from None
    header, _, body = raw.partition(b"\n")
    parts = header.decode("ascii", "replace").split(" ")
    if len(parts) != 3 or parts[0] != MAGIC:
        raise FedKSeedError(f"--resume {path}: not a FedKSeed checkpoint (bad header)")
    if not parts[1].isdigit() or int(parts[1]) != len(body) or hashlib.sha256(body).hexdigest() != parts[2]:
        raise FedKSeedError(f"--resume {path}: checkpoint is truncated or corrupt (length or checksum mismatch)")
    try:
        doc = json.loads(body)
        if doc.get("kind") == "tensors":
            return _load_tensor_state(path, doc)
        return RunState.from_json(doc)
    except (ValueError, KeyError, TypeError) as exc:
        raise FedKSeedError(f"--resume {path}: unreadable checkpoint ({exc.__class__.__name__})") from None


def _load_tensor_state(path: Path, doc: dict) -> TensorState:
    tensors_path = path.with_name(doc["tensors_file"])
    try:
        data = tensors_path.read_bytes()
    except OSError:
        raise FedKSeedError(f"--resume {tensors_path}: the checkpoint's tensors are missing") from None
    if hashlib.sha256(data).hexdigest() != doc["tensors_sha256"]:
        raise FedKSeedError(f"--resume {tensors_path}: tensors do not match the checkpoint (checksum mismatch)")
    with np.load(io.BytesIO(data)) as archive:
        tensors = {name: archive[name] for name in archive.files}
    return TensorState(round=doc["round"], fingerprint=doc["fingerprint"], flags=doc["flags"],
                       server_rng=doc["server_rng"], tensors=tensors, base_eval=doc["base_eval"])
