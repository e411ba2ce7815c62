"""Prepare a `flwr run` of FedKSeed: an app folder (what Flower packs into a FAB) and the run file.

    python -m flower_app.stage APP_DIR RUN_FILE --nodes N -- [main.py flags]

APP_DIR gets the project's Python sources (no tests, data or scripts) and a pyproject.toml naming the
ServerApp (flower_app.server_app:app) and the ClientApp (flower_app.client_app:app), with one run-config key,
flags-file. RUN_FILE gets the resolved flags, checked as main.py checks them. Then:

    flwr run APP_DIR CONNECTION --run-config "flags-file='RUN_FILE'" --stream

A SuperNode may point the run at its own copies of the base model and data, and keep its state file elsewhere,
with --node-config "partition-id=I num-partitions=N model='/path' data-path='/path' state-dir='/path'"; every
node needs the same base model bit for bit (the ServerApp checks its fingerprint) and the same data file; with
--flower_data node each node reads only its own data file (its data-path, or --data_path with {node} replaced by
its partition-id). A run stopped by a fault continues with a new `flwr run` of a run file staged with
`-- --resume RUN_DIR`.
scripts/flower_deploy_local.sh does all of it on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("config", "flower_app", "methods", "optimizers", "utils_data")

PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fedkseed"
version = "1.0.0"
description = "FedKSeed / FedKSeed-Pro (arXiv 2312.06353) as a Flower app: only seeds and scalar gradients on the wire"
license = "Apache-2.0"
# the SuperLink runs with --disable-runtime-dependency-installation: the nodes use the installed requirements.txt
dependencies = []

[tool.flwr.app]
publisher = "fedkseed"

[tool.flwr.app.components]
serverapp = "flower_app.server_app:app"
clientapp = "flower_app.client_app:app"

[tool.flwr.app.config]
flags-file = ""
"""


def stage_app(app_dir: Path) -> Path:
    """Copy the sources the apps import into app_dir, with the Flower pyproject.toml."""
    app_dir = Path(app_dir)
    if app_dir.exists():
        shutil.rmtree(app_dir)
    app_dir.mkdir(parents=True)
    for path in ROOT.glob("*.py"):
        shutil.copy2(path, app_dir / path.name)
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            target = app_dir / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    shutil.copy2(ROOT / "LICENSE", app_dir / "LICENSE")
    (app_dir / "pyproject.toml").write_text(PYPROJECT)
    return app_dir


def prepare(app_dir: Path, run_file: Path, nodes: int, flags: list[str]) -> RunConfig:
    """Check the flags as main.py does (a --resume run takes its checkpoint's flags), stage the app folder and
    write the run file; returns the run's flags. Raises FedKSeedError on bad input."""
    sys.path.insert(0, str(ROOT))
    from config import RunConfig, from_command_line
    from flower_app.run_file import write_run_file

    cfg, _ = from_command_line(flags + ["--engine", "flower"])
    resolved = cfg.flags()
    for name in ("model", "data_path", "eval_path", "output_dir", "resume"):  # a data path may be a glob or
        value = resolved[name]  # hold {node}; a model may be a builtin name
        if value is not None and (Path(value).exists() or name not in ("model", "resume")):
            resolved[name] = str(Path(value).resolve())
    cfg = RunConfig.from_flags(resolved)
    stage_app(app_dir)
    run_file.parent.mkdir(parents=True, exist_ok=True)
    write_run_file(run_file, cfg, nodes, resume=cfg.output.resume)
    return cfg


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    own, flags = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(description="stage a `flwr run` of FedKSeed")
    p.add_argument("app_dir", type=Path)
    p.add_argument("run_file", type=Path)
    p.add_argument("--nodes", type=int, required=True, help="SuperNodes the ServerApp waits for")
    opts = p.parse_args(own)
    sys.path.insert(0, str(ROOT))
    from errors import FedKSeedError

    try:
        cfg = prepare(opts.app_dir, opts.run_file, opts.nodes, flags)
    except FedKSeedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(cfg.output.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
