"""Ferret's download per client and round, recomputed from a run's checkpoint (every round's Delta c) and its
metrics (each round's clients) as methods.base.summed_catch_up_bytes charges it, FedKSeed's accounting.

For a Ferret run whose rows charge a client the rounds of Delta c it lacked (what the Flower engine's exact catch-up
sends: about 220 KB a missed round at K 200 on SmolLM2, so it grows with the rounds), where FedKSeed is charged the
entries of c that changed (at most K x L of them): it rewrites bytes_down_per_client from a checkpoint that holds
the rounds, so that the study compares the two methods' bytes alike.

    python -m studies.quality_cost.ferret_download RUN [--checkpoint PATH] [--write]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from checkpoint import load_checkpoint
from methods.base import summed_catch_up_bytes
from run_records import read_metrics


def charged(deltas: list[tuple[np.ndarray, np.ndarray]], rows: list[dict]) -> dict[int, float]:
    """bytes_down_per_client of each round that `deltas` covers: a client last synced to the round before the one
    it last trained in (0 before its first)."""
    last: dict[int, int] = {}
    out = {}
    for row in sorted((r for r in rows if r["round"] > 0), key=lambda r: r["round"]):
        r = row["round"]
        if r > len(deltas):
            break
        out[r] = float(np.mean([summed_catch_up_bytes(deltas[:r - 1], last.get(c, 0)) for c in row["clients"]]))
        for c in row["clients"]:
            last[c] = r - 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--checkpoint", type=Path, help="default: the run's own")
    parser.add_argument("--write", action="store_true", help="rewrite metrics.jsonl (else print old and new)")
    args = parser.parse_args(argv)
    state = load_checkpoint(args.checkpoint or args.run)
    rows = read_metrics(args.run / "metrics.jsonl")
    new = charged(state.deltas, rows)
    for row in rows:
        if row["round"] in new:
            print(f"round {row['round']}: {row['bytes_down_per_client']:.0f} -> {new[row['round']]:.0f} B")
            row["bytes_down_per_client"] = new[row["round"]]
    if args.write:
        (args.run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
