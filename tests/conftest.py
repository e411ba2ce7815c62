"""Shared fixtures and helpers: a tiny LLaMA-shape model and a word-level tokenizer, written to disk like a real one;
the flags of a tiny run; main.py run in this process or in a fresh interpreter."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED_DATA = ROOT.parent / "shared" / "data"
# a subprocess run: plain torch ops (no kernel build per interpreter), one torch thread (the sums of an in-process
# run), log lines as they happen (a killed run's last lines are not lost in a buffer)
ENV = {**os.environ, "FEDKSEED_COMPILE": "0", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

WORDS = (
    "the a an of to and in is was for on with as by at from that this it be are what who how why when "
    "write give list name describe summarize answer question response instruction input context below "
    "task request paired provides further completes appropriately tell me about city river music book "
    "yes no true false one two three four five red blue green paris france london water fire"
).split()


def write_tiny_model(path: Path, vocab_words=WORDS, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """Save a randomly initialised LlamaForCausalLM and a matching tokenizer into `path`."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    vocab = {w: i for i, w in enumerate(specials + sorted(set(vocab_words) | set("#:.,?!-'\"0123456789")))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=0, bos_token_id=2, eos_token_id=3, tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    fast.save_pretrained(path)
    return path


def materialise(model, seed_pool, c, lr: float, kind: str = "gaussian"):
    """theta0 - lr * sum_j c_j z_j applied from scratch onto a model holding theta0 (what a run's c describes)."""
    from optimizers.seed_pool import SeededModel

    SeededModel(model, seed_pool, lr, kind=kind).move_to(c)
    return model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny_model"))


def dolly_records(n_per_category: int = 12) -> list[dict]:
    """Dolly-schema records over all 8 categories, made of words the tiny tokenizer knows."""
    categories = ["brainstorming", "classification", "closed_qa", "creative_writing", "general_qa",
                  "information_extraction", "open_qa", "summarization"]
    out = []
    for c, cat in enumerate(categories):
        for i in range(n_per_category):
            w = WORDS[(c * 7 + i) % len(WORDS)]
            out.append({"instruction": f"what is {w} ?", "context": "" if i % 2 else f"the {w} river",
                        "response": f"{w} is a {WORDS[(i + 3) % len(WORDS)]} .", "category": cat})
    return out


@pytest.fixture(scope="session")
def data_file(tmp_path_factory) -> Path:
    """The Dolly-schema records in one file, shared by the modules that only read it."""
    path = tmp_path_factory.mktemp("dolly") / "databricks-dolly-15k.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in dolly_records()))
    return path


@pytest.fixture
def dolly_file(tmp_path) -> Path:
    path = tmp_path / "databricks-dolly-15k.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in dolly_records()))
    return path


def tiny_flags(model, data, out, *extra: str, dataset: str = "dolly", K=8, rounds=3, local_step=2, clients=4,
               m="0.5", eval_examples=4, eval_metric="loss", eval_every=None, max_new_tokens=None, lr="1e-3",
               zo_eps="1e-3", quiet: bool = True, no_compile: bool = True) -> list[str]:
    """The flags of a run on the tiny model. A keyword set to None leaves its flag out (main.py's default applies);
    `extra` comes last, so a flag given there again overrides the value set here."""
    values = {"--dataset": dataset, "--data_path": data, "-K": K, "--rounds": rounds, "--local_step": local_step,
              "--num_clients": clients, "-m": m, "--eval_examples": eval_examples, "--eval_metric": eval_metric,
              "--eval_every": eval_every, "--max_new_tokens": max_new_tokens, "--lr": lr, "--zo_eps": zo_eps}
    argv = ["--model", str(model)]
    for flag, value in values.items():
        if value is not None:
            argv += [flag, str(value)]
    switches = [flag for flag, on in (("--quiet", quiet), ("--no_compile", no_compile)) if on]
    return [*argv, *switches, "--output_dir", str(out), *extra]


def main_py(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """python main.py argv in a fresh interpreter (ENV), its output captured as text."""
    return subprocess.run([sys.executable, "main.py", *argv], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def run_and_kill(argv: list[str], out: Path, at_round: int, env: dict = ENV, timeout: float = 240) -> int:
    """Run main.py with argv, SIGKILL it once its checkpoint in `out` holds round `at_round` or later; returns
    the checkpointed round at the kill (asserts the run was killed before it ended)."""
    import signal
    import time

    from checkpoint import load_checkpoint
    from errors import FedKSeedError

    def checkpointed_round() -> int:
        try:
            return load_checkpoint(out).round
        except FedKSeedError:  # none yet, or a FedIT/FedAvg tensor file replaced between reading its name and it
            return -1

    proc = subprocess.Popen([sys.executable, "main.py", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if checkpointed_round() >= at_round:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            break
        time.sleep(0.02)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    return load_checkpoint(out).round


@contextlib.contextmanager
def kept_logging():
    """Give the caller's logging handlers and level back afterwards: a run sets up its own."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def one_thread_call(fn, *args, **kwargs):
    """fn(*args, **kwargs) in one torch thread (bit-identical sums across engines), restoring the caller's logging
    handlers (a run sets up its own)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with kept_logging():
            return fn(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


def train(argv: list[str]) -> dict:
    """main.train(argv) in this process and one torch thread: the sums of the other engine and of a subprocess run
    (ENV), and the tiny model runs 3x faster than on 2."""
    import main

    return one_thread_call(main.train, argv)


def force_selections(monkeypatch, selections: list[list[int]]) -> None:
    """Round r of the next in-process run trains exactly the clients selections[r - 1] (those a Flower run with
    lost nodes accepted)."""
    import server

    rounds = iter(selections)
    monkeypatch.setattr(server.Server, "select_clients", lambda self: list(next(rounds)))


def run_flower_with_faults(argv: list[str], faults: list[str]) -> dict:
    """A Flower simulation run of `argv` in which client i sends the hostile reply faults[i] (flower_app.faults),
    restoring the caller's logging handlers."""
    import config
    from flower_app.engine import run_flower

    args = config.validate(config.build_parser().parse_args(argv))
    with kept_logging():
        return run_flower(args, faults={str(cid): kind for cid, kind in enumerate(faults)})
