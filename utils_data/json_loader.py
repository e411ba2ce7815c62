"""--dataset json: the user's own instruction data, read with the `datasets` library from local files only.

--data_path is a .jsonl/.json/.csv/.parquet file, a glob of such files (read in sorted name order), or a folder
written by `Dataset.save_to_disk`. Field flags name the user's columns; each row becomes the suite's record
{instruction, context, response, category} (plus its client column's value when the split asks for one).
Bad data raises FedKSeedError naming the file, the row (1-based, in file order) and the problem.
"""
from __future__ import annotations

import csv
import glob
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from errors import FedKSeedError

BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
KINDS = {".jsonl": "JSON Lines", ".json": "JSON", ".csv": "CSV", ".parquet": "Parquet"}
DOLLY_FIELDS = {"instruction": "instruction", "context": "context", "response": "response", "category": "category"}


@dataclass(frozen=True)
class Fields:
    """Column names of the user's data for each record key; None = the Dolly name, optional when absent."""

    instruction: str = "instruction"
    input: str | None = None
    response: str = "response"
    category: str | None = None
    client: str | None = None

    def required(self) -> dict[str, str]:
        """record key -> column that must exist."""
        out = {"instruction": self.instruction, "response": self.response}
        out.update({k: v for k, v in (("context", self.input), ("category", self.category),
                                      ("client", self.client)) if v is not None})
        return out

    def optional(self) -> dict[str, str]:
        """record key -> Dolly-named column used when present ("" otherwise)."""
        return {k: DOLLY_FIELDS[k] for k, v in (("context", self.input), ("category", self.category)) if v is None}


@dataclass
class Table:
    """The rows of one file: its path and each row as a dict of column -> value."""

    path: Path
    columns: list[str]
    rows: list[dict]


def read_tables(data_path: str) -> list[Table]:
    """Every file --data_path names, read locally with `datasets` (no hub access, no cache left behind)."""
    path = Path(data_path)
    if path.is_dir():
        return [_read_saved(path)]
    files = sorted(Path(p) for p in glob.glob(data_path)) if glob.has_magic(data_path) else [path]
    if not files:
        raise FedKSeedError(f"--data_path {data_path}: no file matches")
    for file in files:
        if not file.is_file():
            raise FedKSeedError(f"{file}: file not found")
        if file.suffix.lower() not in BUILDERS:
            raise FedKSeedError(f"{file}: unsupported extension {file.suffix or '(none)'}; expected "
                                f"{', '.join(BUILDERS)} or a save_to_disk folder")
    return [_read_file(file) for file in files]


def _datasets():
    """The `datasets` module, offline and quiet."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    return datasets


def _read_file(file: Path) -> Table:
    """One data file through its `datasets` builder, in memory; a file its extension does not describe is refused."""
    datasets = _datasets()
    suffix = file.suffix.lower()
    with tempfile.TemporaryDirectory(prefix="fedkseed-datasets-") as cache:
        try:
            options = _csv_options(file, datasets) if suffix == ".csv" else {}
            ds = datasets.load_dataset(BUILDERS[suffix], data_files=[str(file)], split="train", cache_dir=cache,
                                       keep_in_memory=True, **options)
        except Exception as exc:  # datasets wraps parser errors in several types; report the cause in one line
            raise FedKSeedError(f"{file}: not a {KINDS[suffix]} file ({_cause(file, exc)})") from None
    return Table(file, list(ds.column_names), ds.to_list())


def _csv_options(file: Path, datasets) -> dict:
    """Every CSV column read as text, as written ("007" stays "007", "NA" stays "NA", an empty cell is "")."""
    with open(file, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), [])
    if not header:
        raise ValueError("no header row")
    return {"features": datasets.Features({name: datasets.Value("string") for name in header}),
            "keep_default_na": False}


def _read_saved(folder: Path) -> Table:
    """A folder written by Dataset.save_to_disk (a DatasetDict's "train" split)."""
    datasets = _datasets()
    try:
        ds = datasets.load_from_disk(str(folder), keep_in_memory=True)
    except FileNotFoundError:
        raise FedKSeedError(f"{folder}: not a folder written by datasets' save_to_disk") from None
    except Exception as exc:
        raise FedKSeedError(f"{folder}: cannot read the saved dataset ({_one_line(exc)})") from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise FedKSeedError(f"{folder}: a DatasetDict without a 'train' split (has {', '.join(ds)})")
        ds = ds["train"]
    return Table(folder, list(ds.column_names), ds.to_list())


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0]}" if text else exc.__class__.__name__


def _cause(file: Path, exc: BaseException) -> str:
    """The parser's reason; for JSON Lines the first line that is not a JSON object, found by reading it."""
    if file.suffix.lower() == ".jsonl":
        line = _bad_jsonl_line(file)
        if line is not None:
            return f"line {line} is not a JSON object"
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return _one_line(exc)


def _bad_jsonl_line(file: Path) -> int | None:
    """Number of the first non-blank line of `file` that is not a JSON object; None if every line is one."""
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return 1
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            if not isinstance(json.loads(line), dict):
                return number
        except json.JSONDecodeError:
            return number
    return None


def to_records(table: Table, fields: Fields) -> tuple[list[dict], list[str] | None]:
    """The table's rows as records, and each row's client value when fields.client is set."""
    required = fields.required()
    missing = [column for column in required.values() if column not in table.columns]
    if missing:
        raise FedKSeedError(f"{table.path}: missing column {missing[0]!r} (columns: {', '.join(table.columns)})")
    columns = {**{k: c for k, c in fields.optional().items() if c in table.columns}, **required}
    records, clients = [], [] if fields.client is not None else None
    for number, row in enumerate(table.rows, start=1):
        values = {key: _text(row[column], table.path, number, column) for key, column in columns.items()}
        if not values["response"].strip():
            raise FedKSeedError(f"{table.path}: row {number}: empty response (column {required['response']!r})")
        if clients is not None:
            clients.append(values.pop("client"))
        records.append({key: values.get(key, "") for key in DOLLY_FIELDS})
    return records, clients


def _text(value, path: Path, row: int, column: str) -> str:
    """A cell as text: strings as they are, numbers and booleans printed, null as ""; lists and objects refused."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    raise FedKSeedError(f"{path}: row {row}: column {column!r} holds {type(value).__name__}, expected text")


def load_records(data_path: str, fields: Fields) -> tuple[list[dict], list[str] | None]:
    """All records of --data_path (files in order) and their client values (None without a client column)."""
    records, clients = [], [] if fields.client is not None else None
    for table in read_tables(data_path):
        part, part_clients = to_records(table, fields)
        records += part
        if clients is not None:
            clients += part_clients
    if not records:
        raise FedKSeedError(f"--data_path {data_path}: no records")
    return records, clients
