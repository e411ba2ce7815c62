"""At the paper's scale: the peak memory of each method's whole run against inference, on models of the paper's
shapes with random weights (scripts/make_model.py; neither time nor memory depends on the weights' values).

    python bench/scale.py --shape llama-1.3b --dtype float32 bfloat16
    python bench/scale.py --shape smollm2-135m --methods fedkseed fedkseed-replay fedavg --steps 2

For each shape and dtype, each figure from its own process: the weights' bytes; inference (load the model, one
forward of --seq tokens: what a user needs to run the model at all); and each method's `main.py` run of one round,
one client, --steps local steps, its final evaluation on 2 records. Peak memory is the child's peak resident set
(wait4's ru_maxrss); for Flower's simulation engine (the server and one SuperNode, each catch-up mode, 2 rounds)
the largest summed resident set of its processes, polled every 0.1 s. A run main.py refuses (one that cannot fit
the machine: modeling.check_fits, before loading) is reported with its error line; a guard polls every child's
resident set and kills it above --limit_gb, or when the machine's available memory falls below 1.5 GiB (whatever
grows meanwhile), reported as "does not fit", so that the machine's OOM killer never has to act. --time
adds the time figures (see timings; run them on a quiet machine).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT

from modeling import memory_info, weight_bytes
from scripts.make_model import SHAPES, make_model

DATA = ROOT / "data" / "databricks-dolly-15k-sample.jsonl"
# the guard kills its child when the machine's available memory falls below this: room for its 0.1 s polling to act
# before the kernel's OOM killer does
RESERVE = int(1.5 * 2**30)
# flags of each method's run: one round, one client, K 64 where it applies
METHODS = {
    "fedkseed": ["--method", "fedkseed", "-K", "64", "--lr", "1e-6", "--zo_eps", "1e-3"],
    "fedkseed-replay": ["--method", "fedkseed", "-K", "64", "--lr", "1e-6", "--zo_eps", "1e-3",
                        "--client_sync", "replay"],
    "fedkseed-lora": ["--method", "fedkseed", "-K", "64", "--lr", "1e-4", "--zo_eps", "1e-3", "--peft", "lora"],
    "fedit": ["--method", "fedit", "--lr", "1e-4"],
    "fedavg": ["--method", "fedavg", "--lr", "1e-6"],
    "ferret": ["--method", "ferret", "-K", "64", "--lr", "1e-4"],
    # Flower's simulation engine, the server and one SuperNode (a Ray actor), 2 rounds so that the node catches up
    "flower-exact": ["--method", "fedkseed", "-K", "64", "--lr", "1e-6", "--zo_eps", "1e-3", "--engine", "flower",
                     "--flower_nodes", "1", "--flower_catchup", "exact", "--rounds", "2"],
    "flower-summed": ["--method", "fedkseed", "-K", "64", "--lr", "1e-6", "--zo_eps", "1e-3", "--engine", "flower",
                      "--flower_nodes", "1", "--flower_catchup", "summed", "--rounds", "2"],
}
TREE = ("flower-exact", "flower-summed")  # several processes: their summed resident set, polled, is the figure
INFERENCE = """
import sys, torch
from modeling import load_model
model = load_model(sys.argv[1], sys.argv[2])
with torch.inference_mode():
    model(input_ids=torch.randint(0, model.config.vocab_size, (1, int(sys.argv[3]))))
"""


def model_folder(shape: str, dtype: str, models: Path) -> Path:
    """The shape's folder in `models`, made once (random weights in dtype)."""
    folder = models / f"{shape}-{dtype}"
    if not (folder / "config.json").exists():
        make_model(shape, folder, dtype)
    return folder


