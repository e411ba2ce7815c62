"""The wire records of the methods that ship arrays (methods.base.ArrayMethod: FedIT's adapters, FedAvg's weights).

Instruction (server -> node, message type "train"): record "arrays" (an ArrayRecord: the tensors the method sends,
by name) and record "array_round" (ConfigRecord: round, client, and with --flower_data node the client's name).
Reply (node -> server): the uploaded tensors as record "arrays", and record "array_round" with round, client, the
client's mean training loss, forward-equivalents, seconds and peak memory of its local work; or an error.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from flower_app.wire import NODE_REPORTED
from methods.base import LocalReport

ARRAYS = "arrays"
ROUND_RECORD = "array_round"


@dataclass
class ArrayInstruction:
    round: int
    client: int
    name: str
    tensors: dict[str, np.ndarray]


def is_array_message(content: RecordDict) -> bool:
    return ROUND_RECORD in content.config_records


def _array_record(tensors: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord(array_dict={name: Array.from_numpy_ndarray(a) for name, a in tensors.items()})


def _tensors(content: RecordDict) -> dict[str, np.ndarray]:
    record = content.array_records.get(ARRAYS)
    return {} if record is None else {name: array.numpy() for name, array in record.items()}


def encode_instruction(ins: ArrayInstruction) -> RecordDict:
    rec = {"round": ins.round, "client": ins.client}
    if ins.name:
        rec["name"] = ins.name
    return RecordDict({ARRAYS: _array_record(ins.tensors), ROUND_RECORD: ConfigRecord(rec)})


def decode_instruction(content: RecordDict) -> ArrayInstruction:
    rec = content.config_records[ROUND_RECORD]
    return ArrayInstruction(round=int(rec["round"]), client=int(rec["client"]), name=str(rec.get("name", "")),
                            tensors=_tensors(content))


def encode_reply(round_idx: int, report: LocalReport) -> RecordDict:
    rec = {"round": round_idx, "client": report.client_id, "loss": float(report.train_loss),
           "forward_equivalents": int(report.forward_equivalents), "seconds": float(report.seconds),
           "peak_bytes": int(report.peak_bytes)}
    return RecordDict({ARRAYS: _array_record(report.upload), ROUND_RECORD: ConfigRecord(rec)})


def encode_error_reply(reason: str) -> RecordDict:
    return RecordDict({ROUND_RECORD: ConfigRecord({"error": reason})})


def decode_reply(content: RecordDict, round_idx: int, client_id: int) -> tuple[LocalReport | None, str | None]:
    """(the client's report with its uploaded tensors, None), or (None, why the reply cannot be used). The
    tensors themselves are the method's to check (ArrayMethod.check_upload)."""
    rec = content.config_records.get(ROUND_RECORD)
    if rec is None:
        return None, f"no {ROUND_RECORD} record"
    if "error" in rec:
        return None, f"{NODE_REPORTED}{rec['error']}"
    try:
        numbers = {key: rec[key] for key in ("round", "client", "forward_equivalents", "peak_bytes")}
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in numbers.values()):
            raise TypeError
        loss, seconds = float(rec["loss"]), float(rec["seconds"])
        tensors = _tensors(content)
    except (KeyError, TypeError, ValueError) as exc:
        return None, f"malformed reply ({exc.__class__.__name__})"
    if (numbers["round"], numbers["client"]) != (round_idx, client_id):
        return None, (f"reply is for client {numbers['client']} round {numbers['round']}, the message was for "
                      f"client {client_id} round {round_idx}")
    return LocalReport(client_id=client_id, upload=tensors, bytes_down=0, bytes_up=0,
                       forward_equivalents=numbers["forward_equivalents"], train_loss=loss, seconds=seconds,
                       peak_bytes=numbers["peak_bytes"]), None
