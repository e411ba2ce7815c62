"""The ServerApp: the Flower engine's round loop. What a round sends and how the replies combine is the method's,
through a wire (fedkseed_wire.py: seed indices and scalars, sparse Delta c; array_wire.py: the tensors of FedIT and
FedAvg); this loop moves the messages, evaluates and records.

A round (SuperNodes that joined since the last one are queried and taken in first):
  1. the wire selects the round's clients, as the method does in-process.
  2.-3. collect.py: each selected client's message goes to the SuperNode hosting it (client i on partition
     i mod N; with --flower_data node, the node whose own data holds it: see discovery.py), one message per node at
     a time, its replies checked as they arrive (the wire's accept: the in-process checks); a client without a
     reply by the round's deadline (--round_timeout) or whose node failed is lost for the round (metrics.jsonl:
     lost).
  4. With at least --min_replies accepted, the accepted uploads, in the order of the selection (the in-process
     engine's, so the float sums are the same), are combined by the wire; with fewer, the run stops with an error
     and the model unchanged (--resume continues from the last checkpoint).
"""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from checkpoint import RunState, TensorState, load_checkpoint
from errors import FedKSeedError
from flower_app import messages
from flower_app.array_wire import ArrayWire
from flower_app.collect import collect
from flower_app.discovery import discover
from flower_app.fedkseed_wire import FedKSeedWire
from flower_app.node import read_run_file
from flower_app.traffic import traffic_row, traffic_summary
from modeling import load_model, load_tokenizer
from optimizers.seed_pool import make_seed_pool
from run_evaluation import RoundEvaluator
from run_files import MetricsFile
from simulation import build_clients, cost_metrics, open_run_dir
from streams import stream
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
    """The round loop of the in-process engine (simulation.run), with clients reached through a Flower Grid."""

    def __init__(self, args, grid: Grid, expected_nodes: int, resume: RunState | TensorState | None = None):
        self.args = args
        self.grid = grid
        self.expected_nodes = expected_nodes
        self.resume = resume
        self.known_nodes: set[int] = set()  # every node id queried so far

    # --- set-up -------------------------------------------------------------------------------------------------

    def run(self) -> dict:
        args = self.args
        out = open_run_dir(args, self.resume)
        self.tokenizer = load_tokenizer(args.model)
        model = load_model(args.model, args.dtype, args.device)
        self.wire = wire = (FedKSeedWire if args.method == "fedkseed" else ArrayWire)(args, model)
        self.clients, self.evaluator = self.set_up_clients(wire.fingerprint)
        wire.start(self.clients, self.resume)
        metrics = MetricsFile(out / "metrics.jsonl", fresh=self.resume is None)
        if self.resume is not None:
            metrics.keep_rounds_up_to(wire.round)
            logger.info("resumed %s at round %d", out, wire.round)
        logger.info("Flower: %d clients on %d SuperNodes (%s), %d evaluation examples", len(self.clients),
                    len(set(self.hosts.values())), args.method, len(self.evaluator))

        if args.eval_base and self.resume is None:
            wire.base_eval = self.run_eval(0, args.eval_metric)
            metrics.write({"round": 0, **wire.base_eval})
        row, traffic = {}, []
        for round_idx in range(wire.round + 1, args.rounds + 1):
            start = time.time()
            row = self.round(round_idx)
            final = round_idx == args.rounds and not row.get("aborted")
            metric = None if row.get("aborted") else self.evaluator.metric_due(round_idx)
            if metric is not None:
                row.update(self.run_eval(round_idx, metric))
            row["seconds"] = round(time.time() - start, 3)
            metrics.write(row)
            if row.get("aborted"):
                raise FedKSeedError(
                    f"round {round_idx}: {len(row['clients'])} of {len(row['selected'])} replies accepted "
                    f"({len(row['lost'])} lost, {len(row['rejected'])} rejected), fewer than --min_replies "
                    f"{args.min_replies}; the run stopped with the model as after round {round_idx - 1}: "
                    f"--resume {out}")
            logger.info("round %d: train loss %.4f, %d/%d clients accepted, %d rejected, %d lost, %.0f B down, "
                        "%.0f B up per client (serialized messages)", round_idx, row["train_loss"],
                        len(row["clients"]), len(row["selected"]), len(row["rejected"]), len(row["lost"]),
                        row["bytes_down_per_client"], row["bytes_up_per_client"])
            traffic.append(row)
            if final or (args.save_every and round_idx % args.save_every == 0):
                wire.save(out)

        summary = {"base": wire.base_eval, "final": {k: row[k] for k in ("eval_loss", "rouge_l") if k in row},
                   "rounds": args.rounds, **wire.finish(out), "engine": "flower",
                   "communication": traffic_summary(traffic)}
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return {"summary": summary, **wire.result()}

    def set_up_clients(self, fingerprint: str) -> tuple[list, RoundEvaluator]:
        """Discover the SuperNodes (discovery.discover) and the clients they host, and load the evaluation set:
        from the server's copy of the data (shared), or from --eval_path alone (node data)."""
        args = self.args
        pool = messages.array_digest(make_seed_pool(args.K, stream(args.seed, "server")))  # the server's first draw
        found = discover(self.grid, self.expected_nodes, args.flower_timeout, fingerprint, pool)
        for node in found.nodes:
            self.wire.add_node(node)
        self.known_nodes.update(found.nodes)
        self.fingerprint, self.pool_digest = fingerprint, pool
        if args.flower_data == "node":
            clients, self.hosts = found.remote_clients()
            self.names = {c.client_id: c.name for c in clients}
            self.name_ids = {c.name: c.client_id for c in clients}
            return clients, RoundEvaluator(args, load_eval_records(args), self.tokenizer)
        self.hosts, self.names, self.name_ids = found.hosts, {}, {}
        clients, evaluator = build_clients(args, load_for_run(args), self.tokenizer)
        missing = [c.client_id for c in clients if c.client_id not in self.hosts]
        if missing:
            raise FedKSeedError(f"Flower: no SuperNode hosts clients {missing[:10]} (check num-partitions)")
        return clients, evaluator

    def query(self, nodes: list[int], hosts: dict[int, int]) -> dict[int, str]:
        """Ask nodes which clients they host and check their base model and seed pool; a node that passes hosts
        its clients from now on (in `hosts`). Returns node id -> why it was not taken."""
        queries = [Message(RecordDict({messages.QUERY_RECORD: ConfigRecord({})}), node, messages.QUERY,
                           group_id="setup") for node in nodes]
        failed = {node: "did not answer the set-up query in time" for node in nodes}
        for reply in self.grid.send_and_receive(queries, timeout=self.args.flower_timeout):
            node = reply.metadata.src_node_id
            if reply.has_error():
                failed[node] = f"failed its set-up: {reply.error.reason}"
                continue
            rec = reply.content.config_records[messages.QUERY_RECORD]
            if rec["fingerprint"] != self.fingerprint or rec["pool_digest"] != self.pool_digest:
                failed[node] = (f"(partition {rec['partition']}) holds a different base model or seed pool than the "
                                "server (fingerprint mismatch)")
                continue
            del failed[node]
            hosts.update({int(cid): node for cid in rec["clients"]})
            hosts.update({self.name_ids[name]: node for name in rec.get("names", []) if name in self.name_ids})
            self.wire.add_node(node)
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
        return self.evaluator(self.wire.global_model(), round_idx, metric,
                              progress=not self.args.quiet and sys.stderr.isatty())

    # --- a round ------------------------------------------------------------------------------------------------

    def message(self, round_idx: int, client_id: int, node: int) -> RecordDict:
        return self.wire.message(round_idx, client_id, node, self.names.get(client_id, ""))

    def accept(self, reply: Message, round_idx: int, cid: int, node: int, num_examples: int,
               reports: dict) -> str | None:
        """Check one reply (the wire's checks); returns why it is rejected, or None (its report kept)."""
        report, reason = self.wire.accept(reply.content, round_idx, cid, node, num_examples)
        if report is not None:
            reports[cid] = report
        return reason

    def resync(self, node: int) -> None:
        self.wire.resync(node)

    def round(self, round_idx: int) -> dict:
        """One round: messages out, replies checked, the accepted ones combined by the wire (unless fewer than
        --min_replies were accepted: then the row says aborted and the model is unchanged)."""
        self.refresh_nodes()
        selected = [self.clients[i] for i in self.wire.select(round_idx)]
        order = {c.client_id: n for n, c in enumerate(selected)}
        reports, rejected, lost, down, up = collect(self, round_idx, selected)
        accepted = sorted(reports.values(), key=lambda r: order[r.client_id])  # the in-process engine's order
        row = {
            "round": round_idx,
            "selected": [c.client_id for c in selected],
            "clients": [r.client_id for r in accepted],
            "rejected": rejected,
            "lost": lost,
            **(cost_metrics(accepted) if accepted else {"train_loss": float("nan")}),
            **traffic_row(down, up),  # the measured messages, not the method's own count
        }
        if len(accepted) < min(self.args.min_replies, len(selected)):
            row["aborted"] = True
            return row
        row.update(self.wire.finish_round(round_idx, accepted))
        return row
