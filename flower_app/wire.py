"""What every method's messages share on the Flower Grid: the message types, the set-up query, the prefix of a
reason a node reports itself, and the measured sizes of a message.

Query (server -> node, "query") / its reply: the node's partition, the clients it hosts, its base-model
fingerprint and seed-pool digest (checked once, before round 1), record "fedkseed". With --flower_data node the
reply also names the clients of the node's own data and their sizes, and each instruction carries its client's
name.

Sizes (measure()): `payload` is the raw array bytes, `record` the serialized RecordDict with its records (the
content as Flower deflates it), `message` the whole object tree Flower pushes for the message: every object's
deflated bytes (content, metadata, header naming its children) plus its 64-byte object id. gRPC/HTTP2 framing
and TLS are not included (Flower does not expose per-message transport byte counts).
"""
from __future__ import annotations

import hashlib

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict

TRAIN = "train"
QUERY = "query"
QUERY_RECORD = "fedkseed"
NODE_REPORTED = "node reported: "  # prefix of a reason the node itself sent (out of sync, ...): retried once


def array_digest(a: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(a).tobytes(), digest_size=8).hexdigest()


# --- query ------------------------------------------------------------------------------------------------------

def encode_query_reply(partition: int, partitions: int, clients: list[int], fingerprint: str, pool: str,
                       held: dict[str, int] | None = None) -> RecordDict:
    """The node's set-up: its partition, the clients it hosts (ids; with --flower_data node, `held`: the names
    and sizes of the clients in its own data), its base-model fingerprint and seed-pool digest."""
    rec = {"partition": int(partition), "partitions": int(partitions), "clients": [int(c) for c in clients],
           "fingerprint": fingerprint, "pool_digest": pool}
    if held is not None:
        rec.update(names=list(held), sizes=[int(n) for n in held.values()])
    return RecordDict({QUERY_RECORD: ConfigRecord(rec)})


def query_messages(nodes: list[int]) -> list[Message]:
    """The set-up query, one message per node (at the start, and for a node that joins later)."""
    return [Message(RecordDict({QUERY_RECORD: ConfigRecord({})}), node, QUERY, group_id="setup") for node in nodes]


# --- sizes ------------------------------------------------------------------------------------------------------

def _tree_bytes(obj) -> int:
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

    return sum(len(o.deflate()) + len(object_id) for object_id, o in get_all_nested_objects(obj).items())


def payload_bytes(content: RecordDict) -> int:
    """The raw bytes values of the content's records and the serialized arrays of its array records (.npy, with
    their headers), without keys and scalars."""
    raw = sum(len(value) for record in content.config_records.values() for value in record.values()
              if isinstance(value, bytes))
    return raw + sum(len(array.data) for record in content.array_records.values() for array in record.values())


def measure(message: Message) -> dict[str, int]:
    """payload / record / message bytes of a message, as described in the module doc."""
    content = message.content
    return {"payload": payload_bytes(content), "record": _tree_bytes(content), "message": _tree_bytes(message)}
