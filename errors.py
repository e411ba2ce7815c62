"""The one exception type for bad user input: main.py turns it into a one-line error and exit 2."""


class FedKSeedError(Exception):
    """A problem with the user's input (flags, files, data) that stops the run."""
