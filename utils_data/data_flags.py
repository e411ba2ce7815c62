"""The flags of your own data (--dataset json): column names, the held-out set, the prompt format; and their checks."""
from __future__ import annotations

import argparse

from errors import FedKSeedError
from utils_data.default_tokens import PROMPT_FORMATS as TEMPLATES

PROMPT_FORMATS = ("auto", *TEMPLATES)
FIELD_FLAGS = ("instruction_field", "input_field", "response_field", "category_field", "client_field")
EVAL_FLAGS = ("eval_category", "eval_fraction", "eval_path")


def add_own_data_flags(data: argparse._ArgumentGroup) -> None:
    """The flags of --dataset json (fields), the held-out set, and --prompt_format."""
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


def check_own_data_flags(args: argparse.Namespace) -> None:
    """The json-only and held-out flags fit --dataset and each other."""
    given = [f for f in FIELD_FLAGS if getattr(args, f) is not None]
    if given and args.dataset != "json":
        raise FedKSeedError(f"--{given[0]}: only with --dataset json")
    held_out = [f for f in EVAL_FLAGS if getattr(args, f)]
    if held_out and args.dataset == "instruct":
        raise FedKSeedError(f"--{held_out[0]}: only with --dataset dolly or json (NI holds out its test tasks)")
    if len(held_out) > 1:
        raise FedKSeedError(f"--{held_out[0]} and --{held_out[1]}: give at most one held-out set")
    if not 0 <= args.eval_fraction < 1:
        raise FedKSeedError(f"--eval_fraction {args.eval_fraction}: must be in [0, 1) (0: not used)")
    if args.client_field is not None and args.iid != "client":
        raise FedKSeedError(f"--client_field {args.client_field}: the client split needs --iid client")
    if args.iid == "client" and args.dataset != "json":
        raise FedKSeedError("--iid client: only with --dataset json (one client per value of --client_field)")
    if args.flower_data == "node":
        check_node_data(args)


def check_node_data(args: argparse.Namespace) -> None:
    """--flower_data node: the nodes hold the training data, split by client column; the server the eval file."""
    needs = [(args.engine == "flower", "--engine flower"), (args.dataset == "json", "--dataset json"),
             (args.iid == "client", "--iid client"), (args.eval_path is not None, "--eval_path FILE"),
             (args.flower_nodes > 0, "--flower_nodes N")]
    missing = [flag for ok, flag in needs if not ok]
    if missing:
        raise FedKSeedError(f"--flower_data node: needs {', '.join(missing)} (the nodes hold the training data, "
                            "one client per client-column value; the server holds only the evaluation file)")
