"""The typed flag groups: every flag in exactly one group, a run's recorded flags read back unchanged, each group's
checks where the group is defined, and the trajectory flags a resumed run must keep."""
from __future__ import annotations

import argparse
import dataclasses

import pytest

import config
from errors import FedKSeedError
from methods.ferret import FerretFlags

ALL_GROUPS = [*config.GROUPS.values(), *config.METHOD_GROUPS.values()]


def test_every_flag_belongs_to_exactly_one_group():
    dests = set(vars(config.build_parser().parse_args([])))
    groups = [set(group.names()) for group in ALL_GROUPS]
    assert sum(len(g) for g in groups) == len(set().union(*groups)), "a flag in two groups"
    assert set().union(*groups) == dests
    assert config.default_flags() == vars(config.build_parser().parse_args([]))
    assert [f.name for f in dataclasses.fields(config.RunConfig)] == [*config.GROUPS, "own"]


def test_each_group_declares_only_its_own_flags_with_its_defaults():
    for group in ALL_GROUPS:
        parser = argparse.ArgumentParser()
        group.add_flags(parser)
        assert vars(parser.parse_args([])) == group.defaults(), group.__name__


def test_a_methods_own_flags_are_declared_in_its_home():
    from methods.ferret import Ferret, FerretFlags

    assert config.METHOD_GROUPS == {"ferret": FerretFlags} and Ferret.flags is FerretFlags
    assert not set(FerretFlags.names()) & set(config.MethodConfig.names())
    cfg = config.validate(config.build_parser().parse_args(["--method", "ferret", "--server_lr", "2",
                                                            "--output_dir", "/tmp/unused"]))
    assert cfg.own["ferret"].server_lr == 2.0 and cfg.flags()["server_lr"] == 2.0


def test_recorded_flags_read_back_as_the_same_config():
    cfg = config.validate(config.build_parser().parse_args(["--method", "ferret", "-K", "16", "--lr", "1e-4",
                                                            "--output_dir", "/tmp/unused"]))
    again = config.RunConfig.from_flags(cfg.flags())
    assert again == cfg and again.method.K == 16 and again.federation.seed == 42
    older = {k: v for k, v in cfg.flags().items() if k != "server_clip"}  # a run that predates --server_clip
    assert config.recorded(older).own["ferret"].server_clip == FerretFlags.defaults()["server_clip"]


@pytest.mark.parametrize("group, flags, message", [
    (config.FederationConfig, {"m": 0.0}, "-m 0.0"),
    (config.DataConfig, {"max_length": 4}, "--max_length 4"),
    (config.MethodConfig, {"lora_r": 4}, "--lora_r: LoRA flags need"),
    (config.EvalConfig, {"val_examples": 5}, "--val_examples 5: needs --eval_examples"),
    (config.EngineConfig, {"flower_timeout": 0.0}, "--flower_timeout 0.0"),
    (FerretFlags, {"server_clip": -1.0}, "--server_clip -1.0: must be >= 0"),
])
def test_a_group_checks_its_own_flags(group, flags, message):
    values = group.from_flags({**group.defaults(), **flags})
    with pytest.raises(FedKSeedError, match=message):
        values.check()
    group.from_flags(group.defaults()).check()  # its defaults pass


def test_a_rule_joining_two_groups_is_checked_by_the_run():
    args = config.build_parser().parse_args(["--method", "fedit", "--flower_catchup", "summed"])
    with pytest.raises(FedKSeedError, match="--flower_catchup summed: a catch-up of Delta c"):
        config.validate(args)


def test_a_resumed_run_keeps_what_defines_its_trajectory_and_may_change_the_rest():
    trajectory = set(config.TRAJECTORY_FLAGS)
    assert set(config.MethodConfig.names()) | set(FerretFlags.names()) | set(config.DataConfig.names()) <= trajectory
    assert {"model", "dtype", "seed", "m", "local_step"} <= trajectory
    assert not trajectory & {"rounds", "device", "no_compile", "engine", "eval_every", "save_every", "quiet"}


@pytest.mark.parametrize("first", ["methods", "methods.ferret", "flower_app.client_app", "config"])
def test_any_of_the_modules_a_process_starts_from_imports_first(first):
    """A Flower actor imports the methods before config: config builds the methods' flag groups when it is imported,
    so a method's home must not need config's package to declare its flags (a cycle there broke every actor)."""
    import subprocess
    import sys

    from conftest import ENV, ROOT

    done = subprocess.run([sys.executable, "-c", f"import {first}; import config; print(sorted(config.METHOD_GROUPS))"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "ferret" in done.stdout, done.stderr[-500:]
