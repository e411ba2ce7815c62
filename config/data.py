"""The data flags: which records, how they are split into clients and held out, and how a prompt is built."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from errors import FedKSeedError, require
from flag_group import FlagGroup, parse_bool
from utils_data.default_tokens import PROMPT_FORMATS as TEMPLATES
from utils_data.partition_data import parse_iid

PROMPT_FORMATS = ("auto", *TEMPLATES)
FIELD_FLAGS = ("instruction_field", "input_field", "response_field", "category_field", "client_field")
EVAL_FLAGS = ("eval_category", "eval_fraction", "eval_path")


@dataclass
class DataConfig(FlagGroup):
    dataset: str
    data_path: str
    batch_size: int
    max_length: int
    use_prompts: bool
    iid: str
    zerotask: int
    instruction_field: str | None
    input_field: str | None
    response_field: str | None
    category_field: str | None
    client_field: str | None
    eval_category: str | None
    eval_fraction: float
    eval_path: str | None
    prompt_format: str
    dataset_subsample: float

    @staticmethod
    def add_flags(parser: argparse.ArgumentParser) -> None:
        data = parser.add_argument_group("data")
        data.add_argument("--dataset", default="instruct",
                          help="instruct (Natural Instructions), dolly, or json (your own data: see --data_path)")
        data.add_argument("--data_path", default="./data",
                          help="folder with natural-instructions/ or databricks-dolly-15k.jsonl, or a Dolly .jsonl "
                          "file; --dataset json: a .jsonl/.json/.csv/.parquet file, a glob of them, or a "
                          "save_to_disk folder")
        data.add_argument("--batch_size", type=int, default=1, help="examples per MeZO step")
        data.add_argument("--max_length", type=int, default=1024, help="token limit of a training example "
                          "(and the character limit of an NI input, as in the paper)")
        data.add_argument("--use_prompts", type=parse_bool, nargs="?", const=True, default=True, metavar="BOOL",
                          help="Natural Instructions: the Alpaca template (on), or '{definition} Input: ... Output:' "
                          "(--use_prompts false / --no_use_prompts); Dolly is always templated, as the authors' code")
        data.add_argument("--no_use_prompts", dest="use_prompts", action="store_false", help=argparse.SUPPRESS)
        data.add_argument("--iid", default="dir0.5", help="Dolly/json split: dir<alpha> (Dirichlet over categories), "
                          "0 (IID), or client (json: one client per value of --client_field; --num_clients ignored)")
        data.add_argument("--zerotask", type=int, default=7, help="index (sorted name order) of the Dolly category "
                          "held out for evaluation; 7 = summarization")
        data.add_argument("--instruction_field", default=None, metavar="COLUMN",
                          help="json: the column holding the instruction; default instruction")
        data.add_argument("--input_field", default=None, metavar="COLUMN",
                          help="json: the column holding the optional input; default context when present")
        data.add_argument("--response_field", default=None, metavar="COLUMN",
                          help="json: the column holding the response (never empty); default response")
        data.add_argument("--category_field", default=None, metavar="COLUMN",
                          help="json: the category column (Dirichlet split, --eval_category); default category "
                          "when present")
        data.add_argument("--client_field", default=None, metavar="COLUMN",
                          help="json with --iid client: the column naming each record's client; default client")
        data.add_argument("--eval_category", default=None, metavar="NAME",
                          help="Dolly/json: hold out this category for evaluation (instead of --zerotask)")
        data.add_argument("--eval_fraction", type=float, default=0.0, metavar="F",
                          help="Dolly/json: hold out a seeded fraction F of the records; json's default is 0.1 "
                          "when no held-out flag is given")
        data.add_argument("--eval_path", default=None, metavar="FILE",
                          help="Dolly/json: evaluate on this file (same formats and fields as --data_path); "
                          "all of --data_path trains")
        data.add_argument("--prompt_format", choices=PROMPT_FORMATS, default="auto",
                          help="auto (the authors': dolly for Dolly and json, alpaca/plain for NI by --use_prompts), "
                          "dolly, alpaca, plain, none (instruction and input as they are), or chat (the model's "
                          "chat template, loss on the assistant turn only)")
        data.add_argument("--dataset_subsample", type=float, default=1.0, help="fraction of training records kept")

    def check(self) -> None:
        require([
            (self.dataset in ("instruct", "dolly", "json"),
             f"--dataset {self.dataset}: expected instruct, dolly or json"),
            (self.batch_size >= 1, f"--batch_size {self.batch_size}: must be at least 1"),
            (self.max_length >= 8, f"--max_length {self.max_length}: must be at least 8"),
            (0 < self.dataset_subsample <= 1, f"--dataset_subsample {self.dataset_subsample}: must be in (0, 1]"),
        ])
        parse_iid(self.iid)
        self.check_own_data()

    def check_own_data(self) -> None:
        """The json-only and held-out flags fit --dataset and each other."""
        given = [f for f in FIELD_FLAGS if getattr(self, f) is not None]
        if given and self.dataset != "json":
            raise FedKSeedError(f"--{given[0]}: only with --dataset json")
        held_out = [f for f in EVAL_FLAGS if getattr(self, f)]
        if held_out and self.dataset == "instruct":
            raise FedKSeedError(f"--{held_out[0]}: only with --dataset dolly or json (NI holds out its test tasks)")
        if len(held_out) > 1:
            raise FedKSeedError(f"--{held_out[0]} and --{held_out[1]}: give at most one held-out set")
        if not 0 <= self.eval_fraction < 1:
            raise FedKSeedError(f"--eval_fraction {self.eval_fraction}: must be in [0, 1) (0: not used)")
        if self.client_field is not None and self.iid != "client":
            raise FedKSeedError(f"--client_field {self.client_field}: the client split needs --iid client")
        if self.iid == "client" and self.dataset != "json":
            raise FedKSeedError("--iid client: only with --dataset json (one client per value of --client_field)")
