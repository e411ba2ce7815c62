"""The data flags: which records, how they are split into clients and held out, and how a prompt is built."""
from __future__ import annotations

from dataclasses import dataclass

from errors import FedKSeedError, require
from flag_group import FlagGroup, flag
from utils_data.default_tokens import PROMPT_FORMATS as TEMPLATES
from utils_data.partition_data import parse_iid

PROMPT_FORMATS = ("auto", *TEMPLATES)
FIELD_FLAGS = ("instruction_field", "input_field", "response_field", "category_field", "client_field")
EVAL_FLAGS = ("eval_category", "eval_fraction", "eval_path")


@dataclass
class DataConfig(FlagGroup):
    title = "data"

    dataset: str = flag("instruct", "instruct (Natural Instructions), dolly, or json (your own data: see --data_path)")
    data_path: str = flag("./data", "folder with natural-instructions/ or databricks-dolly-15k.jsonl, or a Dolly "
                          ".jsonl file; --dataset json: a .jsonl/.json/.csv/.parquet file, a glob of them, or a "
                          "save_to_disk folder")
    batch_size: int = flag(1, "examples per MeZO step")
    max_length: int = flag(1024, "token limit of a training example (and the character limit of an NI input, as in "
                           "the paper)")
    use_prompts: bool = flag(True, "Natural Instructions: the Alpaca template (on), or '{definition} Input: ... "
                             "Output:' (--use_prompts false / --no_use_prompts); Dolly is always templated, as the "
                             "authors' code", negatable=True)
    iid: str = flag("dir0.5", "Dolly/json split: dir<alpha> (Dirichlet over categories), 0 (IID), or client (json: "
                    "one client per value of --client_field; --num_clients ignored)")
    zerotask: int = flag(7, "index (sorted name order) of the Dolly category held out for evaluation; 7 = "
                         "summarization")
    instruction_field: str | None = flag(None, "json: the column holding the instruction; default instruction",
                                         metavar="COLUMN")
    input_field: str | None = flag(None, "json: the column holding the optional input; default context when "
                                   "present", metavar="COLUMN")
    response_field: str | None = flag(None, "json: the column holding the response (never empty); default response",
                                      metavar="COLUMN")
    category_field: str | None = flag(None, "json: the category column (Dirichlet split, --eval_category); default "
                                      "category when present", metavar="COLUMN")
    client_field: str | None = flag(None, "json with --iid client: the column naming each record's client; default "
                                    "client", metavar="COLUMN")
    eval_category: str | None = flag(None, "Dolly/json: hold out this category for evaluation (instead of "
                                     "--zerotask)", metavar="NAME")
    eval_fraction: float = flag(0.0, "Dolly/json: hold out a seeded fraction F of the records; json's default is 0.1 "
                                "when no held-out flag is given", metavar="F")
    eval_path: str | None = flag(None, "Dolly/json: evaluate on this file (same formats and fields as --data_path); "
                                 "all of --data_path trains", metavar="FILE")
    prompt_format: str = flag("auto", "auto (the authors': dolly for Dolly and json, alpaca/plain for NI by "
                              "--use_prompts), dolly, alpaca, plain, none (instruction and input as they are), or "
                              "chat (the model's chat template, loss on the assistant turn only)",
                              choices=PROMPT_FORMATS)
    dataset_subsample: float = flag(1.0, "fraction of training records kept")

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
