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

Integer arithmetic is int32 holding the bits of uint32 values: additions and multiplications wrap modulo
2**32 (two's complement) in torch's CPU kernels, in inductor's vectorised C++ and in Triton alike, and right
shifts are made logical with a mask. int32 lanes are twice as many per vector as int64 ones, which is what
makes the hash cheap. The tests check every path bit for bit against an independent int64 reference.

Three ways to apply theta += sum_s coef_s * z(seed_s), all giving the same z:
    eager     blocks of at most _BLOCK elements (x seeds), plain torch ops, one block in cache at a time
    compiled  one torch.compile'd kernel per parameter (dynamic shapes: compiled once per process, not per
              shape). float32 parameters are viewed as int64 so that one loop iteration owns both elements of
              a Gaussian pair (computed once, stored twice); Rademacher parameters are viewed as [words, 32]
              so that a word is hashed once for its 32 signs. Replay of many seeds goes block by block.
    reference z_for(): the whole tensor in one go, for tests and tools

Public interface (the rest of the project calls only these):
    Perturbation(model).perturb_(seed, scale)     theta += scale * z(seed)
    Perturbation(model).apply_([Term(seed, scale, tokens, rest), ...])
                                                  a few terms in one pass; with tokens, the input embedding (when
                                                  not tied to the output layer) gets scale only on the tokens'
                                                  rows and rest on every other row
    Perturbation(model).replay_(seeds, coefs)     theta += sum_j coefs[j] * z(seeds[j])
    z_for(seed, name, numel, kind)                the reference values, for tests and tools
"""
from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

KINDS = ("gaussian", "rademacher")
_MUL1 = 0x7FEB352D
_MUL2 = 0x846CA68B - (1 << 32)  # the int32 bits of the uint32 constant
_LOW32 = 0xFFFFFFFF
_WORD_BITS = 32  # Rademacher signs per hashed word
_BLOCK = 1 << 16  # elements (x seeds) per eager block: the block's z stays in L2
_REPLAY_CHUNK = 64  # seeds folded into one accumulator pass
_REPLAY_BLOCK = 1 << 16  # elements per compiled call when several seeds are folded (cache-sized block)
_FEW = 2  # up to this many seeds (a MeZO pass folds two) go through one whole-parameter call, seeds unrolled


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit integer hash (xorshift-multiply, 'lowbias32' constants) on int32-held uint32 bits."""
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * _MUL1
    x = x ^ ((x >> 15) & 0x1FFFF)
    x = x * _MUL2
    return x ^ ((x >> 16) & 0xFFFF)


def _counters(n: int, start: int | torch.Tensor, device) -> torch.Tensor:
    """int32 counters start, start+1, ..., start+n-1 (start: an int or an int32 scalar tensor)."""
    return torch.arange(n, dtype=torch.int32, device=device) + start


