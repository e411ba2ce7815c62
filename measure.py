"""What a client's local work costs: wall seconds and the peak memory while it ran."""
from __future__ import annotations

import os
import threading
import time

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Resident memory of this process now (0 where /proc is absent)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


class LocalCost:
    """A context that measures its block: `seconds`, and `peak_bytes`, the peak resident memory of the process
    (sampled every `interval` seconds on the CPU) or the peak allocated CUDA memory when `device` is CUDA."""

    def __init__(self, device: str = "cpu", interval: float = 0.01):
        self.device, self.interval = device, interval
        self.seconds, self.peak_bytes = 0.0, 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_bytes = max(self.peak_bytes, rss_bytes())

    def __enter__(self) -> LocalCost:
        self._start = time.perf_counter()
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.peak_bytes = rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._start
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes, rss_bytes())
        else:
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
