"""The ServerApp: server.Server drives the run (sampling, aggregation, c, Pro probabilities) and
evaluations.evaluate scores it; Flower carries only the round config, sparse Delta c and (seed index, g) pairs.

A round:
  1. server.select_clients() and server.train_config(r), as in simulation.py.
  2. Each selected client's instruction goes to the SuperNode that hosts it (client i on the node whose
     partition-id is i mod num-partitions; with --flower_data node, the node whose own data holds it: see
     discovery.py), with the Delta c that node needs since the round the server last
     heard from it, and the Pro probabilities if the node does not hold this round's yet. A node hosting several
     selected clients gets them in successive waves, one message at a time, so its state stays sequential.
  3. Replies are decoded, checked (messages.decode_reply, then server.validate_update: the same check as the
     in-process engine) and a rejected one is logged and dropped; a node that reports being out of sync is
     sent the full history once more in the next wave.
  4. The accepted uploads, in the order of the selection (the in-process engine's order, so the float sums
     are the same), go to server.apply_round; the round's Delta c is recorded for later catch-ups.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from checkpoint import RunState, load_checkpoint, model_fingerprint
from errors import FedKSeedError
from evaluations import evaluate
from flower_app import messages
from flower_app.discovery import discover
from flower_app.node import read_run_file
from methods.fedkseed import checkpoint, fresh_state, restore, server_config
from modeling import load_model, load_tokenizer
from optimizers.seed_pool import make_seed_pool
from run_files import MetricsFile
from server import Server, validate_update
from simulation import build_clients, evaluation_set, open_run_dir
from streams import stream
from utils_data.llm_dataset import LLMDataset
from utils_data.load_data import load_eval_records, load_for_run

logger = logging.getLogger("fedkseed")

NODE_REPORTED = "node reported: "  # prefix of a reason the node itself sent (out of sync, ...): retried once
PAPER_BOUND_BYTES = 18_000  # the paper's title: "communication cost under 18 kilobytes" (per client per round)
RESULTS: dict[str, dict] = {}  # output_dir -> what run() returns (read back by engine.run_flower)

app = ServerApp()


def check_reply(content: RecordDict, round_idx: int, client_id: int, k: int,
                max_pairs: int) -> tuple[messages.Reply | None, str | None]:
    """Decode a train reply and check it: (decoded reply or None, why it is rejected or None).

    Byte-level checks (record present, types, element sizes, at most 4 * max_pairs bytes per array) are
    messages.decode_reply's; the upload itself (round, sample count, lengths, pair count, index range, finite g)
    is checked by server.validate_update, the same function the in-process engine uses.
    """
    try:
        decoded = messages.decode_reply(content, max_bytes=4 * max_pairs)
    except messages.WireError as exc:
        return None, str(exc)
    if decoded.error is not None:
        return decoded, f"{NODE_REPORTED}{decoded.error}"
    if decoded.update.client_id != client_id:
        return decoded, f"reply names client {decoded.update.client_id}, the message was for client {client_id}"
    return decoded, validate_update(decoded.update, k, round_idx, max_pairs)


@app.main()
def main(grid: Grid, context: Context) -> None:
    args, doc = read_run_file(context)
    resume = load_checkpoint(Path(doc["resume"])) if doc.get("resume") else None
    result = FlowerServer(args, grid, int(doc.get("expected_nodes") or 1), resume).run()
    RESULTS[str(args.output_dir)] = result


class FlowerServer:
    """simulation.run's round loop, with clients reached through a Flower Grid."""

    def __init__(self, args, grid: Grid, expected_nodes: int, resume: RunState | None = None):
        self.args = args
        self.grid = grid
        self.expected_nodes = expected_nodes
        self.resume = resume
        self.node_synced: dict[int, int] = {}  # node id -> the round the server last heard it synced to
        self.node_p_round: dict[int, int] = {}  # node id -> the round of the Pro probabilities it holds

    # --- set-up -------------------------------------------------------------------------------------------------

    def run(self) -> dict:
        args = self.args
        out = open_run_dir(args, self.resume)
        self.tokenizer = load_tokenizer(args.model)
        server_model = load_model(args.model, args.dtype, args.device)
        fingerprint = model_fingerprint(server_model)
        self.clients, self.eval_set = self.set_up_clients(fingerprint)
        compile_z = False if args.no_compile else None
        self.server = server = Server(server_model, server_config(args, len(self.clients)), compile=compile_z)
        state = fresh_state(args, server, fingerprint, self.clients)
        state.extra["engine"] = "flower"
        metrics = MetricsFile(out / "metrics.jsonl", fresh=self.resume is None)
        if self.resume is not None:
            state = restore(server, self.resume, fingerprint)
            metrics.keep_rounds_up_to(state.round)
            logger.info("resumed %s at round %d", out, state.round)
        self.state = state
        logger.info("Flower: %d clients on %d SuperNodes (%s catch-up), %d evaluation examples",
                    len(self.clients), len(set(self.hosts.values())), args.flower_catchup, len(self.eval_set))

        if args.eval_base and self.resume is None:
            state.base_eval = self.run_eval(0, args.eval_metric)
            metrics.write({"round": 0, **state.base_eval})
        row, traffic = {}, []
        for round_idx in range(state.round + 1, args.rounds + 1):
            start = time.time()
            row = self.round(round_idx)
            traffic.append(row)
            final = round_idx == args.rounds
            if final or (args.eval_every and round_idx % args.eval_every == 0):
                row.update(self.run_eval(round_idx, args.eval_metric if final else "loss"))
            row["seconds"] = round(time.time() - start, 3)
            metrics.write(row)
            logger.info("round %d: train loss %.4f, %d/%d clients accepted, %d rejected, %.0f B down, %.0f B up "
                        "per client (serialized messages)", round_idx, row["train_loss"], len(row["clients"]),
                        len(row["selected"]), len(row["rejected"]), row["bytes_down_per_client"],
                        row["bytes_up_per_client"])
            state.round = round_idx
            if final or (args.save_every and round_idx % args.save_every == 0):
                checkpoint(out, state, server)

        summary = {"base": state.base_eval,
                   "final": {k: row[k] for k in ("eval_loss", "rouge_l") if k in row},
                   "rounds": args.rounds, "method": "fedkseed-pro" if args.bias_sampling else "fedkseed",
                   "engine": "flower", "communication": self.traffic_summary(traffic)}
        if args.save:
            np.savez(out / "coefficients.npz", c=server.c, seed_pool=server.seed_pool, lr=args.lr)
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return {"summary": summary, "c": server.c.copy(), "server": server}

    def set_up_clients(self, fingerprint: str) -> tuple[list, LLMDataset]:
        """Discover the SuperNodes (discovery.discover) and the clients they host, and load the evaluation set:
        from the server's copy of the data (shared), or from --eval_path alone (node data)."""
        args = self.args
        pool = messages.array_digest(make_seed_pool(args.K, stream(args.seed, "server")))  # the server's first draw
        found = discover(self.grid, self.expected_nodes, args.flower_timeout, fingerprint, pool)
        self.node_synced = dict.fromkeys(found.nodes, 0)
        self.node_p_round = dict.fromkeys(found.nodes, -1)
        if args.flower_data == "node":
            clients, self.hosts = found.remote_clients()
            self.names = {c.client_id: c.name for c in clients}
            return clients, evaluation_set(args, load_eval_records(args), self.tokenizer)
        self.hosts, self.names = found.hosts, {}
        clients, eval_set = build_clients(args, load_for_run(args), self.tokenizer)
        missing = [c.client_id for c in clients if c.client_id not in self.hosts]
        if missing:
            raise FedKSeedError(f"Flower: no SuperNode hosts clients {missing[:10]} (check num-partitions)")
        return clients, eval_set

    def run_eval(self, round_idx: int, metric: str) -> dict:
        args = self.args
        result = evaluate(self.server.seeded.model, self.tokenizer, self.eval_set, metric, args.max_new_tokens,
                          args.eval_batch_size, progress=not args.quiet and sys.stderr.isatty())
        logger.info("round %d: %s", round_idx, "  ".join(f"{k} {v:.4f}" for k, v in result.items()))
        return result

    # --- a round ------------------------------------------------------------------------------------------------

    def instruction(self, round_idx: int, client_id: int, node: int, train_config) -> messages.Instruction:
        args, server, deltas = self.args, self.server, self.state.deltas
        base = min(self.node_synced.get(node, 0), round_idx - 1)
        if args.flower_catchup == "exact":
            groups = [(idx.astype(np.int64), val) for idx, val in deltas[base:round_idx - 1]]
        else:
            touched = [idx for idx, _ in deltas[base:round_idx - 1]]
            changed = np.unique(np.concatenate(touched)).astype(np.int64) if touched else np.zeros(0, np.int64)
            groups = [(changed, server.c[changed])]
        probs = train_config.probabilities
        pro = probs is not None
        return messages.Instruction(
            round=round_idx, client=client_id, local=train_config.local, catchup=args.flower_catchup,
            base=base, groups=groups, c_digest=messages.c_digest(server.c), pro=pro, p_round=round_idx,
            probabilities=probs if pro and self.node_p_round.get(node) != round_idx else None,
            name=self.names.get(client_id, ""))

    def round(self, round_idx: int) -> dict:
        args, server = self.args, self.server
        selected = [self.clients[i] for i in server.select_clients()]
        train_config = server.train_config(round_idx)
        order = {c.client_id: n for n, c in enumerate(selected)}
        size = {c.client_id: len(c) for c in selected}
        pending = [c.client_id for c in selected]
        retried: set[int] = set()
        updates, rejected, down, up = {}, [], [], []
        while pending:
            wave, later, busy = [], [], set()
            for cid in pending:  # one message per node at a time: a node's state changes with each message
                (later if self.hosts[cid] in busy else wave).append(cid)
                busy.add(self.hosts[cid])
            pending = later
            sent = {}
            for cid in wave:
                node = self.hosts[cid]
                content = messages.encode_instruction(self.instruction(round_idx, cid, node, train_config), args.K)
                msg = Message(content, node, messages.TRAIN, group_id=str(round_idx))
                down.append(messages.measure(msg))
                sent[cid] = msg
            replies = {r.metadata.reply_to_message_id: r for r in self.grid.send_and_receive(
                list(sent.values()), timeout=args.flower_timeout)}
            for cid, msg in sent.items():
                node = self.hosts[cid]
                reply = replies.get(msg.metadata.message_id)
                reason = None
                if reply is None:
                    reason = "no reply before --flower_timeout"
                elif reply.has_error():
                    reason = f"node error: {reply.error.reason}"
                else:
                    up.append(messages.measure(reply))
                    reason = self.accept(reply, round_idx, cid, node, size[cid], updates)
                    if reason is not None and reason.startswith(NODE_REPORTED) and cid not in retried:
                        retried.add(cid)
                        self.node_synced[node], self.node_p_round[node] = 0, -1
                        pending.append(cid)
                        logger.warning("round %d: client %d: %s; resending the full history", round_idx, cid,
                                       reason)
                        continue
                if reason is not None:
                    logger.warning("round %d: rejected the reply for client %d (node %d): %s", round_idx, cid,
                                   node, reason)
                    rejected.append({"client": cid, "reason": reason})
        for cid in updates:
            self.state.last_round[cid] = round_idx - 1
        accepted = sorted(updates.values(), key=lambda u: order[u.client_id])  # the in-process engine's order
        delta = server.apply_round(accepted)
        nonzero = np.flatnonzero(delta)
        self.state.deltas.append((nonzero.astype(np.int32), delta[nonzero]))
        row = {
            "round": round_idx,
            "selected": [c.client_id for c in selected],
            "clients": [u.client_id for u in accepted],
            "rejected": rejected,
            "train_loss": float(np.nanmean([u.mean_loss for u in accepted])) if accepted else float("nan"),
            "skipped_nan": sum(u.skipped["nan"] for u in accepted),
            "skipped_clip": sum(u.skipped["clip"] for u in accepted),
        }
        for name, sizes in (("down", down), ("up", up)):
            for level in ("message", "record", "payload"):
                values = [s[level] for s in sizes]
                key = f"bytes_{name}_per_client" if level == "message" else f"bytes_{name}_{level}_per_client"
                row[key] = float(np.mean(values)) if values else 0.0
            row[f"bytes_{name}_max"] = max((s["message"] for s in sizes), default=0)
        return row

    def accept(self, reply: Message, round_idx: int, cid: int, node: int, num_examples: int,
               updates: dict) -> str | None:
        """Check one reply and note the node's sync state; returns why it is rejected, or None (update kept)."""
        decoded, reason = check_reply(reply.content, round_idx, cid, self.args.K, self.server.max_pairs(num_examples))
        if decoded is not None and decoded.synced is not None:
            self.node_synced[node] = max(0, min(decoded.synced, round_idx - 1))
        if decoded is not None and decoded.p_round is not None:
            self.node_p_round[node] = decoded.p_round
        if reason is None:
            updates[cid] = decoded.update
        return reason

    @staticmethod
    def traffic_summary(rows: list[dict]) -> dict:
        """Mean and max bytes per client per round over the run, beside the paper's bound."""
        if not rows:
            return {}
        down = float(np.mean([r["bytes_down_per_client"] for r in rows]))
        up = float(np.mean([r["bytes_up_per_client"] for r in rows]))
        out = {
            "bytes_down_per_client_round": down, "bytes_up_per_client_round": up,
            "bytes_total_per_client_round": down + up,
            "bytes_down_max": max(r["bytes_down_max"] for r in rows),
            "bytes_up_max": max(r["bytes_up_max"] for r in rows),
            "bytes_down_payload_per_client_round": float(np.mean([r["bytes_down_payload_per_client"] for r in rows])),
            "bytes_up_payload_per_client_round": float(np.mean([r["bytes_up_payload_per_client"] for r in rows])),
            "measured_as": "Flower's serialized message object tree (deflated objects + object ids), "
                           "without gRPC/HTTP2 framing",
            "paper_bound_bytes": PAPER_BOUND_BYTES,
        }
        out["within_paper_bound"] = out["bytes_total_per_client_round"] < PAPER_BOUND_BYTES
        logger.info("communication per client per round: %.0f B down + %.0f B up = %.1f KB (max %d B down, %d B up; "
                    "paper: < 18 KB)", down, up, (down + up) / 1000, out["bytes_down_max"], out["bytes_up_max"])
        return out
