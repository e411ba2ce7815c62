"""The command line: every paper flag exists, the README's commands parse as written, a tiny run writes one
metrics line a round, and bad input ends with exit 2 and one 'error: ...' line, never a traceback."""
from __future__ import annotations

import contextlib
import io
import json
import shlex

import numpy as np
import pytest
import torch

import config
import main
from conftest import dolly_records, kept_logging, main_py, tiny_flags


def tiny(inputs, out, *extra: str) -> list[str]:
    """K = 8, 3 clients, 2 rounds of 2 steps; lr, zo_eps and -m at their defaults."""
    return tiny_flags(inputs["model"], inputs["good"], out, *extra, rounds=2, clients=3, m=None, max_new_tokens=4,
                      lr=None, zo_eps=None, no_compile=False)


@pytest.fixture(scope="module")
def inputs(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    good = folder / "dolly.jsonl"
    good.write_text("".join(json.dumps(r) + "\n" for r in dolly_records()))
    bad = folder / "bad.jsonl"
    lines = [json.dumps(r) for r in dolly_records(1)[:2]]
    bad.write_text(lines[0] + "\n" + lines[1] + "\n" + '{"instruction": "what is", "context": \n')
    return {"model": str(tiny_model_dir), "good": str(good), "bad": str(bad), "folder": folder}


# case id -> (flags replacing the defaults, text the error line must contain)
BAD_INPUT = {
    "missing_model": (["--model", "{folder}/no_such_model"], "no_such_model"),
    "missing_data": (["--data_path", "{folder}/no_such_file.jsonl"], "no_such_file.jsonl"),
    "malformed_jsonl_line": (["--data_path", "{bad}"], "bad.jsonl:3:"),
    "K_zero": (["-K", "0"], "-K 0"),
    "m_zero": (["-m", "0"], "-m 0"),
    "m_above_one": (["-m", "1.5"], "-m 1.5"),
    "unknown_dataset": (["--dataset", "foo"], "--dataset foo"),
    "iid_dir_without_alpha": (["--iid", "dir"], "--iid dir"),
    "iid_garbage": (["--iid", "xyz"], "--iid xyz"),
    "weight_decay": (["--weight_decay", "0.1"], "--weight_decay 0.1"),
    "cuda_without_cuda": (["--device", "cuda"], "--device cuda"),
    "local_step_zero": (["--local_step", "0"], "--local_step 0"),
    "unknown_perturbation": (["--perturbation", "uniform"], "--perturbation"),
    "empty_after_filtering": (["--max_length", "8", "--use_prompts"], "no usable training examples"),
    "zerotask_out_of_range": (["--zerotask", "99"], "--zerotask 99"),
    "unreadable_model_dir": (["--model", "{folder}"], "not a local model"),
    "round_timeout_negative": (["--round_timeout", "-1"], "--round_timeout -1"),
    "min_replies_negative": (["--min_replies", "-1"], "--min_replies -1"),
    "min_replies_above_the_round": (["--min_replies", "2"], "--min_replies 2: must be in [0, 1]"),
}


def in_process(argv: list[str]) -> tuple[int, str]:
    """main.main(argv) in this process: (exit status, stderr). A traceback would be an exception raised here."""
    err = io.StringIO()
    with kept_logging(), contextlib.redirect_stderr(err):
        try:
            status = main.main(argv)
        except SystemExit as exc:  # the parser's own exit
            status = exc.code
    return status, err.getvalue()


@pytest.fixture(scope="module")
def bad_runs(inputs):
    """Every bad-input run, in this process (a fresh interpreter each would be mostly start-up):
    {case: (exit status, stderr)}."""
    return {case: in_process(tiny(inputs, inputs["folder"] / case, *[f.format(**inputs) for f in flags]))
            for case, (flags, _) in BAD_INPUT.items()}


def assert_one_error_line(status: int, stderr: str, text: str) -> None:
    assert status == 2, stderr
    assert "Traceback" not in stderr
    last = [line for line in stderr.splitlines() if line.strip()][-1]
    assert last.startswith("error: ")
    assert text in last
    tail = stderr[stderr.index("error: "):]
    assert tail.strip() == last  # the message is one line


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_exits_2_with_one_error_line(case, bad_runs):
    if case == "cuda_without_cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert_one_error_line(*bad_runs[case], BAD_INPUT[case][1])


def test_bad_input_from_the_shell_exits_2_with_one_error_line(inputs, tmp_path):
    """The same in a fresh interpreter, as a user runs it: the process's own exit status and stderr."""
    result = main_py(*tiny(inputs, tmp_path / "run", "--model", f"{inputs['folder']}/no_such_model"), timeout=120)
    assert_one_error_line(result.returncode, result.stderr, "no_such_model")


def test_tiny_run_writes_one_metrics_line_per_round(inputs, tmp_path):
    out = tmp_path / "run"
    result = main_py(*tiny(inputs, out, "--save", "--lr", "1e-3", "--zo_eps", "1e-3", "--seed", "1"), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["round"] for row in rows] == [0, 1, 2]  # round 0: the base model
    for row in rows[1:]:
        assert np.isfinite(row["eval_loss"]) and np.isfinite(row["train_loss"])
        assert row["bytes_up_per_client"] == 8 * 2 + 8  # two (index, g) pairs and the sample count
    saved = np.load(out / "coefficients.npz")
    assert saved["c"].shape == (8,) and np.count_nonzero(saved["c"]) >= 1
    assert len(np.unique(saved["seed_pool"])) == 8
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final"]["eval_loss"] == rows[-1]["eval_loss"]


PAPER_FLAGS = ["--num_clients", "-m", "--rounds", "--local_step", "--batch_or_epoch", "--equal_weight", "--dataset",
               "--batch_size", "--max_length", "--use_prompts", "--iid", "--zerotask", "--dataset_subsample",
               "--model", "--lr", "--weight_decay", "--grad_clip", "-K", "--zo_eps", "--bias_sampling",
               "--bias_loss_clip", "--grad_initial", "--device", "--log", "--log_root", "--seed", "--eval_metric",
               "--save"]


def test_help_lists_every_flag_of_the_paper_code():
    result = main_py("--help", timeout=120)
    assert result.returncode == 0
    words = set(result.stdout.replace(",", " ").replace("[", " ").replace("]", " ").split())
    missing = [flag for flag in PAPER_FLAGS if flag not in words]
    assert not missing


# The four command lines of the paper repository's README (zhenqincn/FedKSeed), verbatim after "python main.py".
README_COMMANDS = [
    "--rounds 40 --model datajuicer/LLaMA-1B-dj-refine-150B --use_prompts --dataset instruct --lr 0.0000003 "
    "-K 1024 -m 0.05 --log",
    "--rounds 60 --model datajuicer/LLaMA-1B-dj-refine-150B --use_prompts --dataset dolly --iid dir0.5 "
    "--num_clients 200 --lr 0.0000003 -K 1024 -m 0.05 --log",
    "--rounds 40 --bias_sampling  --model datajuicer/LLaMA-1B-dj-refine-150B --use_prompts --dataset instruct "
    "--lr 0.0000003 -K 1024 -m 0.05 --log",
    "--rounds 60 --bias_sampling  --model datajuicer/LLaMA-1B-dj-refine-150B --use_prompts --dataset dolly "
    "--iid dir0.5 --num_clients 200 --lr 0.0000003 -K 1024 -m 0.05 --log",
]


@pytest.mark.parametrize("command", README_COMMANDS)
def test_readme_command_lines_parse_as_written(command):
    args = config.build_parser().parse_args(shlex.split(command))
    pro = "--bias_sampling" in command
    dolly = "dolly" in command
    assert args.rounds == (60 if dolly else 40)
    assert args.bias_sampling is pro
    assert args.model == "datajuicer/LLaMA-1B-dj-refine-150B"
    assert args.use_prompts is True and args.log is True
    assert args.dataset == ("dolly" if dolly else "instruct")
    assert args.lr == 3e-7 and args.K == 1024 and args.m == 0.05
    assert args.iid == "dir0.5" and args.num_clients == 200  # given on the dolly lines; the defaults otherwise
    # the paper's defaults for what the README leaves out
    assert args.local_step == 200 and args.zo_eps == 0.0005 and args.grad_clip == -100.0
    assert args.bias_loss_clip == 1000.0 and args.grad_initial == 0.0 and args.weight_decay == 0.0
    assert args.batch_size == 1 and args.max_length == 1024 and args.zerotask == 7 and args.seed == 42
    cfg = config.validate(args)  # and they pass validation
    assert cfg.method.run_name == ("fedkseed-pro" if pro else "fedkseed")
