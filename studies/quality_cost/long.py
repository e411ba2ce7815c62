"""The longer horizon of the quality-against-cost study: FedKSeed, FedIT and Ferret to 50 rounds (10,000 local
steps) on seed 0 of both datasets, OUT/long/<dataset>/<method>-lr<lr>-s0, each run evaluating its own base model.
FedIT and Ferret are shown by their 10-round seed-0 runs until their own long runs begin.

The target is the 10-round study's, on the same seed: the eval loss halfway from the base to FedIT's seed-0 loss
after 10 rounds. Runs still going are reported as far as they have got.
"""
from __future__ import annotations

from pathlib import Path

from run_records import read_metrics
from studies.quality_cost.plots import loss_curves
from studies.quality_cost.report import (
    DATASETS,
    METHODS,
    RUN_NAME,
    choose,
    human,
    run_numbers,
    runs,
    sweep_runs,
    trajectory,
)

CHECKPOINTS = (10, 20, 30, 40, 50)  # the rounds a row reports (Rouge-L is evaluated every 10)
READ_AGAINST = ("fedit", "ferret")  # what FedKSeed's long runs are read against, in their tables and curves


def long_runs(out: Path, dataset: str) -> dict[str, Path]:
    """Each method's long run on the dataset (finished or not), by method name."""
    found = {}
    for path in sorted((out / "long" / dataset).glob("*-lr*-s0")):
        m = RUN_NAME.match(path.name)
        if m and (path / "metrics.jsonl").exists():
            found[m["method"]] = path
    return found


def stand_ins(out: Path, dataset: str, found: dict[str, Path]) -> dict[str, Path]:
    """The finished 10-round seed-0 run of each method FedKSeed is read against that has no long run on the
    dataset yet: its curve and target round stand beside the long runs until its own long run exists."""
    shown = {}
    for method in READ_AGAINST:
        run = None if method in found or not sweep_runs(out, method) else seed0_run(out, dataset, method)
        if run is not None:
            shown[method] = run
    return shown


def seed0_run(out: Path, dataset: str, method: str) -> Path | None:
    """The method's finished seed-0 run of the 10-round study at its chosen lr (None before it exists)."""
    seed0 = [r for r in runs(out, dataset, method, choose(out, method)) if r.name.endswith("-s0")]
    return seed0[0] if seed0 else None


def seed0_target(out: Path, dataset: str) -> float | None:
    """Half of FedIT's seed-0 10-round improvement, from the 10-round study's run (None before it exists)."""
    fedit = seed0_run(out, dataset, "fedit")
    if fedit is None:
        return None
    n = run_numbers(fedit)
    return n["base_loss"] - 0.5 * (n["base_loss"] - n["loss"])


def long_numbers(run: Path, target: float | None) -> dict:
    """A long run's eval loss at each checkpoint round, its first round at or below the target, and each Rouge-L
    evaluation's score, share of empty answers and mean P(EOS first)."""
    rows = read_metrics(run / "metrics.jsonl")
    t = trajectory(run)  # round 0 from the base model's evaluation when a continued 10-round run has none
    losses = dict(zip(t["round"].tolist(), t["loss"].tolist(), strict=True))
    reached = [k for k, v in sorted(losses.items()) if target is not None and v <= target]
    answers = {r["round"]: {key: r.get(key) for key in ("rouge_l", "empty_answers", "first_eos_prob")}
               for r in rows if "rouge_l" in r}
    return {"rounds": max(losses), "finished": (run / "summary.json").exists(), "loss": losses,
            "target_round": reached[0] if reached else None, "answers": answers}


def long_report(out: Path, dataset: str, plots: Path | None = None) -> tuple[list[str], dict]:
    """The dataset's long-horizon tables (markdown lines), its numbers, and its curves when `plots` is given."""
    long = long_runs(out, dataset)
    if not long:
        return [], {}
    found = {**long, **stand_ins(out, dataset, long)}
    target = seed0_target(out, dataset)
    numbers = {method: {**long_numbers(run, target), "long": method in long} for method, run in found.items()}
    lines = [f"Target: eval loss {target:.4f} (seed 0)." if target is not None else "(no FedIT seed-0 run: no "
             "target)", "", "| method | rounds run | " + " | ".join(f"loss @ {k}" for k in (0, *CHECKPOINTS))
             + " | reaches the target at | bytes to it |",
             "| --- | --- | " + " | ".join("---" for _ in (0, *CHECKPOINTS)) + " | --- | --- |"]
    for method, n in numbers.items():
        t = trajectory(found[method])
        at = n["target_round"]
        spent = human(float(t["bytes"][list(t["round"]).index(at)])) if at is not None else "–"
        cells = [f"{n['loss'][k]:.4f}" if k in n["loss"] else "" for k in (0, *CHECKPOINTS)]
        state = " (its 10-round run)" if not n["long"] else "" if n["finished"] else " (running)"
        lines.append(f"| {METHODS[method]} | {n['rounds']}{state} | "
                     f"{' | '.join(cells)} | {at if at is not None else 'not yet'} | {spent} |")
    lines += ["", "| method | round | Rouge-L | empty answers | P(EOS first) |", "| --- | --- | --- | --- | --- |"]
    for method, n in numbers.items():
        for k, a in sorted(n["answers"].items()):
            cells = [f"{a[key]:.4f}" if a[key] is not None else "–" for key in ("rouge_l", "empty_answers",
                                                                               "first_eos_prob")]
            lines.append(f"| {METHODS[method]} | {k} | {' | '.join(cells)} |")
    if plots is not None:
        curves = {method: [trajectory(run)] for method, run in found.items()}
        labels = {method: f"{METHODS[method]} ({run.name}{'' if method in long else ', 10 rounds'})"
                  for method, run in found.items()}
        paths = loss_curves(curves, labels, f"{DATASETS[dataset]}, seed 0, 50 rounds",
                            plots / f"quality_cost_long_{dataset}")
        lines += ["", *(f"![{p.stem}]({p.name})" for p in paths)]
    return lines, {"target_loss": target, "runs": numbers}
