"""The in-process engine: every client runs in this process on one shared client-side model copy."""
from __future__ import annotations

import copy
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from checkpoint import CHECKPOINT_FILE, RunState, model_fingerprint, save_checkpoint
from client import Client, LocalTraining
from errors import FedKSeedError
from evaluations import evaluate
from modeling import load_model, load_tokenizer
from optimizers.seed_pool import SeededModel
from run_files import MetricsFile, setup_logging, write_config
from server import Server, ServerConfig
from streams import stream
from utils_data.default_tokens import prompt_format
from utils_data.llm_dataset import LLMDataset
from utils_data.load_data import load_for_run

logger = logging.getLogger("fedkseed")


def server_config(args, num_clients: int) -> ServerConfig:
    return ServerConfig(
        num_clients=num_clients, client_fraction=args.m, k=args.K,
        local=LocalTraining(lr=args.lr, eps=args.zo_eps, local_step=args.local_step,
                            batch_or_epoch=args.batch_or_epoch, batch_size=args.batch_size, grad_clip=args.grad_clip),
        equal_weight=args.equal_weight, bias_sampling=args.bias_sampling,
        bias_loss_clip=args.bias_loss_clip, grad_initial=args.grad_initial, perturbation=args.perturbation,
        seed=args.seed, aggregation=args.aggregation, max_abs_grad=args.max_abs_grad,
        trim_fraction=args.trim_fraction,
    )


def eval_subset(records: list[dict], n: int, seed: int) -> list[dict]:
    """n held-out records from a seeded shuffle, in their original order (all of them when n is 0)."""
    if n == 0 or n >= len(records):
        return records
    order = stream(seed, "eval").permutation(len(records))[:n]
    return [records[i] for i in sorted(order)]


def bytes_up(update) -> int:
    """Upload size: one int32 seed index and one float32 scalar gradient a step, plus the sample count."""
    return 8 * len(update.seed_indices) + 8


def bytes_down(changed_seeds: int, k: int, pro: bool) -> int:
    """Download size: the changed entries of c since the client last synced (int32 index, float64 value),
    plus the Pro probabilities (float32 each) when seeds are sampled by them."""
    return 12 * changed_seeds + (4 * k if pro else 0)


def changed_since(deltas: list[tuple[np.ndarray, np.ndarray]], since_round: int) -> int:
    """How many entries of c changed after round `since_round` (the client's catch-up size)."""
    touched = [idx for idx, _ in deltas[since_round:]]
    return len(np.unique(np.concatenate(touched))) if touched else 0


def training_clients(args, data, tokenizer) -> list[Client]:
    """The clients with at least one usable example (what a Flower node needs; no evaluation set)."""
    datasets = [LLMDataset(records, tokenizer, run_prompt_format(args), args.max_length)
                for records in data.clients]
    report_dropped("training", datasets, args.max_length)
    clients = [Client(i, ds, tokenizer.pad_token_id, args.seed) for i, ds in enumerate(datasets)]
    clients = [c for c in clients if len(c) > 0]
    if not clients:
        raise FedKSeedError("no usable training examples after tokenisation (check --max_length)")
    return clients


def build_clients(args, data, tokenizer) -> tuple[list[Client], LLMDataset]:
    """The usable clients and the evaluation set."""
    return training_clients(args, data, tokenizer), evaluation_set(args, data.eval_records, tokenizer)


def evaluation_set(args, eval_records: list[dict], tokenizer) -> LLMDataset:
    """--eval_examples of the held-out records, tokenized."""
    eval_set = LLMDataset(eval_subset(eval_records, args.eval_examples, args.seed), tokenizer,
                          run_prompt_format(args), args.max_length)
    report_dropped("evaluation", [eval_set], args.max_length)
    if len(eval_set) == 0:
        raise FedKSeedError("no usable evaluation examples after tokenisation (check --max_length)")
    return eval_set


def run_prompt_format(args) -> str:
    return prompt_format(args.dataset, args.use_prompts, args.prompt_format)


def report_dropped(kind: str, datasets: list[LLMDataset], max_length: int) -> None:
    """One log line for all the records of `datasets` that cannot fit max_length tokens."""
    dropped = sum(ds.dropped for ds in datasets)
    if dropped:
        total = dropped + sum(len(ds) for ds in datasets)
        logger.info("skipped %d of %d %s records: no response token left within --max_length %d",
                    dropped, total, kind, max_length)


