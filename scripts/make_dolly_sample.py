"""Write data/databricks-dolly-15k-sample.jsonl: a small, category-stratified, seeded sample of Dolly-15K.

Usage: python scripts/make_dolly_sample.py [SOURCE_JSONL] [OUTPUT_JSONL]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "databricks-dolly-15k.jsonl"
OUTPUT = ROOT / "data" / "databricks-dolly-15k-sample.jsonl"
PER_CATEGORY = 60
PER_CATEGORY_OVERRIDE = {"summarization": 40}  # the usual held-out task (--zerotask 7)
MAX_CHARS = 1500  # instruction + context + response: keeps CPU runs short
SEED = 0


def make_sample(records: list[dict], seed: int = SEED) -> list[dict]:
    """Per category (sorted), a seeded choice among the short records, kept in source order."""
    rng = np.random.default_rng(seed)
    out = []
    for category in sorted({r["category"] for r in records}):
        pool = [r for r in records if r["category"] == category
                and len(r["instruction"]) + len(r["context"]) + len(r["response"]) < MAX_CHARS]
        k = PER_CATEGORY_OVERRIDE.get(category, PER_CATEGORY)
        if len(pool) < k:
            raise SystemExit(f"{category}: only {len(pool)} records under {MAX_CHARS} characters, need {k}")
        out.extend(pool[i] for i in np.sort(rng.choice(len(pool), size=k, replace=False)))
    return out


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else SOURCE
    output = Path(sys.argv[2]) if len(sys.argv) > 2 else OUTPUT
    records = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    sample = make_sample(records)
    output.write_text("".join(json.dumps(r) + "\n" for r in sample), encoding="utf-8")
    print(f"wrote {len(sample)} records to {output}")


if __name__ == "__main__":
    main()
