"""What every group of flags shares: each field is a flag, declared once (its default and help: `flag`), the
group's argparse arguments are built from its fields, and it checks its own values (config.RunConfig checks the
rules that join two groups)."""
from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import field, fields
from typing import Any, ClassVar


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


def flag(default: Any, help: str, *, option: str | None = None, section: str | None = None,
         negatable: bool = False, **argparse_kwargs: Any):
    """A dataclass field that is a flag: its default, its --help text and any further argparse arguments.

    The flag is --<field name> unless `option` names it (the paper's -K and -m); an int or float default gives
    its type; a False default makes a switch. `negatable`: a boolean flag that takes a value
    (--use_prompts false) and has a hidden --no_<name> form. `section`: its --help heading, when not the group's.
    """
    spec = {"option": option, "section": section, "negatable": negatable, "help": help, **argparse_kwargs}
    return field(default=default, metadata=spec)


def _arguments(f) -> tuple[str, dict]:
    """The option string and the argparse keyword arguments of one `flag` field."""
    spec = dict(f.metadata)
    option = spec.pop("option") or f"--{f.name}"
    spec.pop("section")
    if spec.pop("negatable"):
        spec.update(type=parse_bool, nargs="?", const=True, metavar="BOOL")
    elif f.default is False:
        spec.setdefault("action", "store_true")
    elif type(f.default) in (int, float):
        spec.setdefault("type", type(f.default))
    return option, {"dest": f.name, "default": f.default, **spec}


class FlagGroup:
    """Base of the typed flag groups: dataclasses whose fields are `flag`s named as the flags' dest names."""

    title: ClassVar[str]  # the group's --help heading

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def defaults(cls) -> dict:
        """The group's flags at their defaults."""
        return {f.name: f.default for f in fields(cls)}

    @classmethod
    def from_flags(cls, flags: Mapping):
        """The group's values out of every flag of a run (parsed, or read back from a config.json or run file)."""
        return cls(**{name: flags[name] for name in cls.names()})

    @classmethod
    def add_flags(cls, parser: argparse.ArgumentParser) -> None:
        """Declare the group's flags (names, defaults and help) under its --help heading(s)."""
        sections: dict[str, argparse._ArgumentGroup] = {}
        for f in fields(cls):
            title = f.metadata["section"] or cls.title
            if title not in sections:
                sections[title] = parser.add_argument_group(title)
            section = sections[title]
            option, kwargs = _arguments(f)
            section.add_argument(option, **kwargs)
            if f.metadata["negatable"]:
                section.add_argument(f"--no_{f.name}", dest=f.name, action="store_false", help=argparse.SUPPRESS)

    def check(self) -> None:
        """Refuse (FedKSeedError, one line) a value that cannot run, whatever the other groups say."""
