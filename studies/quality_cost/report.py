"""The quality-against-cost study's numbers (studies/quality_cost/run.sh), from its run directories.

    python studies/quality_cost/report.py choose [OUT] --method M   # the lr of M's sweep with the lowest final val loss
    python studies/quality_cost/report.py report [OUT] [--json F] [--plots DIR]   # markdown tables (stdout), plots

OUT defaults to the committed runs, studies/quality_cost/results.

Runs are OUT/<dataset>/<method>-lr<lr>-s<seed>. The base model is evaluated once per dataset and seed, at round 0
of one of its runs (the evaluation records are the same for every method of a seed). Costs are per run: bytes up +
down summed over the round's clients, client forward-equivalents (a zeroth-order step 2, a first-order step 3,
plus Ferret's measured catch-up and projection) summed likewise.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a file
from run_records import read_metrics  # noqa: E402
from studies.quality_cost.plots import loss_curves  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

METHODS = {"fedkseed": "FedKSeed", "fedkseed_pro": "FedKSeed-Pro", "fedkseed_lora": "FedKSeed + LoRA",
           "fedit": "FedIT (LoRA, AdamW)", "fedavg": "FedAvg (full, AdamW)", "ferret": "Ferret (full, SGD)"}
DATASETS = {"dolly": "Dolly-15K (summarization held out)", "instruct": "Natural Instructions (test tasks)"}
RUN_NAME = re.compile(r"(?P<method>[a-z_]+)-lr(?P<lr>[0-9.e+-]+)-s(?P<seed>\d+)$")


class ReportError(Exception):
    pass


def runs(out: Path, dataset: str, method: str, lr: str | None = None) -> list[Path]:
    """The finished runs of a method (at one lr when given), by seed."""
    found = []
    for path in sorted((out / dataset).glob(f"{method}-lr*-s*")):
        m = RUN_NAME.match(path.name)
        if m and m["method"] == method and (lr is None or m["lr"] == lr) and (path / "summary.json").exists():
            found.append(path)
    return sorted(found, key=lambda p: int(RUN_NAME.match(p.name)["seed"]))


def final_val_loss(run: Path) -> float | None:
    """The run's last validation loss; None for a run outside the sweep, which measures none."""
    losses = [r["val_loss"] for r in read_metrics(run / "metrics.jsonl") if "val_loss" in r]
    return losses[-1] if losses else None


def sweep_runs(out: Path, method: str) -> list[Path]:
    """The method's finished runs of the lr sweep: Dolly, seed 0, with a validation loss."""
    return [p for p in runs(out, "dolly", method)
            if RUN_NAME.match(p.name)["seed"] == "0" and final_val_loss(p) is not None]


def choose(out: Path, method: str) -> str:
    """The lr whose seed-0 Dolly run ends with the lowest validation loss."""
    swept = sweep_runs(out, method)
    if not swept:
        raise ReportError(f"no finished seed-0 Dolly run of {method} under {out}: run the sweep first")
    return RUN_NAME.match(min(swept, key=final_val_loss).name)["lr"]


def base_eval(run: Path) -> dict:
    """The base model's evaluation for the run's dataset and seed: round 0 of whichever run of that seed evaluated
    it (the study evaluates the base model once per seed; every method starts from it, LoRA's B at zero)."""
    seed = RUN_NAME.match(run.name)["seed"]
    for other in sorted(run.parent.glob(f"*-s{seed}")):
        rows = read_metrics(other / "metrics.jsonl") if (other / "metrics.jsonl").exists() else []
        if rows and rows[0]["round"] == 0 and RUN_NAME.match(other.name)["seed"] == seed:
            return rows[0]
    raise ReportError(f"no evaluation of the base model for seed {seed} under {run.parent}")


