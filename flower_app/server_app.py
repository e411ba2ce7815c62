"""The ServerApp: the Flower engine is the round loop of rounds.py with a transport that reaches the clients
through a Flower Grid (FlowerClients). What a round sends and how the replies are checked is the method's, through
its wire (fedkseed_wire.py: seed indices and scalars, sparse Delta c; array_wire.py: the tensors of FedIT and
FedAvg); the transport moves the messages and measures them.

A round (SuperNodes that joined since the last one are queried and taken in first):
  1. the method selects the round's clients, as in-process.
  2.-3. collect.py: each selected client's message goes to the SuperNode hosting it (client i on partition
     i mod N; with --flower_data node, the node whose own data holds it: see discovery.py), one message per node at
     a time, its replies checked as they arrive (the wire's accept: the in-process checks); a client without a
     reply by the round's deadline (--round_timeout) or whose node failed is lost for the round (metrics.jsonl:
     lost).
  4. With at least --min_replies accepted, the accepted uploads, in the order of the selection (the in-process
     engine's, so the float sums are the same), are combined by the method; with fewer, the run stops with an error
     and the model unchanged (--resume continues from the last checkpoint).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from checkpoint import RunState, TensorState, load_checkpoint
from errors import FedKSeedError
from flower_app import wire
from flower_app.array_wire import ArrayWire
from flower_app.collect import collect
from flower_app.discovery import discover
from flower_app.fedkseed_wire import FedKSeedWire
from flower_app.run_file import read_run_file
from flower_app.traffic import traffic_row, traffic_summary
from methods import Method, build_method
from methods.base import ArrayMethod
from methods.fedkseed import FedKSeed
from modeling import load_model, load_tokenizer
from optimizers.seed_pool import make_seed_pool
from rounds import RoundWork, run_rounds
from run_data import training_clients
from run_evaluation import RoundEvaluator
from run_files import open_run_dir
from streams import stream
from utils_data.load_data import load_eval_records, load_for_run

if TYPE_CHECKING:
    from config import RunConfig

logger = logging.getLogger("fedkseed")

RESULTS: dict[str, dict] = {}  # output_dir -> what run() returns (read back by engine.run_flower)

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg, doc = read_run_file(context)
    resume = load_checkpoint(Path(doc["resume"])) if doc.get("resume") else None
    try:
        RESULTS[str(cfg.output.output_dir)] = serve(cfg, grid, int(doc.get("expected_nodes") or 1), resume)
    except FedKSeedError as exc:
        RESULTS[str(cfg.output.output_dir)] = {"error": str(exc)}
        logger.error("error: %s", exc)
        raise


def serve(cfg: RunConfig, grid: Grid, expected_nodes: int, resume: RunState | TensorState | None = None) -> dict:
    """The run with its clients on the Grid's SuperNodes; returns the summary and the method."""
    out = open_run_dir(cfg, resume)
    tokenizer = load_tokenizer(cfg.model.model)
    model = load_model(cfg.model.model, cfg.model.dtype, cfg.model.device)
    transport = FlowerClients(cfg, grid, expected_nodes)
    clients, evaluator = transport.set_up(tokenizer)
    method = build_method(cfg, model, clients, resume)
    transport.admit(method)
    logger.info("Flower: %d clients on %d SuperNodes (%s), %d evaluation examples", len(clients),
                len(set(transport.hosts.values())), cfg.method.method, len(evaluator))
    return run_rounds(cfg, method, transport, evaluator, out, resumed=resume is not None)


def wire_for(method: Method) -> FedKSeedWire | ArrayWire:
    """The method's side of the messages: FedKSeed's compact records, or named arrays."""
    if isinstance(method, FedKSeed):
        return FedKSeedWire(method)
    if isinstance(method, ArrayMethod):
        return ArrayWire(method)
    raise FedKSeedError(f"--engine flower: no Flower messages for --method {method.name}")


