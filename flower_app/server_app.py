"""The ServerApp: server.Server drives the run (sampling, aggregation, c, Pro probabilities) and
evaluations.evaluate scores it; Flower carries only the round config, sparse Delta c and (seed index, g) pairs.

A round (SuperNodes that joined since the last one are queried and taken in first):
  1. server.select_clients() and server.train_config(r), as in simulation.py.
  2.-3. collect.py: each selected client's instruction goes to the SuperNode hosting it (client i on partition
     i mod N; with --flower_data node, the node whose own data holds it: see discovery.py), one message per node at
     a time, its replies checked as they arrive (messages.check_reply: server.validate_update, as in-process); a
     client without a reply by the round's deadline (--round_timeout) or whose node failed is lost for the round
     (metrics.jsonl: lost).
  4. With at least --min_replies accepted, the accepted uploads, in the order of the selection (the in-process
     engine's, so the float sums are the same), go to server.apply_round and the round's Delta c is recorded;
     with fewer, the run stops with an error and c unchanged (--resume continues from the last checkpoint).
"""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from checkpoint import RunState, load_checkpoint, model_fingerprint
from errors import FedKSeedError
from evaluations import evaluate
from flower_app import messages
from flower_app.collect import collect
from flower_app.discovery import discover
from flower_app.messages import check_reply
from flower_app.node import read_run_file
from flower_app.traffic import traffic_row, traffic_summary
from methods.fedkseed import checkpoint, fresh_state, restore, server_config
from modeling import load_model, load_tokenizer
from optimizers.seed_pool import make_seed_pool
from run_files import MetricsFile
from server import Server
from simulation import build_clients, evaluation_set, open_run_dir
from streams import stream
from utils_data.llm_dataset import LLMDataset
from utils_data.load_data import load_eval_records, load_for_run

logger = logging.getLogger("fedkseed")

RESULTS: dict[str, dict] = {}  # output_dir -> what run() returns (read back by engine.run_flower)

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    args, doc = read_run_file(context)
    resume = load_checkpoint(Path(doc["resume"])) if doc.get("resume") else None
    try:
        RESULTS[str(args.output_dir)] = FlowerServer(args, grid, int(doc.get("expected_nodes") or 1), resume).run()
    except FedKSeedError as exc:
        RESULTS[str(args.output_dir)] = {"error": str(exc)}
        logger.error("error: %s", exc)
        raise