def trajectory(run: Path) -> dict[str, np.ndarray]:
    """Per evaluated round: round, eval loss, cumulative bytes and forward-equivalents of all the run's clients."""
    rows = read_metrics(run / "metrics.jsonl")
    if rows[0]["round"] != 0:
        rows = [base_eval(run), *rows]
    bytes_, fe, points = 0.0, 0.0, []
    for r in rows:
        if r["round"] > 0:
            n = len(r["clients"])
            bytes_ += n * (r["bytes_up_per_client"] + r["bytes_down_per_client"])
            fe += n * (r["forward_equivalents_per_client"] + r.get("overhead_forward_equivalents_per_client", 0.0))
        if "eval_loss" in r:
            points.append((r["round"], r["eval_loss"], bytes_, fe))
    return dict(zip(("round", "loss", "bytes", "fe"), (np.array(c) for c in zip(*points, strict=True)), strict=True))


def trajectories(out: Path, dataset: str, method: str, lr: str) -> list[dict[str, np.ndarray]]:
    """The trajectory of each seed's run of method at lr."""
    return [trajectory(run) for run in runs(out, dataset, method, lr)]


def run_numbers(run: Path) -> dict:
    """One run's final and base numbers and its costs."""
    summary = json.loads((run / "summary.json").read_text())
    rows = [r for r in read_metrics(run / "metrics.jsonl") if r["round"] > 0]
    t = trajectory(run)
    return {"seed": int(RUN_NAME.match(run.name)["seed"]), "lr": RUN_NAME.match(run.name)["lr"],
            "loss": summary["final"]["eval_loss"], "rouge_l": summary["final"].get("rouge_l"),
            "base_loss": base_eval(run)["eval_loss"], "base_rouge_l": base_eval(run).get("rouge_l"),
            "up": float(np.mean([r["bytes_up_per_client"] for r in rows])),
            "down": float(np.mean([r["bytes_down_per_client"] for r in rows])),
            "total_bytes": float(t["bytes"][-1]), "forward_equivalents": float(t["fe"][-1]),
            "client_seconds": float(np.mean([r["client_seconds"] for r in rows])),
            "peak_memory_bytes": int(max(r["peak_memory_bytes"] for r in rows)),
            "val_loss": final_val_loss(run), "commit": json.loads((run / "config.json").read_text())["git_revision"]}


def pm(values: list[float], digits: int = 4) -> str:
    """mean ± sample std; one seed has no spread to show (a "± 0" would read as a measured one)."""
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.{digits}f} ± {a.std(ddof=1):.{digits}f}" if len(a) > 1 else f"{a[0]:.{digits}f}"


