"""The study's table: mean +- std over seeds of held-out Rouge-L and eval loss, and bytes per client.

    python scripts/summarize_study.py runs/study [--json docs/study_results.json]

--json also writes every seed's numbers (what tests/test_study_small.py checks a rerun against).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from run_files import read_metrics  # noqa: E402


def mean_std(values: list[float]) -> str:
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.4f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.4f}"


def collect(study: Path, method: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"rouge_l": [], "eval_loss": [], "up": [], "down": [],
                                   "base_rouge_l": [], "base_eval_loss": []}
    for run in sorted(study.glob(f"{method}-s*")):
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


def main(study: Path) -> str:
    fed, pro = collect(study, "fedkseed"), collect(study, "fedkseed_pro")
    lines = ["| model | Rouge-L | eval loss | bytes up / client / round | bytes down / client / round | seeds |",
             "| --- | --- | --- | --- | --- | --- |",
             f"| base (SmolLM2-135M-Instruct) | {mean_std(fed['base_rouge_l'])} | {mean_std(fed['base_eval_loss'])} "
             f"| – | – | {len(fed['base_rouge_l'])} |"]
    for name, r in (("FedKSeed", fed), ("FedKSeed-Pro", pro)):
        lines.append(f"| {name} | {mean_std(r['rouge_l'])} | {mean_std(r['eval_loss'])} | {np.mean(r['up']):.0f} "
                     f"| {np.mean(r['down']):.0f} | {len(r['rouge_l'])} |")
    return "\n".join(lines)


def write_json(study: Path, out: Path) -> None:
    doc = {"fedkseed": collect(study, "fedkseed"), "fedkseed_pro": collect(study, "fedkseed_pro")}
    out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    args = sys.argv[1:]
    study_dir = Path(args[0] if args and not args[0].startswith("--") else "runs/study")
    if "--json" in args:
        write_json(study_dir, Path(args[args.index("--json") + 1]))
    print(main(study_dir))
