"""The perturbation z: a pure function of (seed, parameter name, element index), the same on every device.

Each element's value comes from a counter-based hash: the key is derived from (seed, parameter name) with
blake2b, and the counter is the element's index (or the index of the pair / word it belongs to). Nothing
depends on the order in which parameters are visited, on the device, on the blocking, or on the model's
dtype (z is made in float32 and cast at the end). The integer stream is bitwise identical everywhere; the
float transform (log, sqrt, cos, sin) may differ by an ulp between math libraries.

The streams:
    gaussian    elements 2p and 2p+1 are the two Box-Muller outputs r*cos(t), r*sin(t) of pair p, with
                r = sqrt(-2 ln u1), t = 2 pi u2, and (u1, u2) from the words w1, w2 hashed from p
    rademacher  element i is bit (i mod 32) of the word hashed from i // 32, mapped to {-1, +1}
Both share their expensive part (hash, log, sqrt, sin/cos) among several elements: a pair, a 32-bit word.

Integer arithmetic is int64 holding uint32 values. The second hash constant is stored as
(constant - 2**32), which gives the same product mod 2**32 while keeping every product below 2**63, so no
device ever relies on signed overflow.

Three ways to apply theta += sum_s coef_s * z(seed_s), all giving the same z:
    eager     blocks of at most _BLOCK elements (x seeds), plain torch ops, one block in cache at a time
    compiled  one torch.compile'd kernel per parameter (dynamic shapes: compiled once per process, not per
              shape). float32 parameters are viewed as int64 so that one loop iteration owns both elements of
              a Gaussian pair (computed once, stored twice); Rademacher parameters are viewed as [words, 32]
              so that a word is hashed once for its 32 signs. Replay of many seeds goes block by block.
    reference z_for(): the whole tensor in one go, for tests and tools

Public interface (the rest of the project calls only these):
    Perturbation(model).perturb_(seed, scale)     theta += scale * z(seed)
    Perturbation(model).replay_(seeds, coefs)     theta += sum_j coefs[j] * z(seeds[j])
    z_for(seed, name, numel, kind)                the reference values, for tests and tools
"""
from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Sequence

import torch

KINDS = ("gaussian", "rademacher")
_MASK = 0xFFFFFFFF
_MUL1 = 0x7FEB352D
_MUL2 = 0x846CA68B - (1 << 32)
_WORD_BITS = 32  # Rademacher signs per hashed word
_BLOCK = 1 << 16  # elements (x seeds) per eager block: the block's z stays in L2
_REPLAY_CHUNK = 64  # seeds folded into one accumulator pass
_REPLAY_BLOCK = 1 << 16  # elements per compiled call when several seeds are folded (cache-sized block)


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit integer hash (xorshift-multiply, 'lowbias32' constants) on int64-held uint32."""
    x = x ^ (x >> 16)
    x = (x * _MUL1) & _MASK
    x = x ^ (x >> 15)
    x = (x * _MUL2) & _MASK
    return x ^ (x >> 16)


def _counters(n: int, start: int | torch.Tensor, device) -> torch.Tensor:
    """int64 counters start, start+1, ..., start+n-1 (built as int32, which vectorises better)."""
    return torch.arange(n, dtype=torch.int32, device=device).to(torch.int64) + start


def gaussian_pairs(pair: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two standard normals (x, y) of int64 pair counters; keys[..., 0:3] are uint32 keys (broadcast)."""
    a = _mix32((pair + keys[..., 0]) & _MASK)
    w1 = _mix32(a ^ keys[..., 1])
    w2 = _mix32(w1 ^ keys[..., 2])
    u1 = (2 * (w1 >> 9) + 1).to(torch.float32) * (2.0**-24)  # odd multiples of 2**-24: exact, inside (0, 1)
    angle = (w2 >> 8).to(torch.float32) * (2.0 * math.pi * 2.0**-24)
    radius = torch.sqrt(-2.0 * torch.log(u1))
    return radius * torch.cos(angle), radius * torch.sin(angle)


