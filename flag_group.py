"""What every group of flags shares: its fields are its flags' names, it is built from the parsed flags, and it
checks its own values (config.RunConfig checks the rules that join two groups)."""
from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import fields


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one line `error: ...` and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message}\n")


def parse_bool(value: str) -> bool:
    """A boolean flag's value: true/false, yes/no, on/off, 1/0 (any case)."""
    lowered = value.strip().lower()
    if lowered in ("true", "yes", "on", "1"):
        return True
    if lowered in ("false", "no", "off", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


class FlagGroup:
    """Base of the typed flag groups (dataclasses whose field names are the flags' dest names)."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_flags(cls, flags: Mapping):
        """The group's values out of every flag of a run (parsed, or read back from a config.json or run file)."""
        return cls(**{name: flags[name] for name in cls.names()})

    @staticmethod
    def add_flags(parser: argparse.ArgumentParser) -> None:
        """Declare the group's flags: names, defaults and help."""
        raise NotImplementedError

    def check(self) -> None:
        """Refuse (FedKSeedError, one line) a value that cannot run, whatever the other groups say."""


def group_defaults(group: type[FlagGroup]) -> dict:
    """The group's flags at their defaults (its own parser, so no other group is involved)."""
    parser = argparse.ArgumentParser()
    group.add_flags(parser)
    return vars(parser.parse_args([]))
