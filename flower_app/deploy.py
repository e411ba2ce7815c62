"""A real Flower deployment of FedKSeed on this machine: one SuperLink and N SuperNodes on 127.0.0.1, the app
submitted with `flwr run`, and every process started here stopped at the end (its whole process group).

    python -m flower_app.deploy [--nodes N] [--port P] [--timeout S] [--secure] -- [main.py flags]
    scripts/flower_deploy_local.sh runs this.

Insecure mode (default): plain HTTP on 127.0.0.1 (--insecure everywhere), no TLS, no node authentication.
Secure mode (--secure): a CA and a SuperLink certificate for 127.0.0.1/localhost made for the run
(flower_app/secure.py); the SuperLink with TLS (--ssl-certfile/--ssl-keyfile/--ssl-ca-certfile) and
--enable-supernode-auth; each SuperNode with its own EC key pair, its public key registered first with
`flwr supernode register`, started with --root-certificates ca.pem --auth-supernode-private-key; the flwr CLI over
TLS (root-certificates in $FLWR_HOME/config.toml). Each SuperNode keeps its state file under $FLWR_HOME.
LocalDeployment is also what the slow fault and secure-mode tests drive (kill a SuperNode or the ServerApp, ...).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"
CONNECTION = "local-deployment"


class LocalDeployment:
    """SuperLink + SuperNodes on 127.0.0.1 in `work` (logs, keys, Flower home); a context manager that stops
    every process group it started."""

    def __init__(self, work: Path, port: int = 18700, secure: bool = False):
        self.work, self.port, self.secure = Path(work), port, secure
        self.flwr_home = self.work / "flwr_home"
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}
        self.next_port = port + 1  # each SuperNode serves its ClientApps' runtime API on a port of its own
        self.certs: dict[str, Path] = {}
        self.env = {**os.environ, "FLWR_HOME": str(self.flwr_home)}
        if secure:
            from flower_app.secure import make_certificates

            self.certs = make_certificates(self.work / "certs")
        self.write_cli_config()

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def write_cli_config(self, root_certificates: Path | None = None, insecure: bool | None = None) -> None:
        """The flwr CLI's connection: TLS trusting root_certificates (default: the run's CA) in secure mode, plain
        HTTP otherwise (or when `insecure` says so)."""
        plain = not self.secure if insecure is None else insecure
        tls = "insecure = true" if plain else f'root-certificates = "{root_certificates or self.certs["ca.pem"]}"'
        (self.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\naddress = "{self.address}"\n{tls}\n')

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        """Start a process in its own session (its process group holds the apps it spawns), logging to work."""
        with open(self.work / f"{name}.log", "ab") as log:  # the child keeps its own copy of the file
            self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                                start_new_session=True)
        return self.procs[name]

    def start_superlink(self) -> None:
        tls = ["--insecure"] if not self.secure else [
            "--ssl-certfile", str(self.certs["server.pem"]), "--ssl-keyfile", str(self.certs["server.key"]),
            "--ssl-ca-certfile", str(self.certs["ca.pem"]), "--enable-supernode-auth"]
        self.start("superlink", ["flower-superlink", *tls, "--host", HOST, "--port", str(self.port),
                                 "--disable-runtime-dependency-installation"])
        self.wait_until(lambda: self.flwr(["ls", CONNECTION]).returncode == 0, 60, "the SuperLink to listen")

    def node_key(self, name: str, register: bool = True) -> Path:
        """A new key pair for a SuperNode (secure mode); its public key registered with the SuperLink."""
        from flower_app.secure import make_node_key

        private, public = make_node_key(self.work / "keys", name)
        if register:
            result = self.flwr(["supernode", "register", str(public), CONNECTION])
            if result.returncode != 0:
                raise RuntimeError(f"flwr supernode register {public} failed: {result.stdout[-2000:]}")
        return private

    def start_supernode(self, i: int, partitions: int, name: str | None = None, key: Path | None = None,
                        ca: Path | None = None, extra: str = "") -> subprocess.Popen:
        """SuperNode for partition i of `partitions` (its own runtime port); secure mode: with `key` (default: a new
        registered one) and trusting `ca` (default: the run's CA)."""
        name = name or f"supernode-{i}"
        tls = ["--insecure"] if not self.secure else [
            "--root-certificates", str(ca or self.certs["ca.pem"]),
            "--auth-supernode-private-key", str(key or self.node_key(name))]
        config = f"partition-id={i} num-partitions={partitions} {extra}".strip()
        self.next_port += 1
        return self.start(name, ["flower-supernode", *tls, "--superlink", self.address, "--host", HOST,
                                 "--port", str(self.next_port - 1), "--node-config", config])

    def flwr(self, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(["flwr", *argv], env=self.env, capture_output=True, text=True, timeout=timeout)

    def submit(self, app_dir: Path, run_file: Path) -> subprocess.CompletedProcess:
        """flwr run of the staged app with its run file (retried while the SuperLink starts up)."""
        argv = ["run", str(app_dir), CONNECTION, "--run-config", f"flags-file='{run_file}'"]
        for _ in range(30):
            result = self.flwr(argv)
            if result.returncode == 0:
                return result
            time.sleep(1)
        return result

    def failed_runs(self) -> bool:
        result = self.flwr(["ls", CONNECTION])
        return result.returncode == 0 and "failed" in result.stdout.lower()

    def tree(self, name: str) -> list[int]:
        """The process `name` and all its descendants (Flower's SuperExec runs in a session of its own, and the
        ServerApp and ClientApp processes under it)."""
        children: dict[int, list[int]] = {}
        for line in subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout.splitlines():
            pid, ppid = (int(x) for x in line.split())
            children.setdefault(ppid, []).append(pid)
        found, todo = [], [self.procs[name].pid]
        while todo:
            found.append(todo.pop())
            todo.extend(children.get(found[-1], []))
        return found

    @staticmethod
    def send_signal(pids: list[int], sig: int) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # it exited since the tree was read
                os.kill(pid, sig)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal `name` and every process under it (the tree is read first: orphans lose their parent link)."""
        self.send_signal(self.tree(name), sig)
        self.procs[name].wait(timeout=30)

    def stop(self) -> int:
        """TERM, then KILL, every process started here and every process under it; returns how many were
        started here."""
        pids = [pid for name in self.procs for pid in self.tree(name)]
        self.send_signal(pids, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(proc.poll() is None for proc in self.procs.values()):
            time.sleep(0.2)
        self.send_signal(pids, signal.SIGKILL)
        for proc in self.procs.values():
            proc.wait(timeout=30)
        return len(self.procs)

    @staticmethod
    def wait_until(condition, timeout: float, what: str, every: float = 0.5) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
            time.sleep(every)

    def __enter__(self) -> LocalDeployment:
        return self

    def __exit__(self, *exc) -> None:
        count = self.stop()
        print(f"stopped {count} process groups; logs in {self.work}", file=sys.stderr)


def deploy(nodes: int, port: int, timeout: float, secure: bool, flags: list[str]) -> int:
    """Stage, start, submit, wait for summary.json, stop; 0 when the run finished."""
    from errors import FedKSeedError
    from flower_app.stage import prepare

    work = Path(tempfile.mkdtemp(prefix="fedkseed-flower."))
    try:
        cfg = prepare(work / "app", work / "flower_run.json", nodes, flags)
    except FedKSeedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = Path(cfg.output.output_dir) / "summary.json"
    with LocalDeployment(work, port, secure) as dep:
        try:
            dep.start_superlink()
            for i in range(nodes):
                dep.start_supernode(i, nodes)
            result = dep.submit(work / "app", work / "flower_run.json")
            print(result.stdout + result.stderr, file=sys.stderr)
            if result.returncode != 0:
                print(f"error: flwr run could not submit the run (see {work}/superlink.log)", file=sys.stderr)
                return 1
            dep.wait_until(lambda: summary.exists() or dep.failed_runs(), timeout, "the run", every=2)
        except (TimeoutError, RuntimeError) as exc:
            print(f"error: {exc} (see {work}/*.log and flwr log)", file=sys.stderr)
            return 1
        print(dep.flwr(["ls", CONNECTION]).stdout, file=sys.stderr)
        if not summary.exists():
            print(f"error: the run failed (see {work}/*.log and flwr log)", file=sys.stderr)
            return 1
    s = json.loads(summary.read_text())
    c = s.get("communication", {})
    print(f"run finished: {cfg.output.output_dir}", file=sys.stderr)
    print(f"per client per round: {c.get('bytes_down_per_client_round', 0):.0f} B down + "
          f"{c.get('bytes_up_per_client_round', 0):.0f} B up (serialized messages; paper: < 18 KB); final {s['final']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    own, flags = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    from config import OneLineParser

    p = OneLineParser(prog="flower_deploy_local.sh", description="FedKSeed on a local Flower deployment")
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--port", type=int, default=18700, help="SuperLink port; SuperNodes use the ports after it")
    p.add_argument("--timeout", type=float, default=900, help="seconds to wait for the run to finish")
    p.add_argument("--secure", action="store_true", help="TLS, a CA made for the run, authenticated SuperNodes")
    opts = p.parse_args(own)
    if opts.nodes < 1 or not 1024 <= opts.port <= 65000 - opts.nodes or opts.timeout <= 0:
        print("error: need --nodes >= 1, --port in [1024, 65000 - nodes], --timeout > 0", file=sys.stderr)
        return 2
    return deploy(opts.nodes, opts.port, opts.timeout, opts.secure, flags)


if __name__ == "__main__":
    sys.exit(main())