def human(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def dataset_numbers(out: Path, dataset: str) -> dict[str, list[dict]]:
    numbers = {}
    for method in METHODS:
        try:
            lr = choose(out, method)
        except ReportError:
            continue
        found = [run_numbers(r) for r in runs(out, dataset, method, lr)]
        if found:
            numbers[method] = found
    return numbers


def table(numbers: dict[str, list[dict]]) -> list[str]:
    lines = ["| method | lr | eval loss | Δ loss vs base | Rouge-L | Δ Rouge-L vs base | up / client / round "
             "| down / client / round | total bytes | client forward-eq. | client s / round | peak memory | seeds |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    base = next(iter(numbers.values()))
    lines.append(f"| base (round 0) | – | {pm([n['base_loss'] for n in base])} | – "
                 f"| {pm([n['base_rouge_l'] for n in base])} | – | – | – | – | – | – | – | {len(base)} |")
    for method, ns in numbers.items():
        d_loss = [n["loss"] - n["base_loss"] for n in ns]
        d_rouge = [n["rouge_l"] - n["base_rouge_l"] for n in ns]
        lines.append(
            f"| {METHODS[method]} | {ns[0]['lr']} | {pm([n['loss'] for n in ns])} | {pm(d_loss)} "
            f"| {pm([n['rouge_l'] for n in ns])} | {pm(d_rouge)} | {human(np.mean([n['up'] for n in ns]))} "
            f"| {human(np.mean([n['down'] for n in ns]))} | {human(np.mean([n['total_bytes'] for n in ns]))} "
            f"| {np.mean([n['forward_equivalents'] for n in ns]):.0f} "
            f"| {np.mean([n['client_seconds'] for n in ns]):.0f} "
            f"| {np.mean([n['peak_memory_bytes'] for n in ns]) / 2**20:.0f} MiB | {len(ns)} |")
    return lines


def paired_to(numbers: dict[str, list[dict]], reference: str = "fedkseed") -> tuple[list[str], dict]:
    """Each method minus the reference on the seeds both ran (same clients, sampling and records): final eval loss
    and Rouge-L, mean ± std over seeds, and the two-sided paired t-test's p (none from one seed)."""
    from scipy.stats import ttest_1samp  # here, not above: `choose`, which run.sh calls often, stays fast

    if reference not in numbers:
        return [f"(no {METHODS[reference]} runs yet: nothing to pair with)"], {}
    ref = {n["seed"]: n for n in numbers[reference]}
    lines = [f"| method − {METHODS[reference]} | Δ eval loss | p | Δ Rouge-L | p | seeds |",
             "| --- | --- | --- | --- | --- | --- |"]
    found = {}
    for method, ns in numbers.items():
        pairs = [(n, ref[n["seed"]]) for n in ns if n["seed"] in ref]
        if method == reference or not pairs:
            continue
        cells, found[method] = [], {"seeds": [n["seed"] for n, _ in pairs]}
        for key in ("loss", "rouge_l"):
            differences = [n[key] - r[key] for n, r in pairs]
            # the paired t-test is the one-sample test of the differences; none from one seed or without spread
            p = float(ttest_1samp(differences, 0.0).pvalue) if len(pairs) > 1 else float("nan")
            p = None if np.isnan(p) else p
            cells += [pm(differences), "–" if p is None else f"{p:.3f}"]
            found[method][key] = {"differences": differences, "p": p}
        lines.append(f"| {METHODS[method]} | {' | '.join(cells)} | {len(pairs)} |")
    return lines, found


def cost_to_target(out: Path, dataset: str, numbers: dict[str, list[dict]]) -> tuple[list[str], dict]:
    """What each method spent (mean over seeds) to first reach half of FedIT's final loss improvement, and whether
    it ended the run above that loss again (a diverging run reaches the target on its way through)."""
    if "fedit" not in numbers:
        return ["(no FedIT runs yet: no target)"], {}
    fedit = numbers["fedit"]
    base = float(np.mean([n["base_loss"] for n in fedit]))
    target = base - 0.5 * (base - float(np.mean([n["loss"] for n in fedit])))
    lines = [f"Target: eval loss {target:.4f} (base {base:.4f}, half of FedIT's mean improvement).", ""]
    found = {}
    for method, ns in numbers.items():
        trajs = trajectories(out, dataset, method, ns[0]["lr"])
        mean_loss = np.mean([t["loss"] for t in trajs], axis=0)
        hit = np.flatnonzero(mean_loss <= target)
        if len(hit) == 0:
            lines.append(f"- {METHODS[method]}: not reached in {int(trajs[0]['round'][-1])} rounds "
                         f"(best mean loss {mean_loss.min():.4f})")
            found[method] = None
            continue
        i = hit[0]
        b, fe = float(np.mean([t["bytes"][i] for t in trajs])), float(np.mean([t["fe"][i] for t in trajs]))
        final = float(mean_loss[-1])
        left = f"; left it afterwards, final mean loss {final:.4f}" if final > target else ""
        lines.append(f"- {METHODS[method]}: round {int(trajs[0]['round'][i])}, {human(b)}, "
                     f"{fe:.0f} forward-equivalents{left}")
        found[method] = {"round": int(trajs[0]["round"][i]), "bytes": b, "forward_equivalents": fe,
                         "final_loss": final, "ended_above_target": final > target}
    return lines, {"target_loss": target, "methods": found}


def plot(out: Path, dataset: str, numbers: dict[str, list[dict]], folder: Path) -> list[Path]:
    """The dataset's three loss curves (plots.py), each method at its chosen lr, over its seeds."""
    curves = {method: trajectories(out, dataset, method, ns[0]["lr"]) for method, ns in numbers.items()}
    labels = {method: f"{METHODS[method]} (lr {ns[0]['lr']})" for method, ns in numbers.items()}
    return loss_curves(curves, labels, DATASETS[dataset], folder / f"quality_cost_{dataset}")


def sweep_table(out: Path) -> list[str]:
    lines = ["| method | lr | final val loss | final eval loss | chosen |", "| --- | --- | --- | --- | --- |"]
    for method in METHODS:
        swept = sweep_runs(out, method)
        if not swept:
            continue
        best = choose(out, method)
        for run in sorted(swept, key=lambda p: float(RUN_NAME.match(p.name)["lr"])):
            lr = RUN_NAME.match(run.name)["lr"]
            final = json.loads((run / "summary.json").read_text())["final"]["eval_loss"]
            lines.append(f"| {METHODS[method]} | {lr} | {final_val_loss(run):.4f} | {final:.4f} "
                         f"| {'yes' if lr == best else ''} |")
    return lines


def rerun_record(out: Path) -> dict | None:
    """FedKSeed's seed-0 Dolly eval loss at rounds 0-2 (the chosen lr; round 0 from whichever run evaluated the
    base model) and the same rounds rerun in one thread."""
    rerun = out / "rerun-1thread" / "metrics.jsonl"
    if not rerun.exists():
        return None
    lr = choose(out, "fedkseed")

    def losses(rows: list[dict]) -> dict[str, float]:
        return {str(r["round"]): r["eval_loss"] for r in rows if r["round"] <= 2 and "eval_loss" in r}

    run = out / "dolly" / f"fedkseed-lr{lr}-s0"
    return {"lr": lr, "recorded": losses([base_eval(run), *read_metrics(run / "metrics.jsonl")]),
            "rerun_1thread": losses(read_metrics(rerun))}


def report(out: Path, json_path: Path | None, plots: Path | None) -> str:
    lines, doc = ["## Learning-rate sweep (Dolly, seed 0, validation loss)", "", *sweep_table(out)], {}
    for dataset, title in DATASETS.items():
        numbers = dataset_numbers(out, dataset)
        if not numbers:
            continue
        target_lines, target = cost_to_target(out, dataset, numbers)
        paired_lines, paired = paired_to(numbers)
        lines += ["", f"## {title}", "", *table(numbers), "", "Paired differences:", "", *paired_lines, "",
                  "Cost to target:", "", *target_lines]
        doc[dataset] = {"runs": numbers, "paired_to_fedkseed": paired, "cost_to_target": target}
        if plots is not None:
            lines += ["", *(f"![{p.stem}]({p.name})" for p in plot(out, dataset, numbers, plots))]
    from studies.quality_cost.long import long_report  # it builds on this module's functions

    for dataset, title in DATASETS.items():
        long_lines, doc[f"long_{dataset}"] = long_report(out, dataset, plots)
        if long_lines:
            lines += ["", f"## {title}: 50 rounds, seed 0", "", *long_lines]
    doc["rerun"] = rerun_record(out)
    if json_path is not None:
        json_path.write_text(json.dumps(doc, indent=2) + "\n")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["choose", "report"])
    p.add_argument("out", type=Path, nargs="?", default=RESULTS)
    p.add_argument("--method", choices=list(METHODS))
    p.add_argument("--json", type=Path)
    p.add_argument("--plots", type=Path)
    args = p.parse_args(argv)
    try:
        if args.command == "choose":
            if args.method is None:
                raise ReportError("choose needs --method")
            print(choose(args.out, args.method))
        else:
            print(report(args.out, args.json, args.plots))
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
