"""A run directory has one writer (run_lock.py): a second run into a live run's directory, fresh or --resume, stops
with one line and exit 2 before writing anything; a lock left by a killed run is stale and taken over; an export
waits for the run to end. Subprocess runs on the tiny model, then fast checks of the lock's logic."""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import run_lock
from checkpoint import CHECKPOINT_FILE
from conftest import ENV, ROOT, dolly_records, run_and_kill, tiny_flags
from errors import FedKSeedError
from run_lock import LOCK_FILE, acquire_run_lock, holder, read_lock, start_ticks
from run_records import read_metrics


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lock") / "dolly.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in dolly_records()))
    return path


def flags(model: Path, data: Path, out: Path, rounds: int, local_step: int = 20) -> list[str]:
    """3 clients, -m, lr and zo_eps at their defaults."""
    return tiny_flags(model, data, out, rounds=rounds, local_step=local_step, clients=3, m=None, lr=None, zo_eps=None,
                      no_compile=False)


def main_py(*argv: str, log: Path | None = None) -> subprocess.Popen:
    """main.py in a subprocess: its stderr to `log` (a long run would fill a pipe nobody reads), else a pipe."""
    stderr = subprocess.PIPE if log is None else log.open("w")
    return subprocess.Popen([sys.executable, "main.py", *argv], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=stderr, text=True)


