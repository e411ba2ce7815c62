"""FedKSeed's wire records on the Flower Grid (message types and sizes: wire.py).

Every record is one ConfigRecord. Arrays travel as little-endian raw bytes values inside it (int32 seed indices,
float32 scalar gradients, float64 Delta c values and Pro probabilities) rather than as an ArrayRecord: a
Flower Array is three inflatable objects (chunk, array, record) with a 64-character id each, which adds about
1 KB of framing per message to payloads of a few KB. No model weight is ever put in a record.

Instruction (server -> node, message type "train"), record "fedkseed":
    round, client, lr, eps, local_step, batch_or_epoch, batch_size, grad_clip   the round and its LocalTraining
    catchup      "exact" or "summed"
    base         the round the node was synced to when the server last heard from it; the groups below bring
                 it to round - 1
    g_len, g_bitmap, g_idx, g_val
                 exact: one group per round base+1 .. round-1, that round's Delta c (indices, float64 values),
                 summed: one group, the current c at every index that changed since round `base`.
                 A group's indices are int32 (4 bytes each) or a bitmap over the K seeds (K/8 bytes),
                 whichever is smaller; values are float64, so c is reproduced bit for bit
    c_digest     8-byte blake2b of the server's c at round - 1: the node checks its own against it
    pro, p_round, p
                 FedKSeed-Pro: the round whose probabilities the node must use, and the K float64
                 probabilities themselves only when the node does not hold them yet
Reply (node -> server), record "fedkseed":
    round, client, n (sample count), idx (int32), g (float32), loss, nan and clip (skipped steps), synced, p_round,
    or error (a node-side reason, e.g. out of sync) with synced and p_round.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass

import numpy as np
from flwr.app import ConfigRecord, RecordDict

from client import ClientUpdate, LocalTraining
from flower_app.wire import NODE_REPORTED
from server import validate_update

TRAIN_RECORD = REPLY_RECORD = "fedkseed"  # one record per message; the message type tells which


class WireError(ValueError):
    """A record that does not decode: missing keys, wrong types, inconsistent lengths."""


def c_digest(c: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(c, dtype="<f8").tobytes(), digest_size=8).digest()


# --- sparse groups of (indices, float64 values) ---------------------------------------------------------------

def pack_groups(groups: list[tuple[np.ndarray, np.ndarray]], k: int) -> dict:
    """Groups of (sorted distinct indices, float64 values) as record values (see the module doc)."""
    lens, bitmaps, idx_parts, val_parts = [], [], [], []
    bitmap_bytes = math.ceil(k / 8)
    for indices, values in groups:
        indices = np.asarray(indices, dtype=np.int64)
        use_bitmap = bitmap_bytes < 4 * len(indices)
        if use_bitmap:
            mask = np.zeros(k, dtype=bool)
            mask[indices] = True
            idx_parts.append(np.packbits(mask, bitorder="little").tobytes())
        else:
            idx_parts.append(indices.astype("<i4").tobytes())
        lens.append(int(len(indices)))
        bitmaps.append(bool(use_bitmap))
        val_parts.append(np.asarray(values, dtype="<f8").tobytes())
    return {"g_len": lens, "g_bitmap": bitmaps, "g_idx": b"".join(idx_parts), "g_val": b"".join(val_parts)}


def unpack_groups(record: ConfigRecord, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    lens, bitmaps = list(record.get("g_len", [])), list(record.get("g_bitmap", []))
    idx_bytes, val_bytes = record.get("g_idx", b""), record.get("g_val", b"")
    if len(lens) != len(bitmaps) or not isinstance(idx_bytes, bytes) or not isinstance(val_bytes, bytes):
        raise WireError("catch-up groups: inconsistent fields")
    if any(n < 0 for n in lens) or len(val_bytes) != 8 * sum(lens):
        raise WireError("catch-up groups: value bytes do not match the counts")
    bitmap_bytes = math.ceil(k / 8)
    groups, at, vat = [], 0, 0
    for n, bitmap in zip(lens, bitmaps, strict=True):
        if bitmap:
            chunk = np.frombuffer(idx_bytes[at:at + bitmap_bytes], dtype=np.uint8)
            at += bitmap_bytes
            indices = np.flatnonzero(np.unpackbits(chunk, count=k, bitorder="little")).astype(np.int64)
        else:
            indices = np.frombuffer(idx_bytes[at:at + 4 * n], dtype="<i4").astype(np.int64)
            at += 4 * n
        if len(indices) != n or (n and (indices.min() < 0 or indices.max() >= k or np.any(np.diff(indices) <= 0))):
            raise WireError("catch-up groups: bad indices")
        groups.append((indices, np.frombuffer(val_bytes[vat:vat + 8 * n], dtype="<f8").astype(np.float64)))
        vat += 8 * n
    if at != len(idx_bytes):
        raise WireError("catch-up groups: index bytes do not match the counts")
    return groups


# --- instruction ------------------------------------------------------------------------------------------------

@dataclass
class Instruction:
    """What a node is told for one client in one round."""

    round: int
    client: int
    local: LocalTraining
    catchup: str
    base: int
    groups: list[tuple[np.ndarray, np.ndarray]]
    c_digest: bytes
    pro: bool = False
    p_round: int = 0
    probabilities: np.ndarray | None = None
    name: str = ""  # --flower_data node: the client's name (its client-column value) on the node that holds it


def encode_instruction(ins: Instruction, k: int) -> RecordDict:
    rec = {
        "round": ins.round, "client": ins.client, **asdict(ins.local), "catchup": ins.catchup, "base": ins.base,
        "c_digest": ins.c_digest,
        **pack_groups(ins.groups, k),
    }
    if ins.name:
        rec["name"] = ins.name
    if ins.pro:
        rec.update(pro=True, p_round=ins.p_round)
        if ins.probabilities is not None:
            rec["p"] = np.asarray(ins.probabilities, dtype="<f8").tobytes()
    return RecordDict({TRAIN_RECORD: ConfigRecord(rec)})


def decode_instruction(content: RecordDict, k: int) -> Instruction:
    try:
        rec = content.config_records[TRAIN_RECORD]
        p = rec.get("p")
        if p is not None and len(p) != 8 * k:
            raise WireError(f"{len(p) // 8} probabilities for {k} seeds")
        return Instruction(
            round=int(rec["round"]), client=int(rec["client"]),
            local=LocalTraining(lr=float(rec["lr"]), eps=float(rec["eps"]), local_step=int(rec["local_step"]),
                                batch_or_epoch=str(rec["batch_or_epoch"]), batch_size=int(rec["batch_size"]),
                                grad_clip=float(rec["grad_clip"])),
            catchup=str(rec["catchup"]),
            base=int(rec["base"]), groups=unpack_groups(rec, k), c_digest=bytes(rec["c_digest"]),
            pro=bool(rec.get("pro", False)), p_round=int(rec.get("p_round", 0)),
            probabilities=None if p is None else np.frombuffer(p, dtype="<f8").astype(np.float64),
            name=str(rec.get("name", "")),
        )
    except (KeyError, TypeError) as exc:
        raise WireError(f"instruction: {exc.__class__.__name__} {exc}") from None


# --- reply ------------------------------------------------------------------------------------------------------

def encode_reply(update: ClientUpdate, synced: int, p_round: int) -> RecordDict:
    rec = {
        "round": int(update.round), "client": int(update.client_id), "n": int(update.num_samples),
        "idx": np.asarray(update.seed_indices).astype("<i4").tobytes(),
        "g": np.asarray(update.grads).astype("<f4").tobytes(),
        "loss": float(update.mean_loss), "nan": int(update.skipped.get("nan", 0)),
        "clip": int(update.skipped.get("clip", 0)), "synced": int(synced), "p_round": int(p_round),
    }
    return RecordDict({REPLY_RECORD: ConfigRecord(rec)})


def encode_error_reply(reason: str, synced: int, p_round: int) -> RecordDict:
    return RecordDict({REPLY_RECORD: ConfigRecord({"error": reason, "synced": int(synced), "p_round": int(p_round)})})


@dataclass
class Reply:
    """A decoded reply: the update (None when the node reported an error), and the node's sync state."""

    update: ClientUpdate | None
    synced: int | None = None
    p_round: int | None = None
    error: str | None = None


