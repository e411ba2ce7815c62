"""Every flag of a run: the paper's main.py flags with their defaults, plus this suite's own, in typed groups built
once from argparse. Each group (a module here, or a method's own flags in its home: Method.flags) declares its
flags and checks its own values; RunConfig holds them and checks the rules that join two groups; a method checks
how the flags fit it (Method.check_flags)."""
from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from checkpoint import RunState, TensorState, load_checkpoint
from config.data import DataConfig
from config.engine import EngineConfig
from config.evaluation import EvalConfig
from config.federation import FederationConfig
from config.method import MethodConfig
from config.model import ModelConfig
from config.output import OutputConfig
from errors import FedKSeedError
from flag_group import FlagGroup, OneLineParser
from methods import method_class, method_flag_groups
from modeling import memory_info
from server import state_bytes

# RunConfig's fields, in --help's order (each method's own flags follow the method group's)
GROUPS = {"method": MethodConfig, "federation": FederationConfig, "data": DataConfig, "model": ModelConfig,
          "evaluation": EvalConfig, "output": OutputConfig, "engine": EngineConfig}
METHOD_GROUPS = method_flag_groups()  # --method name -> its own flags (RunConfig.own)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        description="FedKSeed / FedKSeed-Pro: federated full-parameter tuning of causal LMs with "
        "zeroth-order steps drawn from K seeds (arXiv 2312.06353).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for name, group in GROUPS.items():
        group.add_flags(parser)
        if name == "method":
            for own in METHOD_GROUPS.values():
                own.add_flags(parser)
    return parser


@dataclass
class RunConfig:
    """A run's flags by group; modules take the group they need."""

    method: MethodConfig
    federation: FederationConfig
    data: DataConfig
    model: ModelConfig
    evaluation: EvalConfig
    output: OutputConfig
    engine: EngineConfig
    own: dict[str, FlagGroup]  # each method's own flags, by --method name (METHOD_GROUPS)

    @classmethod
    def from_flags(cls, flags: Mapping | argparse.Namespace) -> RunConfig:
        """The groups out of every flag by name (parsed flags, or those a config.json, checkpoint or run file
        recorded); a recorded flag this version no longer has is ignored."""
        flags = vars(flags) if isinstance(flags, argparse.Namespace) else flags
        return cls(**{name: group.from_flags(flags) for name, group in GROUPS.items()},
                   own={name: group.from_flags(flags) for name, group in METHOD_GROUPS.items()})

    def groups(self) -> list[FlagGroup]:
        """Every group of the run's flags: the fixed ones, then each method's own."""
        return [*(getattr(self, name) for name in GROUPS), *self.own.values()]

    def flags(self) -> dict:
        """Every flag by name: what config.json, the checkpoint and the Flower run file record."""
        return {flag: value for group in self.groups() for flag, value in asdict(group).items()}

    def check(self) -> None:
        """Each group's own checks, then those that join groups; resolves --device/--dtype auto and the default
        --output_dir."""
        for group in self.groups():
            group.check()
        self.engine.check_run(self.federation, self.data, self.method.method)
        check_seed_state_fits(self.method, self.federation)
        method_class(self.method.method).check_flags(self)
        if self.output.output_dir is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            name = f"{self.data.dataset}-{self.method.run_name}-{stamp}"
            self.output.output_dir = str(Path(self.output.log_root) / name)


def default_flags() -> dict:
    """Every flag at its default, by name."""
    return {name: value for group in (*GROUPS.values(), *METHOD_GROUPS.values())
            for name, value in group.defaults().items()}


def recorded(flags: Mapping) -> RunConfig:
    """The typed flags a run recorded (its checkpoint, config.json or Flower run file); a flag the run predates
    takes its default (the value that run had)."""
    return RunConfig.from_flags({**default_flags(), **flags})


def from_command_line(argv: list[str]) -> tuple[RunConfig, RunState | TensorState | None]:
    """main.py's flags checked, and the checkpoint a --resume run continues (its flags reused, as merge_resume)."""
    args = build_parser().parse_args(argv)
    resume = None
    if args.resume is not None:
        resume = load_checkpoint(Path(args.resume))
        args = merge_resume(args, resume.flags)
    return validate(args), resume


def validate(args: argparse.Namespace | Mapping) -> RunConfig:
    """The run's typed configuration, every flag checked up front; raises FedKSeedError with a one-line reason."""
    cfg = RunConfig.from_flags(args)
    cfg.check()
    return cfg


def check_seed_state_fits(method: MethodConfig, federation: FederationConfig) -> None:
    """Refuse a -K whose seed state cannot fit in half of the free memory (the model needs the rest)."""
    n, m = federation.num_clients, federation.m
    pairs = min(n, max(1, int(m * n) + 1)) * federation.local_step
    need, free = state_bytes(method.K, federation.rounds, pairs), memory_info("MemAvailable")
    if free is not None and need > free // 2:
        raise FedKSeedError(f"-K {method.K}: the seed state (seed pool, c, Pro history, Delta c record) needs about "
                            f"{need / 2**30:.1f} GiB, more than half of the {free / 2**30:.1f} GiB of free memory")


# Flags that define the trajectory of a run: a resumed run must keep them (it may add rounds, and run on another
# device, engine or evaluation schedule).
TRAJECTORY_FLAGS = (*MethodConfig.names(), *(n for group in METHOD_GROUPS.values() for n in group.names()),
                    *DataConfig.names(), "model", "dtype",
                    *(name for name in FederationConfig.names() if name != "rounds"))


def merge_resume(args: argparse.Namespace, saved: dict) -> argparse.Namespace:
    """Flags of a resumed run: the checkpoint's, except those given now; a changed trajectory flag is refused.
    A flag the checkpoint predates takes its default (the value that run had)."""
    defaults = default_flags()
    merged = {**defaults, **saved}
    for name, value in vars(args).items():
        if name in ("resume", "output_dir") or value == defaults.get(name):
            continue
        if name in TRAJECTORY_FLAGS and value != saved.get(name) and not (name == "dtype" and value == "auto"):
            raise FedKSeedError(f"--{name} {value}: differs from the checkpoint's {saved.get(name)}; "
                                "a resumed run keeps the flags that define it")
        merged[name] = value
    merged["resume"] = args.resume
    merged["output_dir"] = str(Path(args.resume))
    return argparse.Namespace(**merged)
