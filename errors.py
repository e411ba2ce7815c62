"""The one exception type for bad user input: main.py turns it into a one-line error and exit 2."""


class FedKSeedError(Exception):
    """A problem with the user's input (flags, files, data) that stops the run."""


def require(checks: list[tuple[bool, str]]) -> None:
    """Raise FedKSeedError with the message of the first check that fails (each: (ok, one-line message))."""
    for ok, message in checks:
        if not ok:
            raise FedKSeedError(message)
