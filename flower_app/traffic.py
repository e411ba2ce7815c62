"""Bytes on the wire per client per round, as metrics.jsonl and summary.json report them (sizes from
messages.measure), beside the paper's bound."""
from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger("fedkseed")

PAPER_BOUND_BYTES = 18_000  # the paper's title: "communication cost under 18 kilobytes" (per client per round)


def traffic_row(down: list[dict], up: list[dict]) -> dict:
    """A round's metrics: mean message / record / payload bytes per client down and up, and the largest message."""
    row = {}
    for name, sizes in (("down", down), ("up", up)):
        for level in ("message", "record", "payload"):
            values = [s[level] for s in sizes]
            key = f"bytes_{name}_per_client" if level == "message" else f"bytes_{name}_{level}_per_client"
            row[key] = float(np.mean(values)) if values else 0.0
        row[f"bytes_{name}_max"] = max((s["message"] for s in sizes), default=0)
    return row


def traffic_summary(rows: list[dict]) -> dict:
    """Mean and max bytes per client per round over the run, beside the paper's bound."""
    if not rows:
        return {}
    down = float(np.mean([r["bytes_down_per_client"] for r in rows]))
    up = float(np.mean([r["bytes_up_per_client"] for r in rows]))
    out = {
        "bytes_down_per_client_round": down, "bytes_up_per_client_round": up,
        "bytes_total_per_client_round": down + up,
        "bytes_down_max": max(r["bytes_down_max"] for r in rows),
        "bytes_up_max": max(r["bytes_up_max"] for r in rows),
        "bytes_down_payload_per_client_round": float(np.mean([r["bytes_down_payload_per_client"] for r in rows])),
        "bytes_up_payload_per_client_round": float(np.mean([r["bytes_up_payload_per_client"] for r in rows])),
        "measured_as": "Flower's serialized message object tree (deflated objects + object ids), "
                       "without gRPC/HTTP2 framing",
        "paper_bound_bytes": PAPER_BOUND_BYTES, "within_paper_bound": down + up < PAPER_BOUND_BYTES,
    }
    logger.info("communication per client per round: %.0f B down + %.0f B up = %.1f KB (max %d B down, %d B up; "
                "paper: < 18 KB)", down, up, (down + up) / 1000, out["bytes_down_max"], out["bytes_up_max"])
    return out