class FlowerServer:
    """simulation.run's round loop, with clients reached through a Flower Grid."""

    def __init__(self, args, grid: Grid, expected_nodes: int, resume: RunState | None = None):
        self.args = args
        self.grid = grid
        self.expected_nodes = expected_nodes
        self.resume = resume
        self.node_synced: dict[int, int] = {}  # node id -> the round the server last heard it synced to
        self.node_p_round: dict[int, int] = {}  # node id -> the round of the Pro probabilities it holds
        self.known_nodes: set[int] = set()  # every node id queried so far

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
            final = round_idx == args.rounds and not row.get("aborted")
            if not row.get("aborted") and (final or (args.eval_every and round_idx % args.eval_every == 0)):
                row.update(self.run_eval(round_idx, args.eval_metric if final else "loss"))
            row["seconds"] = round(time.time() - start, 3)
            metrics.write(row)
            if row.get("aborted"):
                raise FedKSeedError(
                    f"round {round_idx}: {len(row['clients'])} of {len(row['selected'])} replies accepted "
                    f"({len(row['lost'])} lost, {len(row['rejected'])} rejected), fewer than --min_replies "
                    f"{args.min_replies}; the run stopped with c as after round {round_idx - 1}: --resume {out}")
            logger.info("round %d: train loss %.4f, %d/%d clients accepted, %d rejected, %d lost, %.0f B down, "
                        "%.0f B up per client (serialized messages)", round_idx, row["train_loss"],
                        len(row["clients"]), len(row["selected"]), len(row["rejected"]), len(row["lost"]),
                        row["bytes_down_per_client"], row["bytes_up_per_client"])
            traffic.append(row)
            state.round = round_idx
            if final or (args.save_every and round_idx % args.save_every == 0):
                checkpoint(out, state, server)

        summary = {"base": state.base_eval,
                   "final": {k: row[k] for k in ("eval_loss", "rouge_l") if k in row},
                   "rounds": args.rounds, "method": "fedkseed-pro" if args.bias_sampling else "fedkseed",
                   "engine": "flower", "communication": traffic_summary(traffic)}
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
        self.known_nodes.update(found.nodes)
        self.fingerprint = fingerprint
        if args.flower_data == "node":
            clients, self.hosts = found.remote_clients()
            self.names = {c.client_id: c.name for c in clients}
            self.name_ids = {c.name: c.client_id for c in clients}
            return clients, evaluation_set(args, load_eval_records(args), self.tokenizer)
        self.hosts, self.names, self.name_ids = found.hosts, {}, {}
        clients, eval_set = build_clients(args, load_for_run(args), self.tokenizer)
        missing = [c.client_id for c in clients if c.client_id not in self.hosts]
        if missing:
            raise FedKSeedError(f"Flower: no SuperNode hosts clients {missing[:10]} (check num-partitions)")
        return clients, eval_set

    def query(self, nodes: list[int], hosts: dict[int, int]) -> dict[int, str]:
        """Ask nodes which clients they host and check their base model and seed pool; a node that passes hosts
        its clients from now on (in `hosts`). Returns node id -> why it was not taken."""
        queries = [Message(RecordDict({messages.QUERY_RECORD: ConfigRecord({})}), node, messages.QUERY,
                           group_id="setup") for node in nodes]
        failed = {node: "did not answer the set-up query in time" for node in nodes}
        pool = messages.array_digest(self.server.seed_pool)
        for reply in self.grid.send_and_receive(queries, timeout=self.args.flower_timeout):
            node = reply.metadata.src_node_id
            if reply.has_error():
                failed[node] = f"failed its set-up: {reply.error.reason}"
                continue
            rec = reply.content.config_records[messages.QUERY_RECORD]
            if rec["fingerprint"] != self.fingerprint or rec["pool_digest"] != pool:
                failed[node] = (f"(partition {rec['partition']}) holds a different base model or seed pool than the "
                                "server (fingerprint mismatch)")
                continue
            del failed[node]
            hosts.update({int(cid): node for cid in rec["clients"]})
            hosts.update({self.name_ids[name]: node for name in rec.get("names", []) if name in self.name_ids})
            self.node_synced[node], self.node_p_round[node] = 0, -1
        self.known_nodes.update(nodes)
        return failed

    def refresh_nodes(self) -> None:
        """Take in SuperNodes that connected since the last round (a restarted node registers anew): they host
        their partition's clients from this round, starting from their own state (they say what they hold)."""
        new = sorted(set(self.grid.get_node_ids()) - self.known_nodes)
        if new:
            for node, reason in self.query(new, self.hosts).items():
                logger.warning("Flower: not taking in SuperNode %d: %s", node, reason)
            logger.info("Flower: SuperNodes %s joined; %d clients on %d nodes", new, len(self.hosts),
                        len(set(self.hosts.values())))

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
        return messages.Instruction(
            round=round_idx, client=client_id, local=train_config.local, catchup=args.flower_catchup,
            base=base, groups=groups, c_digest=messages.c_digest(server.c), pro=probs is not None, p_round=round_idx,
            probabilities=probs if probs is not None and self.node_p_round.get(node) != round_idx else None,
            name=self.names.get(client_id, ""))

    def round(self, round_idx: int) -> dict:
        """One round: instructions out, replies checked, the accepted ones aggregated into c (unless fewer than
        --min_replies were accepted: then the row says aborted and c is unchanged)."""
        args, server = self.args, self.server
        self.refresh_nodes()
        selected = [self.clients[i] for i in server.select_clients()]
        order = {c.client_id: n for n, c in enumerate(selected)}
        updates, rejected, lost, down, up = collect(self, round_idx, selected, server.train_config(round_idx))
        accepted = sorted(updates.values(), key=lambda u: order[u.client_id])  # the in-process engine's order
        row = {
            "round": round_idx,
            "selected": [c.client_id for c in selected],
            "clients": [u.client_id for u in accepted],
            "rejected": rejected,
            "lost": lost,
            "train_loss": float(np.nanmean([u.mean_loss for u in accepted])) if accepted else float("nan"),
            "skipped_nan": sum(u.skipped["nan"] for u in accepted),
            "skipped_clip": sum(u.skipped["clip"] for u in accepted),
            **traffic_row(down, up),
        }
        if len(accepted) < min(args.min_replies, len(selected)):
            row["aborted"] = True
            return row
        for cid in updates:
            self.state.last_round[cid] = round_idx - 1
        delta = server.apply_round(accepted)
        nonzero = np.flatnonzero(delta)
        self.state.deltas.append((nonzero.astype(np.int32), delta[nonzero]))
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