def resident(pid: int) -> int:
    """The resident set of a process and all its descendants, in bytes (0 once it is gone)."""
    total = 0
    for task in [pid, *descendants(pid)]:
        try:
            for line in Path(f"/proc/{task}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def descendants(pid: int) -> list[int]:
    """Every process below pid (Flower's simulation starts Ray, whose workers are the Ray daemons' children)."""
    try:
        children = [int(c) for t in os.listdir(f"/proc/{pid}/task")
                    for c in Path(f"/proc/{pid}/task/{t}/children").read_text().split()]
    except OSError:
        return []
    return [*children, *(d for c in children for d in descendants(c))]


def guarded(cmd: list[str], limit: int) -> dict:
    """Run cmd; {"peak": bytes, "seconds", "stdout"}, {"killed": the resident set that passed the limit, or that it
    had when the machine ran low} or {"refused": its last error line}."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed: list[int] = []
    tree = [0]  # the largest resident set of the process and its children seen by the polls

    def watch() -> None:
        while proc.poll() is None:
            rss, available = resident(proc.pid), memory_info("MemAvailable")
            tree[0] = max(tree[0], rss)
            if rss > limit or (available is not None and available < RESERVE):
                killed.append(rss)
                proc.kill()
                return
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stdout = proc.stdout.read()  # before waiting: a full pipe would block the child
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    watcher.join()
    if killed:
        return {"killed": killed[0]}
    if proc.returncode < 0:  # killed by a signal it did not send itself: the kernel's OOM killer, most likely
        return {"killed": tree[0], "signal": -proc.returncode}
    if proc.returncode != 0:  # a refused configuration (one error line), or a failure to report
        return {"refused": (proc.stderr.read().strip().splitlines() or [f"exit status {proc.returncode}"])[-1]}
    return {"peak": usage.ru_maxrss * 1024, "tree": tree[0], "seconds": time.perf_counter() - start,
            "stdout": stdout}


def method_run(folder: Path, dtype: str, method: str, steps: int, seq: int, out: Path) -> list[str]:
    return [sys.executable, "main.py", "--model", str(folder), "--dtype", dtype, "--dataset", "dolly",
            "--data_path", str(DATA), "--num_clients", "1", "-m", "1", "--rounds", "1", "--local_step", str(steps),
            "--max_length", str(seq), "--eval_examples", "2", "--eval_metric", "loss", "--no_eval_base",
            "--quiet", "--save", "--output_dir", str(out), *METHODS[method]]


def measure(shape: str, dtype: str, args: argparse.Namespace, scratch: Path) -> dict:
    folder = model_folder(shape, dtype, args.models)
    weights, limit = weight_bytes(str(folder), dtype), int(args.limit_gb * 2**30)
    row = {"shape": shape, "dtype": dtype, "weights": weights,
           "inference": guarded([sys.executable, "-c", INFERENCE, str(folder), dtype, str(args.seq)], limit)}
    for method in args.methods:
        row[method] = guarded(method_run(folder, dtype, method, args.steps, args.seq, scratch / method), limit)
        if method in TREE and "tree" in row[method]:
            row[method]["peak"] = row[method]["tree"]
    return row


def timings(folder: Path, dtype: str, run: Path, limit: int) -> list[str]:
    """The time figures, each from its own process: forward and step / (2 x forward) at seq 256 and 512
    (bench/step_cost.py: the project's Gaussian and Rademacher steps, the authors' style beside them), the server's
    replay of K = 4096 nonzero Delta c (bench/replay_cost.py: 64 seeds timed, scaled; Pro's extras), a deployed
    SuperNode's train message after 1 and 10 rounds under each catch-up mode (bench/node_message_time.py), and
    FedKSeed's checkpoint: its size, and the export that restores the model from it."""
    model = ["--model_dir", str(folder), "--dtype", dtype]
    children = {f"step, seq {seq}": ["bench/step_cost.py", *model, "--skip-smollm2", "--seq", str(seq),
                                     "--run-steps", "2", "--repeats", "2"] for seq in (256, 512)}
    children["server replay"] = ["bench/replay_cost.py", *model, "-K", "4096", "--project-seeds", "64",
                                 "--naive-seeds", "1", "--repeats", "1"]
    children["a deployed SuperNode's train message"] = ["bench/node_message_time.py", "--model", str(folder),
                                                        "--dtype", dtype, "--rounds", "1,10"]
    lines = []
    for name, cmd in children.items():
        result = guarded([sys.executable, *cmd], limit)
        head = f"-- {name}:" if "peak" in result else f"-- {name}: {cell(result, 1)}"
        lines += [head, *result.get("stdout", "").strip().splitlines()]
    if (run / "checkpoint.json").exists():
        export = guarded([sys.executable, "main.py", "export", str(run), str(run.parent / "exported")], limit)
        lines.append(f"-- FedKSeed's checkpoint: {(run / 'checkpoint.json').stat().st_size:,} bytes; export "
                     f"(theta0 loaded, the rounds replayed, the model saved): "
                     + (f"{export['seconds']:.1f} s" if "seconds" in export else cell(export, 1)))
    return lines


def cell(result: dict, inference: int) -> str:
    if "killed" in result:
        by = f", killed by signal {result['signal']}" if "signal" in result else ""
        return f"does not fit (passed {result['killed'] / 2**30:.1f} GiB{by})"
    if "refused" in result:  # main.py's one line: a configuration it refuses, e.g. one that cannot fit
        return "refused: " + result["refused"].removeprefix("error: ")
    return f"{result['peak'] / 2**30:.2f} GiB ({result['peak'] / inference:.2f}x)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", nargs="+", default=["llama-1.3b"], choices=SHAPES)
    parser.add_argument("--dtype", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--steps", type=int, default=2, help="local steps of each method's run")
    parser.add_argument("--seq", type=int, default=256, help="tokens of the inference forward; --max_length of runs")
    parser.add_argument("--limit_gb", type=float, default=22.0, help="the guard: a child above this is killed")
    parser.add_argument("--models", type=Path, default=ROOT / "models", help="where model folders are made")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--time", action="store_true", help="also the time figures (timings: run on a quiet machine)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for shape in args.shape:
            for dtype in args.dtype:
                rows.append(measure(shape, dtype, args, Path(scratch) / f"{shape}-{dtype}"))
                row = rows[-1]
                inference = row["inference"]["peak"]
                print(f"{shape} {dtype}: weights {row['weights'] / 2**30:.2f} GiB, inference "
                      f"{inference / 2**30:.2f} GiB; " + "; ".join(f"{m} {cell(row[m], inference)}"
                                                              for m in args.methods), flush=True)
                if args.time:
                    run = Path(scratch) / f"{shape}-{dtype}" / "fedkseed"
                    row["time"] = timings(model_folder(shape, dtype, args.models), dtype, run,
                                          int(args.limit_gb * 2**30))
                    print("\n".join(row["time"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"\npeak resident memory of each process (x inference), {os.cpu_count()} CPUs; guard {args.limit_gb} GiB")
    print("| shape | dtype | weights | inference | " + " | ".join(args.methods) + " |")
    print("| --- " * (4 + len(args.methods)) + "|")
    for row in rows:
        inference = row["inference"]["peak"]
        print(f"| {row['shape']} | {row['dtype']} | {row['weights'] / 2**30:.2f} GiB | {inference / 2**30:.2f} GiB | "
              + " | ".join(cell(row[m], inference) for m in args.methods) + " |")


if __name__ == "__main__":
    main()