def open_run_dir(args, resume: RunState | None) -> Path:
    """The run directory, ready for a run (either engine): a new run never overwrites a checkpoint; logging set
    up, config.json written, torch seeded."""
    torch.manual_seed(args.seed)
    out = Path(args.output_dir)
    if resume is None and (out / CHECKPOINT_FILE).exists():
        raise FedKSeedError(f"--output_dir {out}: already holds a run; continue it with --resume {out}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_config(out / "config.json", args)
    except OSError as exc:
        raise FedKSeedError(f"--output_dir {out}: cannot write the run directory ({exc.strerror or exc})") from None
    setup_logging(out / "train.log" if args.log else None)
    return out


def fresh_state(args, server: Server, fingerprint: str, clients: list[Client]) -> RunState:
    """The run's state before its first round."""
    return RunState(round=0, fingerprint=fingerprint, flags=vars(args).copy(), seed_pool=server.seed_pool,
                    c=server.c, deltas=[], server_rng=server.rng.bit_generator.state,
                    last_round={c.client_id: 0 for c in clients})


def run(args, resume: RunState | None = None) -> dict:
    """Train for args.rounds rounds (continuing `resume` when given); returns summary, c and the server."""
    out = open_run_dir(args, resume)
    show = not args.quiet and sys.stderr.isatty()

    data = load_for_run(args)
    tokenizer = load_tokenizer(args.model)
    clients, eval_set = build_clients(args, data, tokenizer)
    logger.info("%d clients (%d training examples), %d evaluation examples, %s on %s (%s)",
                len(clients), sum(len(c) for c in clients), len(eval_set), args.model, args.device, args.dtype)

    compile_z = False if args.no_compile else None
    server_model = load_model(args.model, args.dtype, args.device)
    fingerprint = model_fingerprint(server_model)
    server = Server(server_model, server_config(args, len(clients)), compile=compile_z)
    work = SeededModel(copy.deepcopy(server_model), server.seed_pool, args.lr, kind=args.perturbation,
                       compile=compile_z, theta0=server.seeded.theta0)
    state = fresh_state(args, server, fingerprint, clients)
    metrics = MetricsFile(out / "metrics.jsonl", fresh=resume is None)
    if resume is not None:
        state = restore(server, resume, fingerprint)
        metrics.keep_rounds_up_to(state.round)
        logger.info("resumed %s at round %d", out, state.round)

    def run_eval(round_idx: int, metric: str) -> dict:
        result = evaluate(server.seeded.model, tokenizer, eval_set, metric, args.max_new_tokens,
                          args.eval_batch_size, progress=show)
        logger.info("round %d: %s", round_idx, "  ".join(f"{k} {v:.4f}" for k, v in result.items()))
        return result

    if args.eval_base and resume is None:
        state.base_eval = run_eval(0, args.eval_metric)
        metrics.write({"round": 0, **state.base_eval})
    row = {}
    for round_idx in tqdm(range(state.round + 1, args.rounds + 1), desc="rounds", disable=not show):
        start = time.time()
        selected = [clients[i] for i in server.select_clients()]
        train_config = server.train_config(round_idx)
        steps = sum(server.max_pairs(len(c)) for c in selected)
        updates, down = [], []
        with tqdm(total=steps, desc=f"round {round_idx}", unit="step", leave=False, disable=not show) as bar:
            for n, client in enumerate(selected, start=1):
                bar.set_postfix_str(f"client {n}/{len(selected)}")
                changed = changed_since(state.deltas, state.last_round[client.client_id])
                down.append(bytes_down(changed, args.K, args.bias_sampling))
                if args.client_sync == "copy":
                    work.copy_from(server.seeded)
                updates.append(client.train(work, server.c, train_config, progress=bar))
                state.last_round[client.client_id] = round_idx - 1
        delta = server.apply_round(server.accept(updates, round_idx))
        nonzero = np.flatnonzero(delta)
        state.deltas.append((nonzero.astype(np.int32), delta[nonzero]))
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
        state.round = round_idx
        if final or (args.save_every and round_idx % args.save_every == 0):
            checkpoint(out, state, server)

    summary = {"base": state.base_eval, "final": {k: row[k] for k in ("eval_loss", "rouge_l") if k in row},
               "rounds": args.rounds, "method": "fedkseed-pro" if args.bias_sampling else "fedkseed"}
    if args.save:
        np.savez(out / "coefficients.npz", c=server.c, seed_pool=server.seed_pool, lr=args.lr)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return {"summary": summary, "c": server.c, "server": server}


def checkpoint(out: Path, state: RunState, server: Server) -> None:
    """Snapshot the server's state into the run state and write it atomically."""
    state.c = server.c.copy()
    state.server_rng = server.rng.bit_generator.state
    if server.history is not None:
        state.history = (server.history.abs_sum.copy(), server.history.counts.copy())
    save_checkpoint(out / CHECKPOINT_FILE, state)


def restore(server: Server, state: RunState, fingerprint: str) -> RunState:
    """Bring a fresh server to the checkpointed round: same seeds, same RNG, same model bit for bit."""
    if state.fingerprint != fingerprint:
        raise FedKSeedError("--resume: the base model differs from the checkpoint's (fingerprint mismatch)")
    if not np.array_equal(state.seed_pool, server.seed_pool):
        raise FedKSeedError("--resume: the seed pool differs from the checkpoint's (different -K or --seed)")
    server.replay_rounds(state.deltas)
    if not np.array_equal(server.c, state.c):
        raise FedKSeedError("--resume: replaying the checkpoint's rounds does not reproduce its c (corrupt?)")
    server.rng.bit_generator.state = state.server_rng
    if server.history is not None and state.history is not None:
        server.history.abs_sum, server.history.counts = (a.copy() for a in state.history)
    return state
