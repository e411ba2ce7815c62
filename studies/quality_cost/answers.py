"""What the study's greedy answers look like, from the runs' generations-<round>.jsonl files.

    python scripts/quality_cost/answers.py OUT [--dataset instruct]   # a markdown table, a row per run and round

A Rouge-L that drops can mean worse answers or no answers: a row counts the empty ones (nothing but whitespace
once decoded) and scores the rest apart. Round 0 is the base model, written by the run that evaluated it.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from run_files import read_metrics  # noqa: E402

GENERATIONS = re.compile(r"generations-(?P<round>\d+)\.jsonl$")
HEADER = ["| dataset | run | round | records | empty | Rouge-L | Rouge-L of the non-empty | answer chars"
          " | reference chars |",
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]


def answer_stats(rows: list[dict]) -> dict:
    """Counts and means over one evaluation's records; the non-empty Rouge-L is None when every answer is empty."""
    empty = [not r["prediction"].strip() for r in rows]
    kept = [r["rouge_l"] for r, e in zip(rows, empty, strict=True) if not e]
    return {"records": len(rows), "empty": int(sum(empty)),
            "rouge_l": float(np.mean([r["rouge_l"] for r in rows])),
            "rouge_l_non_empty": float(np.mean(kept)) if kept else None,
            "answer_chars": float(np.mean([len(r["prediction"]) for r in rows])),
            "reference_chars": float(np.mean([len(r["reference"]) for r in rows]))}


def generation_files(run: Path) -> list[tuple[int, Path]]:
    """The run's generations files by round."""
    found = [(int(m["round"]), p) for p in run.glob("generations-*.jsonl") if (m := GENERATIONS.search(p.name))]
    return sorted(found)


class AnswersError(Exception):
    pass


def read_answers(path: Path) -> dict:
    """answer_stats of one generations file; a record without a text prediction and reference or a numeric Rouge-L
    is an AnswersError naming the file."""
    try:
        return answer_stats(read_metrics(path))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AnswersError(f"{path}: not a generations file (a record lacks prediction, reference or rouge_l: "
                           f"{type(exc).__name__} {exc})") from exc


def table(out: Path, datasets: list[str]) -> list[str]:
    lines = list(HEADER)
    for dataset in datasets:
        for run in sorted(p for p in (out / dataset).glob("*") if p.is_dir()):
            for round_idx, path in generation_files(run):
                s = read_answers(path)
                non_empty = "–" if s["rouge_l_non_empty"] is None else f"{s['rouge_l_non_empty']:.4f}"
                lines.append(f"| {dataset} | {run.name} | {round_idx} | {s['records']} | {s['empty']} "
                             f"| {s['rouge_l']:.4f} | {non_empty} | {s['answer_chars']:.0f} "
                             f"| {s['reference_chars']:.0f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--dataset", choices=["dolly", "instruct"], action="append")
    args = p.parse_args(argv)
    if not args.out.is_dir():
        print(f"error: {args.out} is not a directory", file=sys.stderr)
        return 2
    try:
        lines = table(args.out, args.dataset or ["dolly", "instruct"])
    except AnswersError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if len(lines) == len(HEADER):
        print(f"error: no generations-<round>.jsonl under {args.out}/<dataset>/<run>/", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