def error_line(stderr: str) -> str:
    """The one line a refused run prints (nothing else: it stopped before setting up its log)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def rounds_of(out: Path) -> list[int]:
    return [row["round"] for row in read_metrics(out / "metrics.jsonl")]


def wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_resume_of_a_live_run_is_refused_and_leaves_its_metrics_alone(tiny_model_dir, data, tmp_path):
    out = tmp_path / "run"
    live = main_py(*flags(tiny_model_dir, data, out, rounds=3000), log=tmp_path / "live.log")  # killed at the end
    try:
        wait_for(lambda: (out / CHECKPOINT_FILE).exists(), "the live run's first checkpoint")
        resumed = main_py("--resume", str(out))
        _, stderr = resumed.communicate(timeout=120)
        assert resumed.returncode == 2
        line = error_line(stderr)
        assert f"in use by pid {live.pid} on {socket.gethostname()} since " in line and "wait for it" in line
        assert live.poll() is None, "the live run ended before the resume was refused"
        done = len(rounds_of(out))
        wait_for(lambda: len(rounds_of(out)) > done + 2, "the live run to go on")
    finally:
        live.kill()
        live.wait()
    rounds = rounds_of(out)
    assert rounds == list(range(len(rounds))), rounds  # 0, 1, 2, ...: nothing dropped, repeated or reordered


def test_two_fresh_runs_into_one_directory_one_runs_the_other_stops(tiny_model_dir, data, tmp_path):
    out = tmp_path / "run"
    procs = [main_py(*flags(tiny_model_dir, data, out, rounds=40)) for _ in range(2)]
    try:
        results = [(p.communicate(timeout=240)[1], p.returncode)[::-1] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert sorted(code for code, _ in results) == [0, 2], results
    line = error_line(next(stderr for code, stderr in results if code == 2))
    assert "in use by pid" in line or "already holds a run" in line  # the second, or one started as the first ended
    assert rounds_of(out) == list(range(41))
    assert not (out / LOCK_FILE).exists()  # released at the end


def test_a_killed_runs_lock_is_taken_over_by_resume(tiny_model_dir, data, tmp_path):
    out = tmp_path / "run"
    killed_at = run_and_kill(flags(tiny_model_dir, data, out, rounds=200), out, at_round=2)
    stale = read_lock(out / LOCK_FILE)
    assert stale is not None and stale["argv"][0] == "main.py" and holder(out) is None
    resumed = main_py("--resume", str(out), "--rounds", str(killed_at + 2))  # 200 rounds kept it alive to be killed
    _, stderr = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, stderr
    assert f"run directory {out}: taking over a stale lock of pid {stale['pid']} on {stale['host']}" in stderr
    assert rounds_of(out) == list(range(killed_at + 3))
    assert not (out / LOCK_FILE).exists()


# --- the lock's logic, without a model --------------------------------------------------------------------------

def write_lock(run_dir: Path, pid: int, host: str | None = None, **extra) -> None:
    record = {"pid": pid, "host": host or socket.gethostname(), "started": "2026-01-01T00:00:00+0000",
              "argv": ["main.py"], "start_ticks": start_ticks(pid), **extra}
    (run_dir / LOCK_FILE).write_text(json.dumps(record))


@pytest.fixture
def sleeper():
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_the_lock_names_its_process_and_goes_when_released(tmp_path):
    with acquire_run_lock(tmp_path) as lock:
        info = read_lock(tmp_path / LOCK_FILE)
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname() and info["argv"] == sys.argv
        assert info["started"] and info["start_ticks"] == start_ticks(os.getpid())
        assert acquire_run_lock(tmp_path).path == lock.path  # re-entrant: open_run_dir after run_flower
        assert holder(tmp_path) is None  # not another process
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_live_holder_is_refused_and_keeps_its_lock(tmp_path, sleeper):
    write_lock(tmp_path, sleeper.pid)
    with pytest.raises(FedKSeedError, match=f"in use by pid {sleeper.pid} on {socket.gethostname()} since 2026"):
        acquire_run_lock(tmp_path)
    assert holder(tmp_path)["pid"] == sleeper.pid
    run_lock.RunLock(tmp_path).release()  # not ours: stays
    assert read_lock(tmp_path / LOCK_FILE)["pid"] == sleeper.pid


def test_a_holder_on_another_host_is_refused_even_with_a_pid_dead_here(tmp_path):
    write_lock(tmp_path, dead_pid(), host="elsewhere")
    with pytest.raises(FedKSeedError, match="on elsewhere since"):
        acquire_run_lock(tmp_path)


@pytest.mark.parametrize("kind", ["dead", "reused pid", "zombie", "old garbage"])
def test_a_stale_lock_is_taken_over_with_one_warning(tmp_path, sleeper, caplog, kind):
    zombie = None
    if kind == "dead":
        write_lock(tmp_path, dead_pid())
    elif kind == "reused pid":  # a live process, but not the one that wrote the lock: it started at another time
        write_lock(tmp_path, sleeper.pid, start_ticks=start_ticks(sleeper.pid) - 1)
    elif kind == "zombie":  # exited, not yet reaped by its parent: kill(pid, 0) still succeeds
        zombie = subprocess.Popen(["true"])
        wait_for(lambda: Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z", "a zombie",
                 timeout=10)
        write_lock(tmp_path, zombie.pid, start_ticks=None)
    else:
        (tmp_path / LOCK_FILE).write_text("{not json")
        os.utime(tmp_path / LOCK_FILE, (time.time() - 60, time.time() - 60))
    try:
        with caplog.at_level(logging.WARNING, logger="fedkseed"), acquire_run_lock(tmp_path):
            assert read_lock(tmp_path / LOCK_FILE)["pid"] == os.getpid()
    finally:
        if zombie is not None:
            zombie.wait()
    warnings = [r.getMessage() for r in caplog.records if "taking over a stale lock" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith(f"run directory {tmp_path}: ")


def test_a_young_unreadable_lock_is_refused(tmp_path):
    (tmp_path / LOCK_FILE).write_text("")  # its creator may be about to write it
    with pytest.raises(FedKSeedError, match="in use"):
        acquire_run_lock(tmp_path)


RACER = """
import sys, time
sys.path.insert(0, {root!r})
import run_lock
from errors import FedKSeedError
from run_lock import acquire_run_lock
read_lock = run_lock.read_lock
def slow_read_lock(path):  # widens the window between judging the lock stale and replacing it
    info = read_lock(path)
    time.sleep(0.3)
    return info
run_lock.read_lock = slow_read_lock
time.sleep(max(0.0, {start} - time.time()))
try:
    acquire_run_lock({run_dir!r})
except FedKSeedError:
    sys.exit(2)
time.sleep(2)  # holding it while the others try
"""


def test_of_processes_racing_to_take_over_a_stale_lock_exactly_one_wins(tmp_path):
    write_lock(tmp_path, dead_pid())
    code = RACER.format(root=str(ROOT), start=time.time() + 1.5, run_dir=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(4)]
    codes = sorted(p.wait(timeout=60) for p in procs)
    assert codes == [0, 2, 2, 2], [p.stderr.read() for p in procs]


def test_export_waits_for_the_run_to_end(tmp_path, sleeper, capsys):
    import main

    write_lock(tmp_path, sleeper.pid)
    assert main.main(["export", str(tmp_path), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {tmp_path}: a run is still writing it (pid {sleeper.pid} on {socket.gethostname()}); "
                   "export when it has finished\n")
    assert not (tmp_path / "out").exists()
