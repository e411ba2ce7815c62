"""The paper's Dolly federation in Flower's simulation engine: 200 clients (one virtual SuperNode each), -m 0.05
(10 a round), K = 4096, 200 local steps, on the tiny test model, for a few rounds: time per round, peak memory
of this process (the ServerApp) and of the whole process tree (Ray's workers included), and the measured bytes
per client per round beside the paper's 18 KB.

    python bench/flower_scale.py                       # /work/shared/data Dolly if present, else the sample
    python bench/flower_scale.py --rounds 5 --data PATH
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from common import ROOT

sys.path.insert(0, str(ROOT / "tests"))
import main  # noqa: E402
from conftest import SHARED_DATA, one_thread_call, write_tiny_model  # noqa: E402
from run_records import read_metrics  # noqa: E402


class PeakRss:
    """Peak RSS (MiB) of this process and of this process plus all its descendants, sampled every 0.5 s."""

    def __init__(self):
        self.own = self.tree = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            own = me.memory_info().rss
            total = own
            for child in me.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:
                    pass
            self.own, self.tree = max(self.own, own / 2**20), max(self.tree, total / 2**20)
            self._stop.wait(0.5)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def main_() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    full = SHARED_DATA / "databricks-dolly-15k.jsonl"
    p.add_argument("--data", default=str(full if full.exists() else ROOT / "data/databricks-dolly-15k-sample.jsonl"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("-m", type=float, default=0.05)
    p.add_argument("-K", type=int, default=4096)
    p.add_argument("--local-step", type=int, default=200)
    opts = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fedkseed-scale-"))
    model = write_tiny_model(work / "model")
    argv = ["--model", str(model), "--dataset", "dolly", "--data_path", opts.data, "--num_clients",
            str(opts.clients), "-m", str(opts.m), "-K", str(opts.K), "--rounds", str(opts.rounds), "--local_step",
            str(opts.local_step), "--max_length", "256", "--eval_every", "0", "--eval_examples", "8",
            "--eval_metric", "loss", "--quiet", "--no_compile", "--engine", "flower", "--output_dir",
            str(work / "run")]
    os.environ.setdefault("FEDKSEED_COMPILE", "0")
    start = time.perf_counter()
    try:
        with PeakRss() as rss:
            result = one_thread_call(main.train, argv)
        wall = time.perf_counter() - start
        rows = read_metrics(work / "run" / "metrics.jsonl")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    comm = result["summary"]["communication"]
    print(f"{Path(opts.data).name}: {opts.clients} clients (one virtual SuperNode each), -m {opts.m}, K = {opts.K}, "
          f"{opts.local_step} local steps, tiny model; {os.cpu_count()} CPUs")
    print("round | clients | seconds | bytes down/client | bytes up/client")
    for r in rows:
        print(f"{r['round']:>5} | {len(r['clients']):>7} | {r['seconds']:>7.1f} | "
              f"{r['bytes_down_per_client']:>17.0f} | {r['bytes_up_per_client']:>15.0f}")
    print(f"wall time {wall:.0f} s (Ray start-up and data loading included); peak RSS: this process (ServerApp) "
          f"{rss.own:.0f} MiB, process tree (with Ray's workers) {rss.tree:.0f} MiB")
    print(f"per client per round: {comm['bytes_total_per_client_round']:.0f} B "
          f"({comm['bytes_down_per_client_round']:.0f} down + {comm['bytes_up_per_client_round']:.0f} up; max "
          f"{comm['bytes_down_max']} down, {comm['bytes_up_max']} up) against the paper's "
          f"{comm['paper_bound_bytes']} B")
    print(json.dumps({"rows": [{k: r[k] for k in ("round", "seconds", "bytes_down_per_client",
                                                  "bytes_up_per_client")} for r in rows],
                      "wall": wall, "rss_own_mib": rss.own, "rss_tree_mib": rss.tree, "communication": comm}))


if __name__ == "__main__":
    main_()