class FlowerClients:
    """The transport of the Flower engine: clients on SuperNodes, reached through a Flower Grid."""

    def __init__(self, cfg: RunConfig, grid: Grid, expected_nodes: int):
        self.cfg = cfg
        self.grid = grid
        self.expected_nodes = expected_nodes
        self.known_nodes: set[int] = set()  # every node id queried so far

    # --- set-up -------------------------------------------------------------------------------------------------

    def set_up(self, tokenizer) -> tuple[list, RoundEvaluator]:
        """Discover the SuperNodes (discovery.discover) and the clients they host, and load the evaluation set:
        from the server's copy of the data (shared), or from --eval_path alone (node data)."""
        cfg = self.cfg
        self.found = found = discover(self.grid, self.expected_nodes, cfg.engine.flower_timeout)
        self.known_nodes.update(found.nodes)
        if cfg.engine.flower_data == "node":
            clients, self.hosts = found.remote_clients()
            self.names = {c.client_id: c.name for c in clients}
            self.name_ids = {c.name: c.client_id for c in clients}
            self.clients = {c.client_id: c for c in clients}
            return clients, RoundEvaluator(cfg, load_eval_records(cfg.data), tokenizer)
        self.hosts, self.names, self.name_ids = found.hosts, {}, {}
        data = load_for_run(cfg)
        clients, evaluator = training_clients(cfg, data, tokenizer), RoundEvaluator(cfg, data.eval_records, tokenizer)
        missing = [c.client_id for c in clients if c.client_id not in self.hosts]
        if missing:
            raise FedKSeedError(f"Flower: no SuperNode hosts clients {missing[:10]} (check num-partitions)")
        self.clients = {c.client_id: c for c in clients}
        return clients, evaluator

    def admit(self, method: Method) -> None:
        """Check that every node holds the method's base model and the seed pool; its messages go through its
        wire from now on."""
        self.fingerprint = method.fingerprint
        pool = make_seed_pool(self.cfg.method.K, stream(self.cfg.federation.seed, "server"))
        self.pool_digest = wire.array_digest(pool)
        self.found.check(self.fingerprint, self.pool_digest)
        self.wire = wire_for(method)
        for node in self.found.nodes:
            self.wire.add_node(node)

    def query(self, nodes: list[int]) -> dict[int, str]:
        """Ask nodes which clients they host and check their base model and seed pool; a node that passes hosts
        its clients from now on (in self.hosts). Returns node id -> why it was not taken."""
        failed = {node: "did not answer the set-up query in time" for node in nodes}
        for reply in self.grid.send_and_receive(wire.query_messages(nodes), timeout=self.cfg.engine.flower_timeout):
            node = reply.metadata.src_node_id
            if reply.has_error():
                failed[node] = f"failed its set-up: {reply.error.reason}"
                continue
            rec = reply.content.config_records[wire.QUERY_RECORD]
            if rec["fingerprint"] != self.fingerprint or rec["pool_digest"] != self.pool_digest:
                failed[node] = (f"(partition {rec['partition']}) holds a different base model or seed pool than the "
                                "server (fingerprint mismatch)")
                continue
            del failed[node]
            self.hosts.update({int(cid): node for cid in rec["clients"]})
            self.hosts.update({self.name_ids[name]: node for name in rec.get("names", []) if name in self.name_ids})
            self.wire.add_node(node)
        self.known_nodes.update(nodes)
        return failed

    def refresh_nodes(self) -> None:
        """Take in SuperNodes that connected since the last round (a restarted node registers anew): they host
        their partition's clients from this round, starting from their own state (they say what they hold)."""
        new = sorted(set(self.grid.get_node_ids()) - self.known_nodes)
        if new:
            for node, reason in self.query(new).items():
                logger.warning("Flower: not taking in SuperNode %d: %s", node, reason)
            logger.info("Flower: SuperNodes %s joined; %d clients on %d nodes", new, len(self.hosts),
                        len(set(self.hosts.values())))

    # --- a round ------------------------------------------------------------------------------------------------

    def run_round(self, method: Method, round_idx: int, selected: list[int], progress: bool) -> RoundWork:
        """Messages out, replies checked (the accepted ones in the order of the selection); fewer than
        --min_replies accepted aborts the round."""
        self.refresh_nodes()
        order = {cid: n for n, cid in enumerate(selected)}
        reports, rejected, lost, down, up = collect(self, round_idx, [self.clients[cid] for cid in selected])
        accepted = sorted(reports.values(), key=lambda r: order[r.client_id])  # the in-process engine's order
        row = {"selected": selected, "rejected": rejected, "lost": lost,
               **traffic_row(down, up)}  # the measured messages, not the method's own count
        aborted = None
        if len(accepted) < min(self.cfg.engine.min_replies, len(selected)):
            aborted = (f"{len(accepted)} of {len(selected)} replies accepted ({len(lost)} lost, {len(rejected)} "
                       f"rejected), fewer than --min_replies {self.cfg.engine.min_replies}")
        logger.info("round %d: %d/%d clients accepted, %d rejected, %d lost (serialized messages)", round_idx,
                    len(accepted), len(selected), len(rejected), len(lost))
        return RoundWork(accepted, row, aborted)

    def summary(self, rows: list[dict]) -> dict:
        return {"engine": "flower", "communication": traffic_summary(rows)}
