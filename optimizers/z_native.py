"""The native CPU kernel (the C++ in optimizers/z_native_source.py): built with the machine's C++ compiler on
first use, cached, and called through ctypes. It applies theta += sum_s coef_s * z(seed_s) to every float32 or
bfloat16 CPU parameter of a model in one call (a bfloat16 weight widened, updated and rounded back in registers):
hash, Box-Muller (or signs) and update fused in one vectorised loop over cache-sized blocks, the blocks split
across threads by work; and <w, z(seed)> for many seeds of one float32 tensor (a projection onto seeded bases) in
one pass over it. Where it cannot be built or loaded, the project falls back to the torch.compile kernels of
optimizers/z_kernels.py (same stream) with a warning.

    FEDKSEED_NATIVE=0     do not build or use it
    FEDKSEED_CACHE=DIR    where the built library is kept (default ~/.cache/fedkseed)
    CXX=...               the compiler (default g++)
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from optimizers.z_native_source import SOURCE

FLAGS = ["-O3", "-march=native", "-ffp-contract=fast", "-fno-math-errno", "-fopenmp-simd", "-std=c++17",
         "-shared", "-fPIC", "-pthread"]
KIND_CODES = {"gaussian": 0, "rademacher": 1}
DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1}


def native_enabled() -> bool:
    """The native kernel is used unless FEDKSEED_NATIVE=0."""
    return os.environ.get("FEDKSEED_NATIVE", "1") != "0"


def _cpu_flags() -> str:
    """What -march=native depends on: the CPU's feature flags (a cached build never runs on another CPU)."""
    try:
        return next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")),
                    "")
    except OSError:
        return ""


@functools.lru_cache(maxsize=1)
def library() -> ctypes.CDLL | None:
    """The built kernel library, built once per source, flags and CPU; None (with a warning) if it cannot be."""
    compiler = os.environ.get("CXX", "g++")
    digest = hashlib.sha256(" ".join([SOURCE, compiler, *FLAGS, _cpu_flags()]).encode()).hexdigest()
    cache = Path(os.environ.get("FEDKSEED_CACHE", Path.home() / ".cache" / "fedkseed"))
    built = cache / f"z_native-{digest[:16]}.so"
    try:
        if not built.exists():
            _build(compiler, built)
        lib = ctypes.CDLL(str(built))
    except (OSError, RuntimeError) as err:
        warnings.warn(f"native z kernel unavailable ({err}): using the torch.compile kernels", stacklevel=2)
        return None
    lib.z_apply.restype = None
    lib.z_apply.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.POINTER(ctypes.c_void_p),
                            ctypes.POINTER(ctypes.c_int32), ctypes.POINTER(ctypes.c_int64), ctypes.c_void_p,
                            ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64]
    lib.z_dot.restype = None
    lib.z_dot.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                          ctypes.c_void_p, ctypes.c_int64]
    lib.z_rows.restype = None
    lib.z_rows.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                           ctypes.c_int64, ctypes.c_void_p, ctypes.c_float]
    return lib


def _build(compiler: str, built: Path) -> None:
    """Compile SOURCE into `built`: aside in a scratch folder, then moved, so concurrent builds are safe."""
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no C++ compiler {compiler!r}")
    built.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=built.parent) as scratch:
        source, target = Path(scratch) / "z_native.cpp", Path(scratch) / built.name
        source.write_text(SOURCE)
        done = subprocess.run([compiler, *FLAGS, "-o", str(target), str(source)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {done.stderr.strip()[:300]}")
        os.replace(target, built)


def supports(p: torch.Tensor) -> bool:
    """Whether the native kernel can update this parameter in place: float32 or bfloat16, contiguous, on the CPU."""
    return p.device.type == "cpu" and p.dtype in DTYPE_CODES and p.is_contiguous()


def apply_rows(lib: ctypes.CDLL, weight: torch.Tensor, rows: torch.Tensor, key: np.ndarray, coef: float,
               kind: str) -> None:
    """weight[rows] += coef * z(key) on those rows of a 2-D float32 or bfloat16 parameter only, each element by its
    own index: bitwise what a whole-tensor pass with one seed gives those rows."""
    if not supports(weight) or weight.dim() != 2:
        raise ValueError(f"native rows need a contiguous 2-D float32 or bfloat16 CPU tensor, not {weight.dtype} "
                         f"{tuple(weight.shape)}")
    rows = rows.to(device="cpu", dtype=torch.int64).contiguous()
    if rows.numel() and not 0 <= int(rows.min()) <= int(rows.max()) < weight.shape[0]:
        raise ValueError(f"row ids must lie in [0, {weight.shape[0]})")
    key = np.ascontiguousarray(key, dtype=np.int32).reshape(3)
    lib.z_rows(KIND_CODES[kind], DTYPE_CODES[weight.dtype], weight.data_ptr(), weight.shape[1], rows.data_ptr(),
               rows.numel(), key.ctypes.data, coef)


def dot(lib: ctypes.CDLL, values: torch.Tensor, keys: np.ndarray, kind: str) -> np.ndarray:
    """<values, z(key)> for each key (int32 [seeds, 3]) of a float32 CPU tensor, in float64, the same for any
    thread count."""
    if not supports(values) or values.dtype != torch.float32:
        raise ValueError(f"native dot needs a contiguous float32 CPU tensor, not {values.dtype} on {values.device}")
    keys = np.ascontiguousarray(keys, dtype=np.int32).reshape(-1, 3)
    out = np.zeros(len(keys), dtype=np.float64)
    lib.z_dot(KIND_CODES[kind], values.data_ptr(), values.numel(), keys.ctypes.data, len(keys), out.ctypes.data,
              torch.get_num_threads())
    return out


class NativePass:
    """A prepared call over a fixed list of parameters (their storage must not move: rebuild if it does)."""

    def __init__(self, lib: ctypes.CDLL, tensors: Sequence[torch.Tensor], kind: str):
        self.lib, self.kind = lib, KIND_CODES[kind]
        self.tensors = list(tensors)
        self.data = (ctypes.c_void_p * len(self.tensors))(*[t.data_ptr() for t in self.tensors])
        self.dtypes = (ctypes.c_int32 * len(self.tensors))(*[DTYPE_CODES[t.dtype] for t in self.tensors])
        self.numel = (ctypes.c_int64 * len(self.tensors))(*[t.numel() for t in self.tensors])

    def __call__(self, keys: np.ndarray, coefs: np.ndarray) -> None:
        """keys: int32 [tensors, seeds, 3]; coefs: float32 [tensors, seeds] (zero skips a seed on a tensor)."""
        keys = np.ascontiguousarray(keys, dtype=np.int32)
        coefs = np.ascontiguousarray(coefs, dtype=np.float32)
        if keys.shape != (len(self.tensors), coefs.shape[1], 3) or coefs.shape[0] != len(self.tensors):
            raise ValueError(f"keys {keys.shape} and coefs {coefs.shape} do not match {len(self.tensors)} tensors")
        self.lib.z_apply(self.kind, len(self.tensors), self.data, self.dtypes, self.numel, keys.ctypes.data,
                         coefs.ctypes.data, coefs.shape[1], torch.get_num_threads())
