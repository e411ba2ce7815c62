"""The perturbation z: a pure function of (seed, parameter name, element index), the same on every device.

Each element's value comes from a counter-based hash: the element index is the counter, and the key is
derived from (seed, parameter name) with blake2b. Nothing depends on the order in which parameters are
visited, on the device, or on the model's dtype (z is made in float32 and cast at the end). The integer
stream is bitwise identical everywhere; the float transform (log, cos, sqrt) may differ by an ulp
between math libraries.

Integer arithmetic is int64 holding uint32 values. The second hash constant is stored as
(constant - 2**32), which gives the same product mod 2**32 while keeping every product below 2**63, so no
device ever relies on signed overflow.

Public interface (the rest of the project calls only these):
    Perturbation(model).perturb_(seed, scale)     theta += scale * z(seed)
    Perturbation(model).replay_(seeds, coefs)     theta += sum_j coefs[j] * z(seeds[j])
    z_for(seed, name, numel, kind)                the reference values, for tests and tools
"""
from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence

import torch

KINDS = ("gaussian", "rademacher")
_MASK = 0xFFFFFFFF
_MUL1 = 0x7FEB352D
_MUL2 = 0x846CA68B - (1 << 32)
_BLOCK = 1 << 16  # elements per eager block: z for one block stays in L2
_REPLAY_CHUNK = 64  # seeds folded into one accumulator pass


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit integer hash (xorshift-multiply, 'lowbias32' constants)."""
    x = x ^ (x >> 16)
    x = (x * _MUL1) & _MASK
    x = x ^ (x >> 15)
    x = (x * _MUL2) & _MASK
    return x ^ (x >> 16)


def _unit_interval(bits: torch.Tensor) -> torch.Tensor:
    """Top 24 bits of a uint32 as a float32 strictly inside (0, 1)."""
    return ((bits >> 8).to(torch.float32) + 0.5) * (2.0**-24)


def gaussian(counter: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Standard normals for int64 counters; keys[..., 0:3] hold uint32 keys (broadcast against counter)."""
    a = _mix32((counter + keys[..., 0]) & _MASK)
    u1 = _mix32(a ^ keys[..., 1])
    u2 = _mix32(u1 ^ keys[..., 2])
    radius = torch.sqrt(-2.0 * torch.log(_unit_interval(u1)))
    return radius * torch.cos((2.0 * math.pi) * _unit_interval(u2))


def rademacher(counter: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Signs in {-1, +1}: bit (counter mod 32) of the word hashed from counter // 32."""
    word = _mix32(_mix32(((counter >> 5) + keys[..., 0]) & _MASK) ^ keys[..., 1])
    bit = (word >> (counter & 31)) & 1
    return (bit * 2 - 1).to(torch.float32)


_GENERATORS = {"gaussian": gaussian, "rademacher": rademacher}


def keys_for(seed: int, name: str) -> tuple[int, int, int]:
    """Three uint32 keys for one (seed, parameter name): the stream's only link to either."""
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=12).digest()
    return tuple(int.from_bytes(digest[i : i + 4], "little") for i in (0, 4, 8))


def z_for(seed: int, name: str, numel: int, kind: str = "gaussian", device="cpu") -> torch.Tensor:
    """Reference: the whole float32 z of one parameter, generated in one go (tests and tools only)."""
    keys = torch.tensor(keys_for(seed, name), dtype=torch.int64, device=device)
    counter = torch.arange(numel, dtype=torch.int64, device=device)
    return _GENERATORS[kind](counter, keys)


def _axpy_z_(flat: torch.Tensor, start: torch.Tensor, keys: torch.Tensor, coefs: torch.Tensor,
             kind: str) -> None:
    """flat += sum_s coefs[s] * z(keys[s]) over elements [start, start + len(flat)), in float32."""
    counter = torch.arange(flat.numel(), dtype=torch.int64, device=flat.device) + start
    z = _GENERATORS[kind](counter.unsqueeze(0), keys.unsqueeze(1))  # [seeds, n]; fused away when compiled
    update = (coefs.unsqueeze(1) * z).sum(0)
    flat.copy_((flat.to(torch.float32) + update).to(flat.dtype))


_compiled = None


def _compiled_axpy():
    """_axpy_z_ compiled once per process, shape-dynamic (one graph serves every parameter size)."""
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(_axpy_z_, dynamic=True)
    return _compiled


def compile_enabled() -> bool:
    """torch.compile is used unless FEDKSEED_COMPILE=0 (tests turn it off to skip compile time)."""
    return os.environ.get("FEDKSEED_COMPILE", "1") != "0"


class Perturbation:
    """Applies seeded perturbations in place to every trainable parameter of a model."""

    def __init__(self, model: torch.nn.Module, kind: str = "gaussian", compile: bool | None = None):
        if kind not in KINDS:
            raise ValueError(f"unknown perturbation {kind!r}; expected one of {KINDS}")
        self.kind = kind
        self.params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        for name, p in self.params:
            if p.numel() >= 1 << 32:
                raise ValueError(f"parameter {name} has {p.numel()} elements; the counter is 32-bit")
        self.compile = compile_enabled() if compile is None else compile

    @torch.no_grad()
    def perturb_(self, seed: int, scale: float) -> None:
        """theta += scale * z(seed) for every trainable parameter."""
        self.replay_([seed], [scale])

    @torch.no_grad()
    def replay_(self, seeds: Sequence[int], coefs: Sequence[float]) -> None:
        """theta += sum_j coefs[j] * z(seeds[j]); zero coefficients are skipped."""
        pairs = [(int(s), float(c)) for s, c in zip(seeds, coefs, strict=True) if c != 0.0]
        for start in range(0, len(pairs), _REPLAY_CHUNK):
            chunk = pairs[start : start + _REPLAY_CHUNK]
            for name, p in self.params:
                self._apply(p, name, chunk)

    def _apply(self, p: torch.Tensor, name: str, chunk: list[tuple[int, float]]) -> None:
        keys = torch.tensor([keys_for(s, name) for s, _ in chunk], dtype=torch.int64, device=p.device)
        coefs = torch.tensor([c for _, c in chunk], dtype=torch.float32, device=p.device)
        flat = p.view(-1)
        if self.compile:
            start = torch.zeros((), dtype=torch.int64, device=p.device)
            _compiled_axpy()(flat, start, keys, coefs, self.kind)
            return
        block = max(1, _BLOCK // len(chunk))
        for first in range(0, flat.numel(), block):
            start = torch.tensor(first, dtype=torch.int64, device=p.device)
            _axpy_z_(flat[first : first + block], start, keys, coefs, self.kind)