def rademacher_words(word: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """The uint32 word (held in int64) whose 32 bits are the signs of elements 32*word ... 32*word+31."""
    return _mix32(_mix32((word + keys[..., 0]) & _MASK) ^ keys[..., 1])


def gaussian(counter: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Element-wise form of the Gaussian stream: element i is half (i mod 2) of pair i // 2."""
    x, y = gaussian_pairs(counter >> 1, keys)
    return torch.where((counter & 1) == 0, x, y)


def rademacher(counter: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Element-wise form of the Rademacher stream: bit (i mod 32) of word i // 32, as -1 or +1."""
    bit = (rademacher_words(counter >> 5, keys) >> (counter & 31)) & 1
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


# ----------------------------------------------------------------------------------------------- eager path
def _block_z(first: int, n: int, keys: torch.Tensor, kind: str, device) -> torch.Tensor:
    """z of elements [first, first + n) for every key row: [seeds, n], each pair / word computed once."""
    keys = keys.unsqueeze(1)  # [seeds, 1, 3]
    if kind == "gaussian":
        lo, hi = first >> 1, (first + n + 1) >> 1
        x, y = gaussian_pairs(_counters(hi - lo, lo, device), keys)
        z = torch.stack((x, y), dim=-1).flatten(1)  # [seeds, 2 * pairs], interleaved
        offset = first - 2 * lo
    else:
        lo, hi = first >> 5, (first + n + _WORD_BITS - 1) >> 5
        words = rademacher_words(_counters(hi - lo, lo, device), keys)
        shifts = torch.arange(_WORD_BITS, dtype=torch.int64, device=device)
        bits = (words.unsqueeze(-1) >> shifts) & 1  # [seeds, words, 32]
        z = (bits * 2 - 1).to(torch.float32).flatten(1)
        offset = first - _WORD_BITS * lo
    return z[:, offset : offset + n]


def _axpy_z_(flat: torch.Tensor, start: int, keys: torch.Tensor, coefs: torch.Tensor, kind: str) -> None:
    """flat += sum_s coefs[s] * z(keys[s]) over elements [start, start + len(flat)), in float32 (eager)."""
    z = _block_z(int(start), flat.numel(), keys, kind, flat.device)
    update = (coefs.unsqueeze(1) * z).sum(0)
    flat.copy_((flat.to(torch.float32) + update).to(flat.dtype))


# -------------------------------------------------------------------------------------------- compiled path
def _as_uint32(bits: torch.Tensor) -> torch.Tensor:
    """The uint32 value (held in int64) of int32 bits."""
    return bits.to(torch.int64) & _MASK


def _as_int32(value: torch.Tensor) -> torch.Tensor:
    """int32 bits of a uint32 value held in int64 (subtracting 2**32 first: no out-of-range conversion)."""
    return (value - ((value >> 31) << 32)).to(torch.int32)


def _gaussian_packed_(pairs: torch.Tensor, start: torch.Tensor, keys: torch.Tensor, coefs: torch.Tensor,
                      pair_fn: Callable = gaussian_pairs) -> None:
    """Gaussian update of a float32 parameter seen as int64 `pairs` (element 2p = low half, 2p+1 = high).

    One iteration owns one pair: its hash, log, sqrt, cos and sin are computed once and both halves are
    written. Seeds are the inner axis ([pairs, seeds], summed over seeds), so with many seeds the kernel
    vectorises across seeds and keeps one pair's accumulators in registers: nothing of size [seeds, n] exists.
    """
    counter = _counters(pairs.numel(), start, pairs.device).unsqueeze(1)
    x, y = pair_fn(counter, keys.unsqueeze(0))  # [pairs, seeds]; pair_fn: bench/gaussian_floor.py times its parts
    dx = (x * coefs).sum(1)
    dy = (y * coefs).sum(1)
    low = _as_int32(pairs & _MASK).view(torch.float32) + dx
    high = (pairs >> 32).to(torch.int32).view(torch.float32) + dy  # the high half is already in int32 range
    high_bits = high.view(torch.int32).to(torch.int64)  # in [-2**31, 2**31): times 2**32 stays in int64
    pairs.copy_(high_bits * (1 << 32) + _as_uint32(low.view(torch.int32)))


def _rademacher_words_(rows: torch.Tensor, start: torch.Tensor, keys: torch.Tensor, coefs: torch.Tensor) -> None:
    """Rademacher update (one seed) of a parameter seen as [words, 32]: a word is hashed once for 32 signs."""
    words = rademacher_words(_counters(rows.shape[0], start, rows.device), keys[0])  # [words]
    shifts = torch.arange(_WORD_BITS, dtype=torch.int64, device=rows.device)
    signs = (((words.unsqueeze(1) >> shifts) & 1) * 2 - 1).to(torch.float32)  # [words, 32]
    rows.copy_((rows.to(torch.float32) + coefs[0] * signs).to(rows.dtype))


def _rademacher_word_table(count: int, start: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """The words of `count` consecutive word counters for every seed: [words, seeds] (one block's worth)."""
    return rademacher_words(_counters(count, start, keys.device).unsqueeze(1), keys.unsqueeze(0))


def _rademacher_fold_(rows: torch.Tensor, words: torch.Tensor, coefs: torch.Tensor) -> None:
    """rows[w, b] += sum_s coefs[s] * sign(bit b of words[w, s]): many seeds onto one cached block."""
    shifts = torch.arange(_WORD_BITS, dtype=torch.int64, device=rows.device).view(1, _WORD_BITS, 1)
    signs = (((words.unsqueeze(1) >> shifts) & 1) * 2 - 1).to(torch.float32)  # [words, 32, seeds]
    rows.copy_((rows.to(torch.float32) + (signs * coefs).sum(2)).to(rows.dtype))


def _rademacher_many_(rows: torch.Tensor, start: torch.Tensor, keys: torch.Tensor, coefs: torch.Tensor) -> None:
    """Rademacher update with several seeds: the word table first (hashed once per word and seed), then the
    fold; two kernels, because one fused kernel re-hashes every word for each of its 32 signs."""
    words = _kernel("rademacher_table")(rows.shape[0], start, keys)
    _kernel("rademacher_fold")(rows, words, coefs)


def _generic_(flat: torch.Tensor, start: torch.Tensor, keys: torch.Tensor, coefs: torch.Tensor, kind: str) -> None:
    """Element-wise update for layouts the two kernels above do not cover (e.g. bfloat16 Gaussian)."""
    z = _GENERATORS[kind](_counters(flat.numel(), start, flat.device), keys.unsqueeze(1))  # [seeds, n]
    flat.copy_((flat.to(torch.float32) + (coefs.unsqueeze(1) * z).sum(0)).to(flat.dtype))


_compiled: dict[str, Callable] = {}


def _kernel(name: str) -> Callable:
    """The named kernel compiled once per process, shape-dynamic (one graph serves every parameter size)."""
    if name not in _compiled:
        source = {"gaussian": _gaussian_packed_, "rademacher": _rademacher_words_, "generic": _generic_,
                  "rademacher_table": _rademacher_word_table, "rademacher_fold": _rademacher_fold_}[name]
        # dynamic_threads: always emit the OpenMP parallel loop. Otherwise inductor decides from the size hint
        # of the first call (often a small bias vector) and every later parameter would run on one thread.
        _compiled[name] = torch.compile(source, dynamic=True, options={"cpp.dynamic_threads": True})
    return _compiled[name]


def compile_enabled() -> bool:
    """torch.compile is used unless FEDKSEED_COMPILE=0 (tests turn it off to skip compile time)."""
    return os.environ.get("FEDKSEED_COMPILE", "1") != "0"


def _layout(flat: torch.Tensor, seeds: int, kind: str) -> tuple[int, Callable, Callable]:
    """(elements per kernel row, the kernel, the view it works on) for one parameter and kind."""
    if kind == "gaussian" and flat.dtype == torch.float32 and flat.data_ptr() % 8 == 0:
        return 2, _kernel("gaussian"), lambda part: part.view(torch.int64)
    if kind == "rademacher":
        kernel = _kernel("rademacher") if seeds == 1 else _rademacher_many_
        return _WORD_BITS, kernel, lambda part: part.view(-1, _WORD_BITS)
    generic = _kernel("generic")
    return 1, lambda part, start, keys, coefs: generic(part, start, keys, coefs, kind), lambda part: part


def _apply_compiled_(flat: torch.Tensor, keys: torch.Tensor, coefs: torch.Tensor, kind: str) -> None:
    """flat += sum_s coefs[s] * z(keys[s]) with the compiled kernels; leftover elements go the eager way."""
    unit, kernel, view = _layout(flat, keys.shape[0], kind)
    n = flat.numel()
    body = n - n % unit
    # One call per parameter when a single seed is applied (pure pointwise, no buffer); cache-sized blocks
    # when many seeds are folded, so each block's accumulators stay in cache while every seed visits it.
    block = body if keys.shape[0] == 1 else _REPLAY_BLOCK
    for first in range(0, body, max(block, unit)):
        last = min(body, first + block)
        if last - first < 2 * unit:  # dynamic shapes specialise sizes 0 and 1: leave tiny pieces to eager
            _axpy_z_(flat[first:last], first, keys, coefs, kind)
            continue
        start = torch.tensor(first // unit, dtype=torch.int64, device=flat.device)
        kernel(view(flat[first:last]), start, keys, coefs)
    if body < n:
        _axpy_z_(flat[body:], body, keys, coefs, kind)


class Perturbation:
    """Applies seeded perturbations in place to every trainable parameter of a model."""

    def __init__(self, model: torch.nn.Module, kind: str = "gaussian", compile: bool | None = None):
        if kind not in KINDS:
            raise ValueError(f"unknown perturbation {kind!r}; expected one of {KINDS}")
        self.kind = kind
        self.params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        for name, p in self.params:
            if p.numel() >= 1 << 31:
                raise ValueError(f"parameter {name} has {p.numel()} elements; counters are 31-bit")
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
            _apply_compiled_(flat, keys, coefs, self.kind)
            return
        block = max(_WORD_BITS, (_BLOCK // len(chunk)) // _WORD_BITS * _WORD_BITS)  # pair- and word-aligned
        for first in range(0, flat.numel(), block):
            _axpy_z_(flat[first : first + block], first, keys, coefs, self.kind)
