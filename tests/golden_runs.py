"""Golden runs: every method on the tiny model, in-process and in Flower's simulation engine, one continued with
--resume, reduced to what must not change when the engines or methods are restructured: every metrics row except
measured times and memory, the summary, and digests of c, the trained tensors and the final model.

    python tests/golden_runs.py record [METHOD ...]   # writes tests/golden/runs.json (the methods named, or all)

tests/test_golden_runs.py runs the same configurations and compares them with the recorded file."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("FEDKSEED_COMPILE", "0")

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "golden" / "runs.json"

# every run: 4 clients, 2 a round, 3 rounds of 6 steps, K = 64, eval loss every round and Rouge-L in round 3
COMMON = {"K": 64, "local_step": 6, "eval_every": 1, "eval_metric": None, "max_new_tokens": 6, "lr": None}
COMMON_FLAGS = ["--rouge_every", "3", "--save"]
RUNS: dict[str, list[str]] = {
    "fedkseed": ["--lr", "1e-3"],
    "fedkseed-pro": ["--lr", "1e-3", "--bias_sampling"],
    "fedkseed-lora": ["--lr", "1e-2", "--peft", "lora", "--lora_target_modules", "q_proj,v_proj"],
    "fedit": ["--lr", "1e-2", "--method", "fedit"],
    "fedavg": ["--lr", "1e-3", "--method", "fedavg"],
    "ferret": ["--lr", "1e-2", "--method", "ferret"],
}
FLOWER = ["--engine", "flower", "--flower_nodes", "2"]


def machine() -> str:
    """Where bit-identity is expected: the same CPU model and torch build."""
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return f"{cpu} | torch {torch.__version__}"


def digest(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(a.tobytes())
    return h.hexdigest()


def reduce(result: dict, out: Path) -> dict:
    """What a run produced, without its timings: metrics rows, summary, digests of c and the final weights."""
    import numpy as np

    from run_records import MEASURED, read_metrics

    rows = [{k: v for k, v in row.items() if k not in MEASURED} for row in read_metrics(out / "metrics.jsonl")]
    summary = json.loads((out / "summary.json").read_text())
    method = result["method"]
    weights = [p.detach().float().cpu().contiguous().numpy() for p in method.global_model().parameters()]
    c = getattr(method, "c", None)
    return {"rows": rows, "summary": summary, "c": None if c is None else digest([np.asarray(c)]),
            "c_sum": None if c is None else float(np.abs(np.asarray(c)).sum()),
            "weights": digest(weights), "weights_sum": float(sum(float(np.abs(w).sum()) for w in weights))}


def run(name: str, model_dir: Path, data_file: Path, work: Path, flower: bool = False,
        resume_after: int = 0) -> dict:
    """One golden configuration in one torch thread; with resume_after = r, the run stops after round r and the
    rest runs as --resume."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import tiny_flags, train

    out = work / (name + ("-flower" if flower else "") + (f"-resume{resume_after}" if resume_after else ""))
    argv = tiny_flags(model_dir, data_file, out, *COMMON_FLAGS, *RUNS[name], *(FLOWER if flower else []), **COMMON)
    if resume_after:
        train([*argv, "--rounds", str(resume_after)])
        result = train(["--resume", str(out), "--rounds", "3"])
    else:
        result = train(argv)
    return reduce(result, out)


def configurations() -> list[tuple[str, bool, int]]:
    """(method, flower, resume_after) of every golden run."""
    return ([(name, False, 0) for name in RUNS] + [(name, True, 0) for name in RUNS]
            + [("fedkseed-pro", False, 1), ("fedit", False, 2)])


def key(name: str, flower: bool, resume_after: int) -> str:
    return name + (" flower" if flower else "") + (f" resume@{resume_after}" if resume_after else "")


def record(names: list[str]) -> None:
    """Record the golden runs of the methods named (all when none is), keeping the others' records."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import dolly_records, write_tiny_model

    kept = json.loads(GOLDEN.read_text())["runs"] if names and GOLDEN.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = write_tiny_model(tmp / "model")
        data_file = tmp / "dolly.jsonl"
        data_file.write_text("".join(json.dumps(r) + "\n" for r in dolly_records()))
        runs = {key(*cfg): run(cfg[0], model_dir, data_file, tmp, cfg[1], cfg[2]) for cfg in configurations()
                if not names or cfg[0] in names}
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps({"machine": machine(), "runs": {**kept, **runs}}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN} ({len(runs)} runs recorded, {len(kept)} kept)")


if __name__ == "__main__" and sys.argv[1:2] == ["record"]:
    record(sys.argv[2:])
