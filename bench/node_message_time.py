"""A deployed SuperNode's time per train message after R rounds of history: before (no state file: the fresh
ClientApp process replays every round from theta0) and after (it starts from the node's state file, written
when it last synced, round R - 1, and replays round R only), both with exact catch-up; and with summed catch-up
(--flower_catchup summed: the fresh process loads theta0 and moves it to the server's c in one replay of every
nonzero coefficient; it keeps no state file).

    python bench/node_message_time.py                            # SmolLM2-135M-Instruct, R = 1, 10, 40
    python bench/node_message_time.py --model PATH --rounds 1,5 --seeds-per-round 4

Simulated in this process, not on a SuperLink: the ClientApp's train handler (flower_app.node.handle_train) is
called with a Flower-like context after clearing the module-level model cache, which is what a fresh ClientApp
process starts with (Python, torch and transformers imports and the native kernel build are not timed). The
history is synthetic: R rounds of Delta c with --seeds-per-round distinct seeds each (a real round touches
about clients x local steps seeds, so a real replay from round 0 costs proportionally more). Every message
trains --local-step steps. Both replies are checked to be identical bit for bit.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import ROOT  # noqa: E402
from flwr.app import RecordDict  # noqa: E402

import config  # noqa: E402
from client import LocalTraining  # noqa: E402
from flower_app import fedkseed_messages, node, node_runtime
from flower_app.node_store import NodeStore, state_key  # noqa: E402
from flower_app.run_file import write_run_file  # noqa: E402
from optimizers.seed_pool import SeededModel  # noqa: E402


def run_args(opts: argparse.Namespace, out: Path) -> config.RunConfig:
    argv = ["--model", opts.model, "--dtype", opts.dtype, "--dataset", "dolly", "--data_path", str(ROOT / opts.data),
            "-K", str(opts.K), "--num_clients", "2", "--local_step", str(opts.local_step), "--max_length", "128",
            "--lr", "3e-7", "--output_dir", str(out)]
    return config.validate(config.build_parser().parse_args(argv))


def message(args, run_file: Path, state_dir: str, history, cs: list[np.ndarray], base: int,
            catchup_mode: str = "exact") -> tuple[dict, float, float]:
    """One train message for round len(history) + 1 in a 'fresh process': (reply, seconds, catch-up seconds).
    cs[r] is the global c after round r; a summed node last synced at `base` holds cs[base] and is sent c where it
    changed since."""
    node_runtime._RUNTIMES.clear()
    state = RecordDict()
    k, r = args.method.K, len(history)
    node.NodeState(synced=base, history=history[:base], c=cs[base].copy()).save(state, k, catchup_mode)
    ctx = SimpleNamespace(run_id=1, node_config={"partition-id": 0, "num-partitions": 1, "state-dir": state_dir},
                          run_config={"flags-file": str(run_file)}, state=state)
    local = LocalTraining(lr=args.method.lr, eps=args.method.zo_eps, local_step=args.federation.local_step,
                          grad_clip=args.method.grad_clip)
    if catchup_mode == "exact":
        groups = history[base:]
    else:
        changed = np.unique(np.concatenate([idx for idx, _ in history[base:]])).astype(np.int64)
        groups = [(changed, cs[r][changed])]
    ins = fedkseed_messages.Instruction(round=r + 1, client=0, local=local, catchup=catchup_mode, base=base,
                                        groups=groups, c_digest=fedkseed_messages.c_digest(cs[r]))
    content = fedkseed_messages.encode_instruction(ins, k)
    catchup = []
    # exact: the pristine copy's set-up and replay; summed: the trained copy's move to the server's c
    original = node_runtime.NodeRuntime.catch_up if catchup_mode == "exact" else SeededModel.move_to

    def timed_catch_up(self, *a):
        start = time.perf_counter()
        try:
            return original(self, *a)
        finally:
            catchup.append(time.perf_counter() - start)

    owner, name = (node_runtime.NodeRuntime, "catch_up") if catchup_mode == "exact" else (SeededModel, "move_to")
    setattr(owner, name, timed_catch_up)
    try:
        start = time.perf_counter()
        reply = node.handle_train(content, ctx)
        seconds = time.perf_counter() - start
    finally:
        setattr(owner, name, original)
    rec = dict(reply[fedkseed_messages.REPLY_RECORD])
    if "error" in rec:
        raise SystemExit(f"error: the node replied {rec['error']}")
    return rec, seconds, sum(catchup)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--dtype", default="auto", help="the node's weight dtype (main.py's --dtype)")
    p.add_argument("--data", default="data/databricks-dolly-15k-sample.jsonl")
    p.add_argument("--rounds", default="1,10,40", help="rounds of history before the timed message")
    p.add_argument("--seeds-per-round", type=int, default=8, help="distinct seeds in each round's Delta c")
    p.add_argument("--local-step", type=int, default=2, help="local MeZO steps the timed message trains")
    p.add_argument("-K", type=int, default=4096)
    opts = p.parse_args()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    rounds = sorted(int(r) for r in opts.rounds.split(","))
    work = Path(tempfile.mkdtemp(prefix="fedkseed-node-bench-"))
    args = run_args(opts, work / "out")
    run_file = write_run_file(work / "run.json", args, 1)
    rng = np.random.default_rng(0)
    history = []
    for _ in range(max(rounds)):
        idx = np.sort(rng.choice(args.method.K, opts.seeds_per_round, replace=False)).astype(np.int64)
        history.append((idx, rng.normal(0, 30, len(idx))))

    # the state files of rounds R - 1 (what the node wrote when it last synced), and the server's c digests
    start = time.perf_counter()
    rt = node_runtime.NodeRuntime(args)
    copy, cs = rt.load_theta0(), []
    for r in range(max(rounds) + 1):
        if r + 1 in rounds:
            NodeStore(work / f"state-{r + 1}", state_key(args, 0)).save(copy, r, history)
        cs.append(copy.c.copy())
        if r < max(rounds):
            copy.replay_rounds(history[r:r + 1])
    del rt, copy
    print(f"{args.model.model}: K = {args.method.K}, {opts.seeds_per_round} seeds a round of history, "
          f"{opts.local_step} local steps a message, {torch.get_num_threads()} torch thread(s); "
          f"set-up {time.perf_counter() - start:.0f} s")
    print(f"{'rounds':>6} | {'before: s/message':>17} {'(catch-up)':>10} | {'after: s/message':>16} "
          f"{'(catch-up)':>10} | {'before/after':>12} | {'summed: s/message':>17} {'(catch-up)':>10}")
    rows = []
    try:
        measure_all(args, run_file, work, rounds, history, cs, rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the state files: about the model's size each
    print(json.dumps(rows))


def measure_all(args, run_file: Path, work: Path, rounds: list[int], history, cs: list, rows: list) -> None:
    """Before, after and summed, side by side, for each number of rounds."""
    for r in rounds:
        before, t_before, c_before = message(args, run_file, "off", history[:r], cs, base=0)
        after, t_after, c_after = message(args, run_file, str(work / f"state-{r}"), history[:r], cs, base=r - 1)
        if before != after:
            raise SystemExit(f"error: the replies after {r} rounds differ")
        _, t_summed, c_summed = message(args, run_file, "off", history[:r], cs, base=r - 1, catchup_mode="summed")
        rows.append({"rounds": r, "before": t_before, "before_catchup": c_before, "after": t_after,
                     "after_catchup": c_after, "ratio": t_before / t_after, "summed": t_summed,
                     "summed_catchup": c_summed})
        print(f"{r:>6} | {t_before:>17.2f} {c_before:>10.2f} | {t_after:>16.2f} {c_after:>10.2f} | "
              f"{t_before / t_after:>11.2f}x | {t_summed:>17.2f} {c_summed:>10.2f}")


if __name__ == "__main__":
    main()
