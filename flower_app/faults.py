"""Fault injection for tests: a node that turns its honest replies into hostile ones (see run_file.write_run_file's
`faults`: client id -> kind)."""
from __future__ import annotations

import numpy as np
from flwr.app import ConfigRecord

from flower_app.fedkseed_messages import Instruction
from methods.base import LocalReport

ARRAY_FAULTS = ("tensor_nan", "tensor_shape", "tensor_missing", "tensor_dtype", "index_high", "value_nan")
FAULTS = ("nan", "inf", "index", "lengths", "zero_samples", "negative_samples", "round", "oversized", "scale1000")


def apply_fault(rec: ConfigRecord, kind: str, ins: Instruction) -> None:
    """Turn an honest reply record into a hostile one of the given kind (a test hook; see write_run_file)."""
    idx = np.frombuffer(rec["idx"], dtype="<i4").copy()
    g = np.frombuffer(rec["g"], dtype="<f4").copy()
    if kind == "nan":
        g[0] = np.nan
    elif kind == "inf":
        g[-1] = np.inf
    elif kind == "index":
        idx[0] = 2**20  # far outside [0, K)
    elif kind == "lengths":
        g = g[:-1]
    elif kind == "zero_samples":
        rec["n"] = 0
    elif kind == "negative_samples":
        rec["n"] = -3
    elif kind == "round":
        rec["round"] = ins.round - 1
    elif kind == "oversized":
        idx, g = np.concatenate([idx, idx]), np.concatenate([g, g])
    elif kind == "scale1000":
        g = g * 1000
    else:
        raise ValueError(f"unknown fault {kind!r}; expected one of {', '.join(FAULTS)}")
    rec["idx"], rec["g"] = idx.astype("<i4").tobytes(), g.astype("<f4").tobytes()


def apply_array_fault(report: LocalReport, kind: str) -> None:
    """Turn an honest upload of tensors into a hostile one of the given kind (a test hook, as apply_fault)."""
    if kind in ("index_high", "value_nan"):  # the first integer (float) array: an index past any table, a NaN
        integer = kind == "index_high"
        name = next(n for n in sorted(report.upload) if np.issubdtype(report.upload[n].dtype, np.integer) == integer)
        tensor = report.upload[name].copy()
        tensor.flat[0] = 2**30 if integer else np.nan
        report.upload[name] = tensor
        return
    name = sorted(report.upload)[0]
    tensor = report.upload[name]
    if kind == "tensor_nan":
        tensor = tensor.copy()
        tensor.flat[0] = np.nan
    elif kind == "tensor_shape":
        tensor = tensor[:-1]
    elif kind == "tensor_dtype":
        tensor = tensor.astype(np.float64)
    elif kind == "tensor_missing":
        del report.upload[name]
        return
    else:
        raise ValueError(f"unknown fault {kind!r}; expected one of {', '.join(ARRAY_FAULTS)}")
    report.upload[name] = tensor
