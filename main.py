"""FedKSeed / FedKSeed-Pro in one process: `python main.py --help` lists the flags."""
from __future__ import annotations

import copy
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import config
from client import Client
from errors import FedKSeedError
from evaluations import evaluate
from modeling import load_model, load_tokenizer
from optimizers.seed_pool import SeededModel
from server import Server, ServerConfig
from utils_data.llm_dataset import LLMDataset
from utils_data.load_data import load_federated_data

logger = logging.getLogger("fedkseed")


def setup_logging(args) -> None:
    """Log lines to stderr, and to <output_dir>/train.log with --log."""
    handlers = [logging.StreamHandler(sys.stderr)]
    if args.log:
        handlers.append(logging.FileHandler(Path(args.output_dir) / "train.log"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        handlers=handlers, force=True)


def server_config(args, num_clients: int) -> ServerConfig:
    return ServerConfig(
        num_clients=num_clients, client_fraction=args.m, k=args.K, lr=args.lr, eps=args.zo_eps,
        local_step=args.local_step, batch_or_epoch=args.batch_or_epoch, batch_size=args.batch_size,
        grad_clip=args.grad_clip, equal_weight=args.equal_weight, bias_sampling=args.bias_sampling,
        bias_loss_clip=args.bias_loss_clip, grad_initial=args.grad_initial, perturbation=args.perturbation,
        seed=args.seed,
    )


def eval_subset(records: list[dict], n: int, seed: int) -> list[dict]:
    """The first n held-out records of a seeded shuffle (all of them when n is 0)."""
    if n == 0 or n >= len(records):
        return records
    order = np.random.default_rng([seed, 1]).permutation(len(records))[:n]
    return [records[i] for i in sorted(order)]


def bytes_up(update) -> int:
    """Upload size: one int32 seed index and one float32 scalar gradient a step, plus the sample count."""
    return 8 * len(update.seed_indices) + 8


def bytes_down(server: Server, last_c: np.ndarray) -> int:
    """Download size: the changed entries of c since the client last synced (int32 index, float64 value),
    plus the Pro probabilities (float32 each) when seeds are sampled by them."""
    changed = int(np.count_nonzero(server.c - last_c))
    return 12 * changed + (4 * server.config.k if server.history is not None else 0)


class MetricsFile:
    """metrics.jsonl: one JSON object a line, flushed as it is written."""

    def __init__(self, path: Path):
        self.file = path.open("a")

    def write(self, row: dict) -> None:
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()


def run(args) -> dict:
    torch.manual_seed(args.seed)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    setup_logging(args)
    (out / "config.json").write_text(json.dumps(vars(args), indent=2) + "\n")
    show = not args.quiet and sys.stderr.isatty()

    data = load_federated_data(args.dataset, args.data_path, args.num_clients, args.iid, args.zerotask,
                               args.dataset_subsample, args.max_length, args.seed)
    tokenizer = load_tokenizer(args.model)
    pad_id = tokenizer.pad_token_id
    clients = [Client(i, LLMDataset(records, tokenizer, args.use_prompts, args.max_length), pad_id, args.seed)
               for i, records in enumerate(data.clients)]
    clients = [c for c in clients if len(c) > 0]
    eval_set = LLMDataset(eval_subset(data.eval_records, args.eval_examples, args.seed), tokenizer,
                          args.use_prompts, args.max_length)
    if not clients or len(eval_set) == 0:
        raise FedKSeedError("no usable training or evaluation examples after tokenisation")
    logger.info("%d clients (%d training examples), %d evaluation examples, %s on %s (%s)",
                len(clients), sum(len(c) for c in clients), len(eval_set), args.model, args.device, args.dtype)

    compile_z = False if args.no_compile else None
    server_model = load_model(args.model, args.dtype, args.device)
    server = Server(server_model, server_config(args, len(clients)), compile=compile_z)
    work = SeededModel(copy.deepcopy(server_model), server.seed_pool, args.lr, kind=args.perturbation,
                       compile=compile_z)
    last_c = {c.client_id: np.zeros(args.K) for c in clients}
    metrics = MetricsFile(out / "metrics.jsonl")

    def run_eval(round_idx: int, metric: str) -> dict:
        result = evaluate(server.seeded.model, tokenizer, eval_set, metric, args.max_new_tokens,
                          args.eval_batch_size, args.use_prompts, progress=show)
        logger.info("round %d: %s", round_idx, "  ".join(f"{k} {v:.4f}" for k, v in result.items()))
        return result

    summary = {"base": run_eval(0, args.eval_metric) if args.eval_base else None}
    for round_idx in tqdm(range(1, args.rounds + 1), desc="rounds", disable=not show):
        start = time.time()
        selected = [clients[i] for i in server.select_clients()]
        train_config = server.train_config(round_idx)
        steps = math.ceil(len(selected) * args.local_step) if args.batch_or_epoch == "batch" else None
        updates, down = [], []
        with tqdm(total=steps, desc=f"round {round_idx} steps", leave=False, disable=not show) as bar:
            for client in selected:
                down.append(bytes_down(server, last_c[client.client_id]))
                if args.client_sync == "copy":
                    work.copy_from(server.seeded)
                updates.append(client.train(work, server.c, train_config, progress=bar))
                last_c[client.client_id] = server.c.copy()
        server.apply_round(updates)
        row = {
            "round": round_idx,
            "clients": [u.client_id for u in updates],
            "train_loss": float(np.nanmean([u.mean_loss for u in updates])),
            "skipped_nan": sum(u.skipped["nan"] for u in updates),
            "skipped_clip": sum(u.skipped["clip"] for u in updates),
            "bytes_down_per_client": float(np.mean(down)),
            "bytes_up_per_client": float(np.mean([bytes_up(u) for u in updates])),
        }
        final = round_idx == args.rounds
        if final or (args.eval_every and round_idx % args.eval_every == 0):
            row.update(run_eval(round_idx, args.eval_metric if final else "loss"))
        row["seconds"] = round(time.time() - start, 3)
        metrics.write(row)
        logger.info("round %d: train loss %.4f, %d clients, skipped %d nan / %d clip, %.0f B up, %.0f B down",
                    round_idx, row["train_loss"], len(updates), row["skipped_nan"], row["skipped_clip"],
                    row["bytes_up_per_client"], row["bytes_down_per_client"])
    summary["final"] = {k: row[k] for k in ("eval_loss", "rouge_l") if k in row}
    if args.save:
        np.savez(out / "coefficients.npz", c=server.c, seed_pool=server.seed_pool, lr=args.lr)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return {"summary": summary, "c": server.c, "server": server}


def main(argv: list[str] | None = None) -> int:
    args = config.build_parser().parse_args(argv)
    try:
        run(config.validate(args))
    except FedKSeedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
