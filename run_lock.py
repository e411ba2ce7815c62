"""One writer per run directory: <run_dir>/.lock, created exclusively, naming its process, released at exit. A lock
whose process is gone (kill -9) is stale and the next run takes it over; a live holder, or one on another host (whose
processes we cannot see), stops the run with one line before it writes anything."""
from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from errors import FedKSeedError

LOCK_FILE = ".lock"
YOUNG_SECONDS = 10.0  # an unreadable lock younger than this may be one whose creator has not written it yet
logger = logging.getLogger("fedkseed")


def start_ticks(pid: int) -> int | None:
    """The process's start time (/proc/<pid>/stat field 22), -1 for a zombie, None without /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": comm may hold spaces and parentheses
        return -1 if fields[0] in ("Z", "X") else int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def alive(info: dict) -> bool:
    """Whether the process a lock names may still write (on another host we cannot tell: assume it may)."""
    if info.get("host") != socket.gethostname():
        return True
    try:
        os.kill(info["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's live process
    ticks = start_ticks(info["pid"])  # a zombie never writes again; a reused pid has another start time
    return ticks != -1 and (ticks is None or info.get("start_ticks") in (None, ticks))


def mine(info: dict | None) -> bool:
    return bool(info) and info["pid"] == os.getpid() and alive(info)


def read_lock(path: Path) -> dict | None:
    """The lock's record; None when there is no lock or it is not a record (garbage, not yet written)."""
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) and info["pid"] > 0 else None


class RunLock:
    """The lock this process holds on a run directory; also a context manager."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE

    def release(self) -> None:
        """Remove the lock if it is still ours (a forked child, or a run whose lock was taken, must not)."""
        if mine(read_lock(self.path)):
            self.path.unlink(missing_ok=True)
        HELD.pop(self.path.resolve(), None)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


HELD: dict[Path, RunLock] = {}  # lock path -> the lock this process holds there, released at exit
atexit.register(lambda: [lock.release() for lock in list(HELD.values())])  # not after SIGKILL: that lock is stale


def acquire_run_lock(run_dir: Path) -> RunLock:
    """Hold run_dir's lock (re-entrant: this process may hold it already), taking over a stale one; FedKSeedError
    when another process holds it."""
    path, info = Path(run_dir) / LOCK_FILE, {}
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "argv": sys.argv, "start_ticks": start_ticks(os.getpid())}
    guard = os.open(run_dir, os.O_RDONLY)
    try:  # flock serialises takers: else two judge a lock stale and the later removes the one the first just made
        with contextlib.suppress(ImportError, OSError):  # no flock (not POSIX, some network file systems): unguarded
            import fcntl
            fcntl.flock(guard, fcntl.LOCK_EX)
        for attempt in (1, 2):  # the second after removing a stale lock
            try:  # O_EXCL: of two processes creating the lock at once, exactly one succeeds
                with os.fdopen(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644), "w") as f:
                    json.dump(record, f)  # should this fail, the unreadable lock is taken over once it is old
            except FileExistsError:
                info = read_lock(path) or {}
                if not mine(info):
                    try:
                        young = not info and time.time() - path.stat().st_mtime < YOUNG_SECONDS
                    except FileNotFoundError:
                        continue  # released meanwhile
                    if attempt == 2 or young or (info and alive(info)):  # alive: or on another host
                        break
                    logger.warning("run directory %s: taking over a stale lock of pid %s on %s", run_dir,
                                   info.get("pid", "?"), info.get("host", "?"))
                    path.unlink(missing_ok=True)
                    continue
            return HELD.setdefault(path.resolve(), RunLock(run_dir))
    finally:
        os.close(guard)  # which releases the flock
    raise FedKSeedError(f"--output_dir {run_dir}: in use by pid {info.get('pid', '?')} on {info.get('host', '?')} "
                        f"since {info.get('started', '?')}; wait for it or stop it")


def holder(run_dir: Path) -> dict | None:
    """The record of a live process other than this one that holds run_dir's lock, else None (for readers)."""
    return info if (info := read_lock(Path(run_dir) / LOCK_FILE)) and not mine(info) and alive(info) else None