def gaussian_pairs(pair: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two standard normals (x, y) of int32 pair counters; keys[..., 0:3] are int32 keys (broadcast)."""
    w1 = _mix32(_mix32(pair + keys[..., 0]) ^ keys[..., 1])
    w2 = _mix32(w1 ^ keys[..., 2])
    u1 = (((w1 >> 8) & 0xFFFFFE) | 1).to(torch.float32) * (2.0**-24)  # odd multiples of 2**-24: exact, in (0, 1)
    angle = ((w2 >> 8) & 0xFFFFFF).to(torch.float32) * (2.0 * math.pi * 2.0**-24)
    radius = torch.sqrt(-2.0 * torch.log(u1))
    return radius * torch.cos(angle), radius * torch.sin(angle)


def rademacher_words(word: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """The 32-bit word (int32 bits) whose bits are the signs of elements 32*word ... 32*word+31."""
    return _mix32(_mix32(word + keys[..., 0]) ^ keys[..., 1])


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


def key_tensor(pairs: Sequence[tuple[int, str]], device="cpu") -> torch.Tensor:
    """The keys of (seed, name) pairs as int32 bits, one row each: [len(pairs), 3]."""
    rows = [[k - (1 << 32) if k >= 1 << 31 else k for k in keys_for(s, n)] for s, n in pairs]
    return torch.tensor(rows, dtype=torch.int32, device=device)


def z_for(seed: int, name: str, numel: int, kind: str = "gaussian", device="cpu") -> torch.Tensor:
    """Reference: the whole float32 z of one parameter, generated in one go (tests and tools only)."""
    counter = torch.arange(numel, dtype=torch.int32, device=device)
    return _GENERATORS[kind](counter, key_tensor([(seed, name)], device)[0])


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
        shifts = torch.arange(_WORD_BITS, dtype=torch.int32, device=device)
        bits = (words.unsqueeze(-1) >> shifts) & 1  # [seeds, words, 32]
        z = (bits * 2 - 1).to(torch.float32).flatten(1)
        offset = first - _WORD_BITS * lo
    return z[:, offset : offset + n]


def _axpy_z_(flat: torch.Tensor, start: int, keys: torch.Tensor, coefs: torch.Tensor, kind: str) -> None:
    """flat += sum_s coefs[s] * z(keys[s]) over elements [start, start + len(flat)), in float32 (eager)."""
    z = _block_z(int(start), flat.numel(), keys, kind, flat.device)
    update = (coefs.unsqueeze(1) * z).sum(0)
    flat.copy_((flat.to(torch.float32) + update).to(flat.dtype))


def _rows_(weight: torch.Tensor, rows: torch.Tensor, keys: torch.Tensor, coefs: torch.Tensor, kind: str) -> None:
    """weight[rows] += sum_s coefs[s] * z(keys[s]) on those rows of a 2-D parameter only (element-wise stream:
    every element keeps its own index, so a row's z is the same as in a whole-tensor pass)."""
    width = weight.shape[1]
    counter = rows.to(torch.int32).unsqueeze(1) * width + torch.arange(width, dtype=torch.int32,
                                                                       device=weight.device)
    z = _GENERATORS[kind](counter.unsqueeze(0), keys[:, None, None, :])  # [seeds, rows, width]
    update = (coefs[:, None, None] * z).sum(0)
    weight.index_copy_(0, rows, (weight.index_select(0, rows).to(torch.float32) + update).to(weight.dtype))


# -------------------------------------------------------------------------------------------- compiled path
def _gaussian_packed_(pairs: torch.Tensor, start: torch.Tensor, keys: torch.Tensor, coefs: torch.Tensor,
                      pair_fn: Callable = gaussian_pairs) -> None:
    """Gaussian update of a float32 parameter seen as int64 `pairs` (element 2p = low half, 2p+1 = high).

    One iteration owns one pair: its hash, log, sqrt, cos and sin are computed once and both halves are
    written. Seeds are the inner axis ([pairs, seeds], summed over seeds), so with many seeds the kernel
    vectorises across seeds and keeps one pair's accumulators in registers: nothing of size [seeds, n] exists.
    """
    counter = _counters(pairs.numel(), start, pairs.device).unsqueeze(1)
    x, y = pair_fn(counter, keys.unsqueeze(0))  # [pairs, seeds]; pair_fn: bench/gaussian_floor.py times its parts
    low, high = _halves(pairs)
    pairs.copy_(_packed(low + (x * coefs).sum(1), high + (y * coefs).sum(1)))


def _gaussian_few_(pairs: torch.Tensor, start: torch.Tensor, keys: torch.Tensor, coefs: torch.Tensor) -> None:
    """The packed Gaussian update for a few seeds, unrolled: one pass over the weights applies them all (a seeds
    axis this short would be a reduction the kernel cannot vectorise)."""
    counter = _counters(pairs.numel(), start, pairs.device)
    low, high = _halves(pairs)
    for s in range(keys.shape[0]):
        x, y = gaussian_pairs(counter, keys[s])
        low, high = low + coefs[s] * x, high + coefs[s] * y
    pairs.copy_(_packed(low, high))


def _halves(pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two float32 elements held in each int64 (int64 -> int32 keeps the low 32 bits on every backend)."""
    return pairs.to(torch.int32).view(torch.float32), (pairs >> 32).to(torch.int32).view(torch.float32)


def _packed(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """The int64 holding float32 `low` in its low half and `high` in its high half."""
    return (high.view(torch.int32).to(torch.int64) << 32) | (low.view(torch.int32).to(torch.int64) & _LOW32)


def _rademacher_words_(rows: torch.Tensor, start: torch.Tensor, keys: torch.Tensor, coefs: torch.Tensor) -> None:
    """Rademacher update by a few seeds (unrolled) of a parameter seen as [words, 32]: each seed's word is
    hashed once for its 32 signs, and one pass over the weights applies every seed."""
    counter = _counters(rows.shape[0], start, rows.device)
    shifts = torch.arange(_WORD_BITS, dtype=torch.int32, device=rows.device)
    total = rows.to(torch.float32)
    for s in range(keys.shape[0]):
        words = rademacher_words(counter, keys[s])  # [words]
        total = total + coefs[s] * (((words.unsqueeze(1) >> shifts) & 1) * 2 - 1).to(torch.float32)
    rows.copy_(total.to(rows.dtype))


def _rademacher_word_table(count: int, start: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """The words of `count` consecutive word counters for every seed: [words, seeds] (one block's worth)."""
    return rademacher_words(_counters(count, start, keys.device).unsqueeze(1), keys.unsqueeze(0))


def _rademacher_fold_(rows: torch.Tensor, words: torch.Tensor, coefs: torch.Tensor) -> None:
    """rows[w, b] += sum_s coefs[s] * sign(bit b of words[w, s]): many seeds onto one cached block."""
    shifts = torch.arange(_WORD_BITS, dtype=torch.int32, device=rows.device).view(1, _WORD_BITS, 1)
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
        source = {"gaussian": _gaussian_packed_, "gaussian_few": _gaussian_few_, "generic": _generic_,
                  "rademacher": _rademacher_words_,
                  "rademacher_table": _rademacher_word_table, "rademacher_fold": _rademacher_fold_,
                  "rows": _rows_}[name]
        # dynamic_threads: always emit the OpenMP parallel loop. Otherwise inductor decides from the size hint
        # of the first call (often a small bias vector) and every later parameter would run on one thread.
        _compiled[name] = torch.compile(source, dynamic=True, options={"cpp.dynamic_threads": True})
    return _compiled[name]


def compile_enabled() -> bool:
    """torch.compile is used unless FEDKSEED_COMPILE=0 (tests turn it off to skip compile time)."""
    return os.environ.get("FEDKSEED_COMPILE", "1") != "0"


def _layout(flat: torch.Tensor, seeds: int, kind: str) -> tuple[int, Callable, Callable]:
    """(elements per kernel row, the kernel, the view it works on) for one parameter, kind and seed count."""
    if kind == "gaussian" and flat.dtype == torch.float32 and flat.data_ptr() % 8 == 0:
        return 2, _kernel("gaussian_few" if seeds <= _FEW else "gaussian"), lambda part: part.view(torch.int64)
    if kind == "rademacher":
        kernel = _kernel("rademacher") if seeds <= _FEW else _rademacher_many_
        return _WORD_BITS, kernel, lambda part: part.view(-1, _WORD_BITS)
    generic = _kernel("generic")
    return 1, lambda part, start, keys, coefs: generic(part, start, keys, coefs, kind), lambda part: part


def _few_seed_pass(flat: torch.Tensor, kind: str) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """flat += sum_s coefs[s] * z(keys[s]) for at most _FEW seeds as one prepared kernel call over the whole
    parameter (pure pointwise, no buffer). Kernel, view and start are built once per parameter."""
    unit, kernel, view = _layout(flat, 1, kind)
    body = flat.numel() - flat.numel() % unit
    if body < 2 * unit:  # dynamic shapes specialise sizes 0 and 1: leave tiny tensors to eager
        return lambda keys, coefs: _axpy_z_(flat, 0, keys, coefs, kind)
    part, tail = view(flat[:body]), flat[body:]
    start = torch.zeros((), dtype=torch.int32, device=flat.device)

    def apply(keys: torch.Tensor, coefs: torch.Tensor) -> None:
        kernel(part, start, keys, coefs)
        if tail.numel():
            _axpy_z_(tail, body, keys, coefs, kind)

    return apply


def _apply_compiled_(flat: torch.Tensor, keys: torch.Tensor, coefs: torch.Tensor, kind: str) -> None:
    """flat += sum_s coefs[s] * z(keys[s]) for several seeds, in cache-sized blocks so that each block's
    accumulators stay in cache while every seed visits it; leftover elements go the eager way."""
    unit, kernel, view = _layout(flat, keys.shape[0], kind)
    n = flat.numel()
    body = n - n % unit
    block = _REPLAY_BLOCK
    for first in range(0, body, block):
        last = min(body, first + block)
        if last - first < 2 * unit:  # dynamic shapes specialise sizes 0 and 1: leave tiny pieces to eager
            _axpy_z_(flat[first:last], first, keys, coefs, kind)
            continue
        start = torch.tensor(first // unit, dtype=torch.int32, device=flat.device)
        kernel(view(flat[first:last]), start, keys, coefs)
    if body < n:
        _axpy_z_(flat[body:], body, keys, coefs, kind)


def _row_sparse_name(model: torch.nn.Module, params: list[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the input embedding when a loss reads only its rows of the tokens it sees: an
    nn.Embedding that is trained and not tied to another module (a tied output layer reads every row)."""
    get = getattr(model, "get_input_embeddings", None)
    embedding = get() if callable(get) else None
    if not isinstance(embedding, torch.nn.Embedding):
        return None
    uses = [name for name, p in model.named_parameters(remove_duplicate=False) if p is embedding.weight]
    names = {name for name, _ in params}
    return uses[0] if len(uses) == 1 and uses[0] in names else None


@dataclass(frozen=True)
class Term:
    """scale * z(seed). With tokens (a batch's input ids), the row-sparse input embedding gets scale only on the
    rows of those tokens and rest on every other row: a loss reads no other row, so a MeZO step's +-eps passes
    skip them (a quarter of a small model's weights) and its last pass gives them just their update, rest."""

    seed: int
    scale: float
    tokens: torch.Tensor | None = None
    rest: float = 0.0


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
        self.row_sparse = _row_sparse_name(model, self.params)
        self._passes: dict[str, tuple[int, Callable]] = {}  # name -> (data_ptr it was built for, pass)

    @torch.no_grad()
    def perturb_(self, seed: int, scale: float, tokens: torch.Tensor | None = None, rest: float = 0.0) -> None:
        """theta += scale * z(seed) for every trainable parameter (see Term for tokens and rest)."""
        self.apply_([Term(seed, scale, tokens, rest)])

    @torch.no_grad()
    def apply_(self, terms: Sequence[Term]) -> None:
        """theta += the sum of a few terms in one pass over the weights (a MeZO step folds two into a pass)."""
        if not self.params or not terms:
            return
        device = self.params[0][1].device
        keys = key_tensor([(t.seed, name) for name, _ in self.params for t in terms], device)
        keys = keys.view(len(self.params), len(terms), 3)
        coefs = torch.tensor([t.scale for t in terms], dtype=torch.float32, device=device)
        for i, (name, p) in enumerate(self.params):
            if name != self.row_sparse or all(t.tokens is None for t in terms):
                self._apply(name, p, keys[i], coefs)
                continue
            whole = [(j, t.scale if t.tokens is None else t.rest) for j, t in enumerate(terms)]
            whole = [(j, c) for j, c in whole if c != 0.0]
            if whole:
                self._apply(name, p, keys[i, [j for j, _ in whole]],
                            torch.tensor([c for _, c in whole], dtype=torch.float32, device=device))
            for j, t in enumerate(terms):
                if t.tokens is not None and t.scale != t.rest:
                    rows = torch.unique(t.tokens.to(p.device))
                    row_coefs = torch.tensor([t.scale - t.rest], dtype=torch.float32, device=device)
                    rows_kernel = _kernel("rows") if self.compile else _rows_
                    rows_kernel(p.detach(), rows, keys[i, j : j + 1], row_coefs, self.kind)

    @torch.no_grad()
    def replay_(self, seeds: Sequence[int], coefs: Sequence[float]) -> None:
        """theta += sum_j coefs[j] * z(seeds[j]); zero coefficients are skipped."""
        pairs = [(int(s), float(c)) for s, c in zip(seeds, coefs, strict=True) if c != 0.0]
        for start in range(0, len(pairs), _REPLAY_CHUNK):
            chunk = pairs[start : start + _REPLAY_CHUNK]
            for name, p in self.params:
                keys = key_tensor([(s, name) for s, _ in chunk], p.device)
                self._apply(name, p, keys, torch.tensor([c for _, c in chunk], dtype=torch.float32, device=p.device))

    def _apply(self, name: str, p: torch.Tensor, keys: torch.Tensor, coefs: torch.Tensor) -> None:
        flat = p.detach().view(-1)  # kernels never need autograd; a detached view keeps dynamo off the leaf
        if self.compile and keys.shape[0] <= _FEW:
            built_for, apply = self._passes.get(name, (None, None))
            if built_for != p.data_ptr():  # first use, or the parameter's storage was replaced (e.g. .to())
                apply = _few_seed_pass(flat, self.kind)
                self._passes[name] = (p.data_ptr(), apply)
            apply(keys, coefs)
            return
        if self.compile:
            _apply_compiled_(flat, keys, coefs, self.kind)
            return
        block = max(_WORD_BITS, (_BLOCK // keys.shape[0]) // _WORD_BITS * _WORD_BITS)  # pair- and word-aligned
        for first in range(0, flat.numel(), block):
            _axpy_z_(flat[first : first + block], first, keys, coefs, self.kind)
