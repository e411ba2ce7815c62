"""--dataset json: files of every format with the user's own column names -> the records, the split and the held-out
set the flags ask for; Dolly through --dataset json is --dataset dolly."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from conftest import ROOT, dolly_records
from utils_data.json_loader import Fields, load_records
from utils_data.load_data import EvalOptions, load_federated_data

SAMPLE = ROOT / "data" / "databricks-dolly-15k-sample.jsonl"
# the user's names for the suite's keys
OWN = Fields(instruction="question", input="passage", response="answer", category="topic", client="site")
SITES = ["clinic-a", "clinic-b", "clinic-c"]


def own_rows(n: int = 30) -> list[dict]:
    """Rows under the user's column names, with an extra column the loader ignores."""
    topics = ["cardio", "derm", "neuro"]
    return [{"question": f"what is {i} ?", "passage": "" if i % 3 else f"the {i} river", "answer": f"it is {i} .",
             "topic": topics[i % 3], "site": SITES[(i // 2) % 3], "extra": i} for i in range(n)]


def as_record(row: dict) -> dict:
    return {"instruction": row["question"], "context": row["passage"], "response": row["answer"],
            "category": row["topic"]}


def write(path: Path, rows: list[dict]) -> Path:
    """rows in the format the extension names (.jsonl, .json, .csv, .parquet, or a save_to_disk folder)."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        import datasets

        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


def load(path, iid="0", num_clients=3, fields=OWN, seed=0, **evaluation):
    return load_federated_data("json", str(path), num_clients=num_clients, iid=iid, zerotask=7,
                               dataset_subsample=1.0, max_length=1024, seed=seed, fields=fields,
                               evaluation=EvalOptions(**{k.removeprefix("eval_"): v for k, v in evaluation.items()}))


def key(record: dict) -> str:
    return json.dumps(record, sort_keys=True)


def flat(clients: list[list[dict]]) -> list[dict]:
    return [r for c in clients for r in c]


@pytest.mark.parametrize("name", ["own.jsonl", "own.json", "own.csv", "own.parquet", "own_saved"])
def test_every_format_gives_the_mapped_records_and_clients(tmp_path, name):
    rows = own_rows()
    records, clients = load_records(str(write(tmp_path / name, rows)), OWN)
    assert records == [as_record(r) for r in rows]
    assert clients == [r["site"] for r in rows]


def test_a_glob_reads_its_files_in_name_order(tmp_path):
    rows = own_rows()
    write(tmp_path / "part-2.jsonl", rows[20:])
    write(tmp_path / "part-1.jsonl", rows[:20])
    records, _ = load_records(str(tmp_path / "part-*.jsonl"), OWN)
    assert records == [as_record(r) for r in rows]


def test_optional_columns_default_to_dolly_names_or_empty(tmp_path):
    rows = [{"instruction": "what is a ?", "response": "a ."}, {"instruction": "b", "response": "c", "context": "x"}]
    records, clients = load_records(str(write(tmp_path / "d.json", rows)), Fields())
    assert records == [{"instruction": "what is a ?", "context": "", "response": "a .", "category": ""},
                       {"instruction": "b", "context": "x", "response": "c", "category": ""}]
    assert clients is None


def test_csv_cells_stay_text(tmp_path):
    path = tmp_path / "own.csv"
    path.write_text('instruction,response,context\nzip code ?,02134,\nnull ?,NA,"a, b"\n')
    records, _ = load_records(str(path), Fields())
    assert [(r["response"], r["context"]) for r in records] == [("02134", ""), ("NA", "a, b")]


def test_client_split_is_one_client_per_value(tmp_path):
    rows = own_rows()
    data = load(write(tmp_path / "own.csv", rows), iid="client", eval_fraction=0.2)
    assert data.client_names == SITES
    eval_keys = {key(r) for r in data.eval_records}
    for name, client in zip(SITES, data.clients, strict=True):
        expected = [as_record(r) for r in rows if r["site"] == name and key(as_record(r)) not in eval_keys]
        assert client == expected


def test_dirichlet_split_over_the_mapped_category(tmp_path):
    rows = own_rows(60)
    data = load(write(tmp_path / "own.parquet", rows), iid="dir0.1", num_clients=3, eval_category="neuro")
    training = flat(data.clients)
    assert Counter(key(r) for r in training) == Counter(key(as_record(r)) for r in rows if r["topic"] != "neuro")
    # alpha 0.1 concentrates each topic on few clients: some client misses a topic
    assert any(len({r["category"] for r in c}) < 2 for c in data.clients)


def test_iid_split_is_balanced(tmp_path):
    data = load(write(tmp_path / "own.jsonl", own_rows(40)), iid="0", num_clients=4, eval_fraction=0.25)
    assert sorted(len(c) for c in data.clients) == [7, 7, 8, 8]
    assert len(data.eval_records) == 10


def test_held_out_category(tmp_path):
    rows = own_rows()
    data = load(write(tmp_path / "own.json", rows), eval_category="derm")
    assert data.eval_records == [as_record(r) for r in rows if r["topic"] == "derm"]
    assert "derm" not in {r["category"] for r in flat(data.clients)}


def test_held_out_fraction_is_seeded_and_disjoint(tmp_path):
    rows = own_rows(50)
    path = write(tmp_path / "own.jsonl", rows)
    data = load(path, eval_fraction=0.2)
    assert len(data.eval_records) == 10
    assert Counter(key(r) for r in data.eval_records + flat(data.clients)) == Counter(
        key(as_record(r)) for r in rows)
    order = [key(as_record(r)) for r in rows]
    assert [order.index(key(r)) for r in data.eval_records] == sorted(order.index(key(r)) for r in data.eval_records)
    assert load(path, eval_fraction=0.2, seed=1).eval_records != data.eval_records


def test_default_held_out_is_a_tenth(tmp_path):
    assert len(load(write(tmp_path / "own.jsonl", own_rows(50))).eval_records) == 5


def test_held_out_file(tmp_path):
    rows = own_rows()
    eval_rows = [{**r, "answer": "held " + r["answer"]} for r in own_rows(5)]
    data = load(write(tmp_path / "own.jsonl", rows), eval_path=str(write(tmp_path / "eval.csv", eval_rows)))
    assert data.eval_records == [as_record(r) for r in eval_rows]
    assert Counter(key(r) for r in flat(data.clients)) == Counter(key(as_record(r)) for r in rows)


def test_dolly_through_json_is_dolly():
    dolly = load_federated_data("dolly", str(SAMPLE), 10, "dir0.5", 7, 1.0, 1024, 42)
    via_json = load_federated_data("json", str(SAMPLE), 10, "dir0.5", 7, 1.0, 1024, 42, Fields(),
                                   EvalOptions(category="summarization"))
    assert via_json == dolly
    assert len(dolly.eval_records) == 40 and sum(len(c) for c in dolly.clients) == 420


@pytest.mark.parametrize("iid", ["0", "dir1.0"])
def test_dolly_as_parquet_subsampled_is_dolly(tmp_path, iid):
    jsonl, parquet = write(tmp_path / "d.jsonl", dolly_records()), write(tmp_path / "d.parquet", dolly_records())
    dolly = load_federated_data("dolly", str(jsonl), 4, iid, 3, 0.5, 1024, 7)
    third = sorted({r["category"] for r in dolly_records()})[3]
    via_json = load_federated_data("json", str(parquet), 4, iid, 3, 0.5, 1024, 7, Fields(), EvalOptions(third))
    assert via_json == dolly


def test_the_readme_command_runs_on_the_file_the_readme_makes(tmp_path):
    """The "Your own data" commands: the python -c line makes the file; the main.py line's data part loads it."""
    import shlex
    import subprocess
    import sys

    import config
    from utils_data.load_data import load_for_run

    text = (ROOT / "README.md").read_text().split("## Your own data", 1)[1]
    make, run = [line for line in text.splitlines() if line.startswith(("python -c", "python main.py"))][:2]
    code = shlex.split(make)[2].replace("'data/", f"'{ROOT}/data/")  # the README runs it in the project folder
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)
    argv = shlex.split(run)[2:] + ["--output_dir", str(tmp_path / "run")]
    cfg = config.validate(config.build_parser().parse_args(argv))
    cfg.data.data_path = str(tmp_path / cfg.data.data_path)
    data = load_for_run(cfg)
    assert data.client_names == ["team-0", "team-1", "team-2", "team-3"]
    assert {r["category"] for r in data.eval_records} == {"summarization"} and len(data.eval_records) == 40
    assert cfg.data.prompt_format == "chat"
