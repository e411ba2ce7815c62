"""--report_to: every metrics.jsonl row also reaches TensorBoard (read back with tensorboard's EventAccumulator) or
W&B offline; a resumed run continues the curves with each round once; a missing package is one line, exit 2."""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import main
import run_report
from checkpoint import CHECKPOINT_FILE
from conftest import dolly_records, tiny_flags, train
from run_records import MetricsFile, read_metrics

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


@pytest.fixture
def argv(tiny_model_dir, tmp_path):
    data = tmp_path / "dolly.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in dolly_records()))
    # --report_to's value last: a test replaces it
    return tiny_flags(tiny_model_dir, data, tmp_path / "run", "--report_to", "tensorboard", rounds=None,
                      local_step=4, clients=3, m=None, lr=None, zo_eps=None)


def curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Each scalar's (step, value) as a TensorBoard reader sees them."""
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def assert_curves_are_the_metrics(run_dir: Path) -> None:
    rows, seen = read_metrics(run_dir / "metrics.jsonl"), curves(run_dir)
    for name in ("eval_loss", "train_loss", "bytes_up_per_client", "seconds", "peak_memory_bytes"):
        expected = [(r["round"], np.float32(r[name])) for r in rows if name in r]  # event files hold float32
        assert seen[name] == expected, name
    assert "clients" not in seen and "round" not in seen  # a list; the step


def test_every_round_reaches_tensorboard_as_in_metrics_jsonl(argv):
    train([*argv, "--rounds", "3"])
    out = Path(argv[argv.index("--output_dir") + 1])
    assert [r["round"] for r in read_metrics(out / "metrics.jsonl")] == [0, 1, 2, 3]
    assert_curves_are_the_metrics(out)


def test_a_resumed_run_continues_the_curves_with_each_round_once(argv, tmp_path):
    out = Path(argv[argv.index("--output_dir") + 1])
    train([*argv, "--rounds", "1"])
    at_round_1 = (out / CHECKPOINT_FILE).read_bytes()
    train(["--resume", str(out), "--rounds", "2"])
    # as if killed after round 2 was reported but before its checkpoint: round 2 runs again
    (out / CHECKPOINT_FILE).write_bytes(at_round_1)
    train(["--resume", str(out), "--rounds", "3"])
    assert len(list((out / "tensorboard").iterdir())) == 3  # one event file per process that wrote the run
    assert [step for step, _ in curves(out)["eval_loss"]] == [0, 1, 2, 3]
    assert_curves_are_the_metrics(out)


@pytest.mark.parametrize("package", ["tensorboard", "wandb"])
def test_a_missing_package_is_one_line_and_exit_2_before_anything_loads(argv, monkeypatch, capsys, package):
    monkeypatch.setattr(run_report, "package_available", lambda name: name != package)
    argv[-1] = package
    assert main.main(argv) == 2
    assert capsys.readouterr().err == (f"error: --report_to {package}: needs the {package} package, which is not "
                                       f"installed (pip install {package})\n")
    assert not Path(argv[argv.index("--output_dir") + 1]).exists()


def test_wandb_gets_the_rows_offline_in_the_run_directory(tmp_path, monkeypatch):
    """wandb is not installed here (it is large): a stand-in module records what the reporter asks of it."""
    calls = []
    fake_run = types.SimpleNamespace(log=lambda values, step: calls.append(("log", values, step)),
                                     finish=lambda: calls.append(("finish",)))
    fake = types.SimpleNamespace(init=lambda **kwargs: calls.append(("init", kwargs)) or fake_run)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    (tmp_path / "config.json").write_text(json.dumps({"flags": {"report_to": "wandb", "lr": 0.1}}))
    metrics = MetricsFile(tmp_path / "metrics.jsonl", fresh=True)
    metrics.write({"round": 0, "eval_loss": 2.5, "rouge_l": 0.25})
    metrics.write({"round": 1, "train_loss": 2.4, "clients": [0, 2], "skipped_nan": 0, "lost": [], "aborted": False})
    metrics.close()
    init = calls[0][1]
    assert init["mode"] == "offline" and init["dir"] == str(tmp_path) and init["config"] == {"report_to": "wandb",
                                                                                             "lr": 0.1}
    assert calls[1:] == [("log", {"eval_loss": 2.5, "rouge_l": 0.25}, 0),
                         ("log", {"train_loss": 2.4, "skipped_nan": 0.0}, 1), ("finish",)]


def test_no_config_json_or_none_reports_nowhere(tmp_path):
    metrics = MetricsFile(tmp_path / "metrics.jsonl", fresh=True)
    metrics.write({"round": 0, "eval_loss": 2.5})
    assert metrics.reporter is None and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]
