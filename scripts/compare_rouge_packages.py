"""Compare our Rouge-L (rouge-score, evaluations.rouge_l) with the PyPI `rouge` package the paper's code used.

Predictions are a deterministic corruption of Dolly references (first half of the response words plus
the instruction words), so scores spread over [0, 1]. Needs `pip install rouge==1.0.1` (not a dependency).

    python scripts/compare_rouge_packages.py [--n 200] [--data path.jsonl]
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_DATA = [ROOT / "data" / "databricks-dolly-15k-sample.jsonl",
                ROOT.parent / "shared" / "data" / "databricks-dolly-15k.jsonl"]


def corrupt(record: dict) -> str:
    """A fake prediction: the first half of the reference's words, then the instruction's words."""
    words = record["response"].split()
    return " ".join(words[: len(words) // 2] + record["instruction"].split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="number of Dolly records (sampled with seed 0)")
    parser.add_argument("--data", type=Path, default=None, help="Dolly jsonl (default: sample, else shared)")
    args = parser.parse_args()
    try:
        from rouge import Rouge
    except ImportError:
        sys.exit("compare_rouge_packages: the `rouge` package is missing (pip install rouge==1.0.1)")
    from evaluations import rouge_l

    path = args.data or next((p for p in DEFAULT_DATA if p.is_file()), None)
    if path is None or not path.is_file():
        sys.exit(f"compare_rouge_packages: no data file (tried {', '.join(map(str, DEFAULT_DATA))})")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    records = [r for r in records if r["response"].strip()]
    records = random.Random(0).sample(records, min(args.n, len(records)))

    ours, theirs, failed = [], [], 0
    for record in records:
        pred, ref = corrupt(record), record["response"]
        ours.append(rouge_l([pred], [ref]))
        try:
            theirs.append(Rouge().get_scores(pred, ref, avg=True)["rouge-l"]["f"])
        except (ValueError, RecursionError):  # `rouge` refuses an empty text (after splitting on ".")
            theirs.append(0.0)
            failed += 1
    diffs = [abs(a - b) for a, b in zip(ours, theirs, strict=True)]
    print(f"data: {path} ({len(records)} pairs)")
    print(f"rouge-score rougeL F (ours, no stemmer): {sum(ours) / len(ours):.4f}")
    print(f"rouge 1.0.1 rouge-l f (paper's code):    {sum(theirs) / len(theirs):.4f}")
    print(f"mean |per-pair difference|: {sum(diffs) / len(diffs):.4f}   max: {max(diffs):.4f}")
    if failed:
        print(f"`rouge` raised on {failed} pair(s), scored 0.0 there")


if __name__ == "__main__":
    main()
