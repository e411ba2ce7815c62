"""What the study's greedy answers look like, from the runs' generations-<round>.jsonl files.

    python studies/quality_cost/answers.py [OUT] [--dataset instruct]   # a markdown table, a row per run and round
    python studies/quality_cost/answers.py --dataset long/dolly          # the 50-round runs (OUT/long/dolly/<run>)
    python studies/quality_cost/answers.py --dataset template/instruct   # the chat-template run (template.sh)
    python studies/quality_cost/answers.py [OUT] --pack                 # the loose files into OUT/generations.tar.gz

A Rouge-L that drops can mean worse answers or no answers: a row counts the empty ones (nothing but whitespace
once decoded) and scores the rest apart. Round 0 is the base model, written by the run that evaluated it.

OUT (default: the committed results, studies/quality_cost/results) holds <dataset>/<run>/ folders (the longer
horizon's under long/<dataset>/). A run writes its
generations next to its metrics; the committed study keeps them all in one compressed file, OUT/generations.tar.gz
(members <dataset>/<run>/generations-<round>.jsonl, byte for byte the files the runs wrote), which --pack makes.
Both are read, a loose file before the packed one of the same run and round.
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import re
import sys
import tarfile
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
ARCHIVE = "generations.tar.gz"
FOLDERS = ["dolly", "instruct", "long/dolly", "long/instruct", "template/instruct"]  # the study's run folders
GENERATIONS = re.compile(r"generations-(?P<round>\d+)\.jsonl$")
HEADER = ["| dataset | run | round | records | empty | P(EOS first) | Rouge-L | Rouge-L of the non-empty | answer chars"
          " | reference chars |",
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]


def answer_stats(rows: list[dict]) -> dict:
    """Counts and means over one evaluation's records; the non-empty Rouge-L is None when every answer is empty, the
    mean probability of EOS as the first answer token None where the run did not record it (runs before it did)."""
    empty = [not r["prediction"].strip() for r in rows]
    kept = [r["rouge_l"] for r, e in zip(rows, empty, strict=True) if not e]
    eos = [r.get("first_eos_prob") for r in rows]
    return {"records": len(rows), "empty": int(sum(empty)),
            "first_eos_prob": None if None in eos else float(np.mean(eos)),
            "rouge_l": float(np.mean([r["rouge_l"] for r in rows])),
            "rouge_l_non_empty": float(np.mean(kept)) if kept else None,
            "answer_chars": float(np.mean([len(r["prediction"]) for r in rows])),
            "reference_chars": float(np.mean([len(r["reference"]) for r in rows]))}


def generation_files(run: Path) -> list[tuple[int, Path]]:
    """The run's generations files by round."""
    found = [(int(m["round"]), p) for p in run.glob("generations-*.jsonl") if (m := GENERATIONS.search(p.name))]
    return sorted(found)


def loose_files(out: Path) -> list[Path]:
    """Every generations file under OUT/<dataset>/<run>/ and OUT/long/<dataset>/<run>/."""
    return sorted(path for path in out.rglob("generations-*.jsonl") if GENERATIONS.search(path.name))


def packed(out: Path) -> dict[str, bytes]:
    """The members of OUT/generations.tar.gz by name (<dataset>/<run>/generations-<round>.jsonl); none without it."""
    if not (out / ARCHIVE).exists():
        return {}
    with tarfile.open(out / ARCHIVE, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def pack(out: Path) -> Path:
    """Move the loose generations files into OUT/generations.tar.gz, beside what it already holds. The archive is
    the same bytes for the same files (sorted members, no times or owners), so packing again changes nothing."""
    members = packed(out)
    loose = loose_files(out)
    members.update({path.relative_to(out).as_posix(): path.read_bytes() for path in loose})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(members[name]), 0o644
            tar.addfile(info, io.BytesIO(members[name]))
    tmp = out / (ARCHIVE + ".tmp")
    with tmp.open("wb") as f, gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=9) as gz:
        gz.write(buffer.getvalue())
    tmp.replace(out / ARCHIVE)
    for path in loose:
        path.unlink()
    return out / ARCHIVE


class AnswersError(Exception):
    pass


def read_answers(where: str, text: str) -> dict:
    """answer_stats of one generations file's text; a record without a text prediction and reference or a numeric
    Rouge-L is an AnswersError naming the file."""
    try:
        return answer_stats([json.loads(line) for line in text.splitlines() if line.strip()])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AnswersError(f"{where}: not a generations file (a record lacks prediction, reference or rouge_l: "
                           f"{type(exc).__name__} {exc})") from exc


def generations(out: Path, dataset: str) -> list[tuple[str, int, str, str]]:
    """(run, round, where it was read, text) of the dataset's generations files, by run and numeric round."""
    found = {}
    for name, data in packed(out).items():
        parts, m = name[len(dataset) + 1:].split("/"), GENERATIONS.search(name)
        if name.startswith(dataset + "/") and len(parts) == 2 and m:
            found[parts[0], int(m["round"])] = (f"{out / ARCHIVE}:{name}", data.decode())
    for run in sorted(p for p in (out / dataset).glob("*") if p.is_dir()):
        for round_idx, path in generation_files(run):
            found[run.name, round_idx] = (str(path), path.read_text())
    return [(run, round_idx, *found[run, round_idx]) for run, round_idx in sorted(found)]


def table(out: Path, datasets: list[str]) -> list[str]:
    lines = list(HEADER)
    for dataset in datasets:
        for run, round_idx, where, text in generations(out, dataset):
            s = read_answers(where, text)
            non_empty = "–" if s["rouge_l_non_empty"] is None else f"{s['rouge_l_non_empty']:.4f}"
            eos = "–" if s["first_eos_prob"] is None else f"{s['first_eos_prob']:.3f}"
            lines.append(f"| {dataset} | {run} | {round_idx} | {s['records']} | {s['empty']} | {eos} "
                         f"| {s['rouge_l']:.4f} | {non_empty} | {s['answer_chars']:.0f} "
                         f"| {s['reference_chars']:.0f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, nargs="?", default=RESULTS)
    p.add_argument("--dataset", choices=FOLDERS, action="append")
    p.add_argument("--pack", action="store_true", help="move the loose generations files into OUT/" + ARCHIVE)
    args = p.parse_args(argv)
    if not args.out.is_dir():
        print(f"error: {args.out} is not a directory", file=sys.stderr)
        return 2
    if args.pack:
        print(pack(args.out))
        return 0
    try:
        lines = table(args.out, args.dataset or FOLDERS)
    except AnswersError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if len(lines) == len(HEADER):
        print(f"error: no generations-<round>.jsonl under {args.out}/<dataset>/<run>/ or in {args.out / ARCHIVE}",
              file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
