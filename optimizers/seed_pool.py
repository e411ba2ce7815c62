"""The seed pool and the model it describes: theta = theta0 - lr * sum_j c_j * z(seed_j)."""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from optimizers.perturbation import Perturbation

SEED_RANGE = 2**31  # seeds are non-negative int32 values, so every language and device can hold them


def make_seed_pool(k: int, rng: np.random.Generator) -> np.ndarray:
    """K distinct seeds drawn from the run's RNG: the server's candidate perturbations."""
    return np.sort(rng.choice(SEED_RANGE, size=k, replace=False)).astype(np.int64)


HALF_DTYPES = (torch.float16, torch.bfloat16)


class FileTheta0(Mapping):
    """theta0 read from the model's safetensors file(s) one tensor at a time (memory-mapped), cast to the dtype the
    model holds it in, as loading cast it: a rebuild then needs no second copy of the weights in memory."""

    def __init__(self, files: dict[str, Path], dtypes: dict[str, torch.dtype]):
        self.files, self.dtypes = files, dtypes  # parameter name -> its file, and the dtype the model holds

    def __getitem__(self, name: str) -> torch.Tensor:
        with safe_open(self.files[name], framework="pt") as f:
            return f.get_tensor(name).to(self.dtypes[name])

    def __iter__(self):
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)


def theta0_on_disk(model: torch.nn.Module, params: list[tuple[str, torch.Tensor]]) -> FileTheta0 | None:
    """The trainable weights as the model's folder stores them, when it has safetensors holding every one of them
    with exactly the values the model holds (checked tensor by tensor); else None."""
    folder = Path(getattr(getattr(model, "config", None), "_name_or_path", "") or ".")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = {k: folder / v for k, v in json.loads(index.read_text())["weight_map"].items()}
    elif (folder / "model.safetensors").is_file():
        with safe_open(folder / "model.safetensors", framework="pt") as f:
            files = {k: folder / "model.safetensors" for k in f.keys()}
    else:
        return None
    if any(n not in files for n, _ in params):
        return None  # e.g. LoRA adapters, or weights converted on loading (GGUF)
    theta0 = FileTheta0({n: files[n] for n, _ in params}, {n: p.dtype for n, p in params})
    if not all(torch.equal(theta0[n], p.detach().cpu()) for n, p in params):
        return None
    return theta0


def half_precision_theta0(model: torch.nn.Module) -> Mapping[str, torch.Tensor] | None:
    """theta0 of the trainable weights when any is half precision (what materialisation rebuilds from), else None:
    float32 weights take each change incrementally without losing it. Read from the model's safetensors where they
    hold it exactly, else a host-memory copy."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not any(p.dtype in HALF_DTYPES for _, p in params):
        return None
    on_disk = theta0_on_disk(model, params)
    return on_disk if on_disk is not None else {n: p.detach().to("cpu", copy=True) for n, p in params}


class SeededModel:
    """A model copy together with the coefficient vector c that describes it exactly.

    Every change to the weights goes through c: a local MeZO update of seed j by g is `c[j] += g`, and
    catching up with another coefficient vector replays only the difference (the paper's mechanism for
    clients that missed rounds). A half-precision model is instead rebuilt from theta0 with the whole target c
    (Perturbation.materialise_): it must hold theta0 when built; theta0 may be passed to share one host copy.
    """

    def __init__(self, model: torch.nn.Module, seed_pool: np.ndarray, lr: float,
                 kind: str = "gaussian", compile: bool | None = None,
                 theta0: Mapping[str, torch.Tensor] | None = None):
        self.model = model
        self.seed_pool = seed_pool
        self.lr = lr
        self.c = np.zeros(len(seed_pool), dtype=np.float64)
        self.perturbation = Perturbation(model, kind=kind, compile=compile)
        self.theta0 = theta0 if theta0 is not None else half_precision_theta0(model)

    def move_to(self, target_c: np.ndarray) -> int:
        """Bring the weights to target_c: replay target_c - c, or, in half precision, rebuild from theta0 with
        target_c. Returns how many seeds changed."""
        target = np.array(target_c, dtype=np.float64)
        changed = np.flatnonzero(target - self.c)
        if self.theta0 is not None:
            used = np.flatnonzero(target)
            coefs = (-self.lr * target[used]).tolist()
            self.perturbation.materialise_(self.theta0, self.seed_pool[used].tolist(), coefs)
        else:
            delta = target - self.c
            self.perturbation.replay_(self.seed_pool[changed].tolist(), (-self.lr * delta[changed]).tolist())
        self.c = target
        return len(changed)

    def replay_rounds(self, deltas: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """Apply rounds' sparse Delta c (indices, values) in order, each as the server's move_to(c + delta); in half
        precision the model depends on the final c alone, so it is rebuilt once."""
        target = self.c
        for indices, values in deltas:
            delta = np.zeros(len(self.seed_pool), dtype=np.float64)
            delta[indices] = values
            target = target + delta
            if self.theta0 is None:
                self.move_to(target)
        self.move_to(target)

    @torch.no_grad()
    def copy_from(self, other: SeededModel) -> None:
        """Take another copy's weights and c by a plain tensor copy (the in-process fast path)."""
        for (_, mine), (_, theirs) in zip(self.perturbation.params, other.perturbation.params, strict=True):
            mine.copy_(theirs)
        self.c = other.c.copy()