def _int(rec: ConfigRecord, key: str) -> int:
    value = rec[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise WireError(f"{key} is not an integer")
    return value


def decode_reply(content: RecordDict, max_bytes: int) -> Reply:
    """Decode a reply's record into a ClientUpdate; raises WireError when it cannot be read at all.

    Byte arrays are checked for element size and for max_bytes (each array) before anything is decoded;
    everything else about the upload (round, counts, lengths, index range, finiteness) is server.validate_update's.
    """
    rec = content.config_records.get(REPLY_RECORD)
    if rec is None:
        raise WireError(f"no {REPLY_RECORD} record")
    synced = rec.get("synced")
    p_round = rec.get("p_round")
    synced = synced if isinstance(synced, int) and not isinstance(synced, bool) else None
    p_round = p_round if isinstance(p_round, int) and not isinstance(p_round, bool) else None
    if "error" in rec:
        return Reply(update=None, synced=synced, p_round=p_round, error=str(rec["error"]))
    try:
        idx, g = rec["idx"], rec["g"]
        if not isinstance(idx, bytes) or not isinstance(g, bytes):
            raise WireError("idx and g must be bytes")
        if len(idx) > max_bytes or len(g) > max_bytes:
            raise WireError(f"oversized payload: {len(idx)} + {len(g)} bytes, at most {max_bytes} each allowed")
        if len(idx) % 4 or len(g) % 4:
            raise WireError("idx / g byte lengths are not multiples of 4")
        loss = rec.get("loss", float("nan"))
        update = ClientUpdate(
            client_id=_int(rec, "client"), round=_int(rec, "round"),
            seed_indices=np.frombuffer(idx, dtype="<i4").astype(np.int64),
            grads=np.frombuffer(g, dtype="<f4").astype(np.float64), num_samples=_int(rec, "n"),
            mean_loss=float(loss) if isinstance(loss, float | int) else float("nan"),
            skipped={"nan": int(rec.get("nan", 0)), "clip": int(rec.get("clip", 0))},
        )
    except KeyError as exc:
        raise WireError(f"missing field {exc}") from None
    except (TypeError, ValueError) as exc:
        if isinstance(exc, WireError):
            raise
        raise WireError(f"malformed reply ({exc.__class__.__name__})") from None
    return Reply(update=update, synced=synced, p_round=p_round)


def check_reply(content: RecordDict, round_idx: int, client_id: int, k: int,
                max_pairs: int) -> tuple[Reply | None, str | None]:
    """Decode a train reply and check it: (decoded reply or None, why it is rejected or None).

    Byte-level checks (record present, types, element sizes, at most 4 * max_pairs bytes per array) are
    decode_reply's; the upload itself (round, sample count, lengths, pair count, index range, finite g)
    is checked by server.validate_update, the same function the in-process engine uses.
    """
    try:
        decoded = decode_reply(content, max_bytes=4 * max_pairs)
    except WireError as exc:
        return None, str(exc)
    if decoded.error is not None:
        return decoded, f"{NODE_REPORTED}{decoded.error}"
    if decoded.update.client_id != client_id:
        return decoded, f"reply names client {decoded.update.client_id}, the message was for client {client_id}"
    return decoded, validate_update(decoded.update, k, round_idx, max_pairs)
