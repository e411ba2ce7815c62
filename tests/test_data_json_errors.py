"""--dataset json with bad data or bad flags: one line `error: ...` naming the file, the row and the problem, exit 2."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import config
import main
from conftest import kept_logging
from test_data_dolly import error_message as error_of
from test_data_json import OWN, load, own_rows, write
from utils_data.json_loader import Fields, load_records


def test_missing_column_names_the_file_and_the_column(tmp_path):
    path = write(tmp_path / "own.csv", own_rows())
    message = error_of(lambda: load_records(str(path), Fields(instruction="prompt")))
    assert message.startswith(f"{path}: missing column 'prompt' (columns: question, passage, answer, topic")


def test_a_named_optional_column_must_exist(tmp_path):
    path = write(tmp_path / "own.jsonl", own_rows())
    message = error_of(lambda: load_records(str(path), Fields("question", response="answer", category="kind")))
    assert message.startswith(f"{path}: missing column 'kind'")


@pytest.mark.parametrize("empty", ["", "   ", None])
def test_empty_response_names_the_file_and_the_row(tmp_path, empty):
    rows = own_rows(5)
    rows[3]["answer"] = empty
    path = write(tmp_path / "own.jsonl", rows)
    assert error_of(lambda: load_records(str(path), OWN)) == f"{path}: row 4: empty response (column 'answer')"


def test_a_cell_that_is_not_text(tmp_path):
    rows = own_rows(3)
    rows[1]["question"] = ["a", "list"]
    path = write(tmp_path / "own.jsonl", rows)
    assert error_of(lambda: load_records(str(path), OWN)) == (
        f"{path}: row 2: column 'question' holds list, expected text")


def test_client_column_with_one_value(tmp_path):
    rows = [{**r, "site": "only"} for r in own_rows()]
    path = write(tmp_path / "own.parquet", rows)
    message = error_of(lambda: load(path, iid="client", eval_fraction=0.2))
    assert message.startswith(f"{path}: the client column has 1 value(s) (only)")


def test_client_split_without_the_client_column(tmp_path):
    path = write(tmp_path / "own.jsonl", [{k: v for k, v in r.items() if k != "site"} for r in own_rows()])
    message = error_of(lambda: load(path, iid="client", fields=Fields("question", "passage", "answer", "topic")))
    assert message.startswith(f"{path}: missing column 'client'")


def test_held_out_category_that_does_not_exist(tmp_path):
    path = write(tmp_path / "own.jsonl", own_rows())
    assert error_of(lambda: load(path, eval_category="ortho")) == (
        f"--eval_category ortho: no such category in {path} (categories: cardio, derm, neuro)")


@pytest.mark.parametrize("fraction", [0.001, 0.999])
def test_held_out_fraction_that_leaves_nothing(tmp_path, fraction):
    path = write(tmp_path / "own.jsonl", own_rows(10))
    assert error_of(lambda: load(path, eval_fraction=fraction)).startswith(f"--eval_fraction {fraction}: holds out")


def good_jsonl_with(tmp_path: Path, bad_line: str, at: int = 3) -> Path:
    lines = [json.dumps(r) for r in own_rows(5)]
    lines.insert(at - 1, bad_line)
    path = tmp_path / "own.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("bad_line", ['{"question": "x", ', "plain text", '["a", "list"]'])
def test_jsonl_that_is_not_json_lines_names_the_line(tmp_path, bad_line):
    path = good_jsonl_with(tmp_path, bad_line)
    assert error_of(lambda: load_records(str(path), OWN)) == (
        f"{path}: not a JSON Lines file (line 3 is not a JSON object)")


@pytest.mark.parametrize("name, content, kind", [
    ("own.parquet", "question,answer\nq,a\n", "Parquet"),
    ("own.json", "this is not json", "JSON"),
    ("own.csv", b"PAR1\x00\x01\x02\xff\xfe\x00garbage", "CSV"),
])
def test_a_file_that_is_not_what_its_extension_says(tmp_path, name, content, kind):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert error_of(lambda: load_records(str(path), OWN)).startswith(f"{path}: not a {kind} file (")


def test_unsupported_extension_missing_file_no_match_and_plain_folder(tmp_path):
    (tmp_path / "own.txt").write_text("x")
    assert "unsupported extension .txt" in error_of(lambda: load_records(str(tmp_path / "own.txt"), OWN))
    missing = tmp_path / "nope.jsonl"
    assert error_of(lambda: load_records(str(missing), OWN)) == f"{missing}: file not found"
    assert error_of(lambda: load_records(str(tmp_path / "*.parquet"), OWN)) == (
        f"--data_path {tmp_path / '*.parquet'}: no file matches")
    folder = tmp_path / "folder"
    folder.mkdir()
    assert error_of(lambda: load_records(str(folder), OWN)) == (
        f"{folder}: not a folder written by datasets' save_to_disk")


# --- the command line -------------------------------------------------------------------------------------------


def run_main(argv: list[str], capsys) -> tuple[int, list[str]]:
    with kept_logging():
        status = main.main(argv)
    return status, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("extra, expected", [
    (["--response_field", "reply"], "missing column 'reply'"),
    (["--eval_path", "/nonexistent/eval.csv"], "/nonexistent/eval.csv: file not found"),
    (["--eval_category", "ortho"], "--eval_category ortho: no such category"),
    (["--client_field", "site"], "--client_field site: the client split needs --iid client"),
    (["--eval_category", "derm", "--eval_fraction", "0.2"], "give at most one held-out set"),
    (["--eval_fraction", "1.5"], "--eval_fraction 1.5: must be in [0, 1)"),
])
def test_cli_bad_data_is_one_error_line_and_exit_2(tmp_path, capsys, extra, expected):
    path = write(tmp_path / "own.jsonl", own_rows())
    argv = ["--dataset", "json", "--data_path", str(path), "--instruction_field", "question", "--input_field",
            "passage", "--response_field", "answer", "--category_field", "topic", "--num_clients", "3",
            "--model", str(tmp_path / "no-model"), "--output_dir", str(tmp_path / "run"), "--quiet", *extra]
    status, err = run_main(argv, capsys)
    assert status == 2 and len(err) == 1 and err[0].startswith("error: ")
    assert expected in err[0]


@pytest.mark.parametrize("argv, expected", [
    (["--dataset", "dolly", "--response_field", "a"], "--response_field: only with --dataset json"),
    (["--dataset", "instruct", "--eval_path", "x.jsonl"], "--eval_path: only with --dataset dolly or json"),
    (["--dataset", "dolly", "--iid", "client"], "--iid client: only with --dataset json"),
    (["--dataset", "json", "--iid", "dirx"], "--iid dirx: expected 0, dir<alpha> with alpha > 0, or client"),
])
def test_flag_checks(argv, expected):
    assert error_of(lambda: config.validate(config.build_parser().parse_args(argv))).startswith(expected)


def test_new_flags_are_listed_and_define_the_trajectory(capsys):
    with pytest.raises(SystemExit):
        config.build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    flags = ["--instruction_field", "--input_field", "--response_field", "--category_field", "--client_field",
             "--eval_category", "--eval_fraction", "--eval_path", "--prompt_format"]
    for flag in flags:
        assert flag in text
        assert flag[2:] in config.TRAJECTORY_FLAGS
    assert "json" in text and "none" in text and "chat" in text
