"""The engine flags: in process or in Flower, and a Flower run's nodes, catch-up, data placement and deadlines."""
from __future__ import annotations

from dataclasses import dataclass

from config.data import DataConfig
from config.federation import FederationConfig
from errors import require
from flag_group import FlagGroup, flag
from server import clients_per_round


@dataclass
class EngineConfig(FlagGroup):
    title = "engine"

    engine: str = flag("inprocess", "run every client in this process, or as Flower ClientApps in Flower's "
                       "simulation engine (same c bit for bit; see flower_app/)", choices=["inprocess", "flower"])
    flower_nodes: int = flag(0, "Flower: virtual SuperNodes; client i lives on node i mod N; 0 = one node per client")
    flower_catchup: str = flag("exact", "Flower: a node catches up by replaying each missed round's Delta c onto a "
                               "pristine copy (bit-identical, two model copies), or the paper's single summed change "
                               "onto its trained copy (one copy, exact only in closed form)",
                               choices=["exact", "summed"])
    flower_data: str = flag("shared", "Flower: every SuperNode reads the whole --data_path and hosts clients i mod N "
                            "(shared), or each reads only its own data (node: its node-config data-path, else "
                            "--data_path with {node} replaced by its partition id; needs --dataset json --iid client "
                            "--eval_path and --flower_nodes; the clients are the client-column values the nodes "
                            "hold)", choices=["shared", "node"])
    flower_timeout: float = flag(3600.0, "Flower: seconds the server waits for the SuperNodes at set-up, and for a "
                                 "round's replies unless --round_timeout is given")
    round_timeout: float = flag(0.0, "Flower: the round's deadline, in seconds from its start: a client whose reply "
                                "has not arrived by then is lost for the round (metrics.jsonl: lost); 0 = "
                                "--flower_timeout")
    min_replies: int = flag(1, "Flower: accepted replies a round needs to count; with fewer the run stops with an "
                            "error before changing c (continue with --resume from the last checkpoint); 0 = every "
                            "round counts, even one without replies (c unchanged)")

    def check(self) -> None:
        require([
            (self.flower_nodes >= 0, f"--flower_nodes {self.flower_nodes}: must be >= 0"),
            (self.flower_timeout > 0, f"--flower_timeout {self.flower_timeout}: must be positive"),
            (self.round_timeout >= 0, f"--round_timeout {self.round_timeout}: must be >= 0 (0 = --flower_timeout)"),
        ])

    def check_run(self, federation: FederationConfig, data: DataConfig, method: str) -> None:
        """The engine's flags against the run's clients, data and method."""
        sampled = clients_per_round(federation.m, federation.num_clients)
        require([
            (0 <= self.min_replies <= sampled, f"--min_replies {self.min_replies}: must be in [0, {sampled}], the "
             "clients sampled a round"),
            (self.flower_catchup == "exact" or method == "fedkseed", f"--flower_catchup {self.flower_catchup}: "
             f"a catch-up of Delta c; --method {method} sends its tensors whole every round"),
        ])
        if self.flower_data == "node":
            self.check_node_data(data)

    def check_node_data(self, data: DataConfig) -> None:
        """--flower_data node: the nodes hold the training data, split by client column; the server the eval file."""
        needs = [(self.engine == "flower", "--engine flower"), (data.dataset == "json", "--dataset json"),
                 (data.iid == "client", "--iid client"), (data.eval_path is not None, "--eval_path FILE"),
                 (self.flower_nodes > 0, "--flower_nodes N")]
        missing = [flag for ok, flag in needs if not ok]
        require([(not missing, f"--flower_data node: needs {', '.join(missing)} (the nodes hold the training data, "
                  "one client per client-column value; the server holds only the evaluation file)")])
