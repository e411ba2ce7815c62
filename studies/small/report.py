"""The small study's tables: per dataset, mean +- std over seeds of held-out Rouge-L and eval loss and the bytes per
client; and the lr x eps sweep's eval loss by round.

    python studies/small/report.py runs/study [--json docs/study_results.json]

The study folder holds dolly/ and instruct/ (runs named fedkseed-s<seed>, fedkseed_pro-s<seed>) and sweep/
(runs named lr<lr>-eps<eps>); parts that are absent are left out. --json also writes every seed's numbers, and
the rerun of Dolly seed 0 in one torch thread (dolly/rerun-1thread) when present: tests/test_study_small.py checks
a rerun against seed 0 within a tolerance derived from that rerun-to-rerun difference.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a file
from run_records import read_metrics  # noqa: E402

DATASETS = {"dolly": "Dolly-15K sample, summarization held out", "instruct": "Natural Instructions, test tasks"}


def mean_std(values: list[float]) -> str:
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.4f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.4f}"


def collect(arm: Path, method: str) -> dict[str, list[float]]:
    """Every seed's final and base numbers and mean bytes per client and round, for one method of one arm."""
    out: dict[str, list[float]] = {"rouge_l": [], "eval_loss": [], "up": [], "down": [],
                                   "base_rouge_l": [], "base_eval_loss": []}
    for run in sorted(arm.glob(f"{method}-s*")):
        summary = json.loads((run / "summary.json").read_text())
        out["rouge_l"].append(summary["final"]["rouge_l"])
        out["eval_loss"].append(summary["final"]["eval_loss"])
        if summary.get("base"):
            out["base_rouge_l"].append(summary["base"]["rouge_l"])
            out["base_eval_loss"].append(summary["base"]["eval_loss"])
        rows = [r for r in read_metrics(run / "metrics.jsonl") if r["round"] > 0]
        out["up"].append(float(np.mean([r["bytes_up_per_client"] for r in rows])))
        out["down"].append(float(np.mean([r["bytes_down_per_client"] for r in rows])))
    return out


def arm_table(arm: Path) -> str:
    """Base vs FedKSeed vs FedKSeed-Pro, then the paired per-seed changes against the base."""
    fed, pro = collect(arm, "fedkseed"), collect(arm, "fedkseed_pro")
    lines = ["| model | Rouge-L | eval loss | bytes up / client / round | bytes down / client / round | seeds |",
             "| --- | --- | --- | --- | --- | --- |",
             f"| base (SmolLM2-135M-Instruct) | {mean_std(fed['base_rouge_l'])} | {mean_std(fed['base_eval_loss'])} "
             f"| – | – | {len(fed['base_rouge_l'])} |"]
    for name, r in (("FedKSeed", fed), ("FedKSeed-Pro", pro)):
        lines.append(f"| {name} | {mean_std(r['rouge_l'])} | {mean_std(r['eval_loss'])} | {np.mean(r['up']):.0f} "
                     f"| {np.mean(r['down']):.0f} | {len(r['rouge_l'])} |")
    lines += ["", "| seed | base loss | FedKSeed loss | Pro loss | base Rouge-L | FedKSeed Rouge-L | Pro Rouge-L |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for i in range(min(len(fed["base_eval_loss"]), len(pro["eval_loss"]))):
        lines.append(f"| {i} | {fed['base_eval_loss'][i]:.4f} | {fed['eval_loss'][i]:.4f} | {pro['eval_loss'][i]:.4f} "
                     f"| {fed['base_rouge_l'][i]:.4f} | {fed['rouge_l'][i]:.4f} | {pro['rouge_l'][i]:.4f} |")
    return "\n".join(lines)


def sweep_table(sweep: Path) -> str:
    """lr, eps, and the held-out eval loss at round 0 (base) and after every round."""
    runs = [(json.loads((run / "config.json").read_text())["flags"], read_metrics(run / "metrics.jsonl"))
            for run in sweep.glob("lr*-eps*") if (run / "summary.json").exists()]
    runs.sort(key=lambda run: (run[0]["lr"], run[0]["zo_eps"]))
    rounds = max((len(rows) for _, rows in runs), default=0)
    head = "| lr | eps | " + " | ".join(f"loss r{i}" for i in range(rounds)) + " | change |"
    lines = [head, "| --- " * (rounds + 3) + "|"]
    for flags, rows in runs:
        losses = [r["eval_loss"] for r in rows]
        cells = " | ".join(f"{v:.4f}" for v in losses)
        lines.append(f"| {flags['lr']:g} | {flags['zo_eps']:g} | {cells} | {losses[-1] - losses[0]:+.4f} |")
    return "\n".join(lines)


def main(study: Path) -> str:
    parts = []
    if (study / "sweep").is_dir():
        parts += ["## lr x eps sweep (Dolly, one client, eval loss)", "", sweep_table(study / "sweep"), ""]
    for name, title in DATASETS.items():
        if (study / name).is_dir():
            parts += [f"## {title}", "", arm_table(study / name), ""]
    return "\n".join(parts)


def write_json(study: Path, out: Path) -> None:
    doc = {name: {"fedkseed": collect(study / name, "fedkseed"), "fedkseed_pro": collect(study / name, "fedkseed_pro")}
           for name in DATASETS if (study / name).is_dir()}
    rerun = study / "dolly" / "rerun-1thread" / "summary.json"
    if rerun.exists():
        final = json.loads(rerun.read_text())["final"]
        doc["dolly"]["rerun_seed0_1thread"] = {"rouge_l": final["rouge_l"], "eval_loss": final["eval_loss"]}
    out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    args = sys.argv[1:]
    study_dir = Path(args[0] if args and not args[0].startswith("--") else "runs/study")
    if "--json" in args:
        write_json(study_dir, Path(args[args.index("--json") + 1]))
    print(main(study_dir))
