"""Fast application of theta += sum_s coef_s * z(seed_s) (the stream of optimizers/zstream.py), all giving
the same z:
    eager     blocks of at most BLOCK_ELEMENTS elements (x seeds), plain torch ops, one block in cache at a time
    compiled  one torch.compile'd kernel per parameter (dynamic shapes: compiled once per process, not per
              shape). float32 parameters are viewed as int64 so that one loop iteration owns both elements of
              a Gaussian pair (computed once, stored twice); Rademacher parameters are viewed as [words, 32]
              so that a word is hashed once for its 32 signs. A few seeds (a MeZO pass folds two) go through
              one whole-parameter call with the seeds unrolled; replay of many seeds goes block by block.
    rows      only some rows of a 2-D parameter (the input embedding rows a batch reads)
"""
from __future__ import annotations

import os
from collections.abc import Callable

import torch

from optimizers.zstream import GENERATORS, WORD_BITS, counters, gaussian_pairs, rademacher_words, signs

_LOW32 = 0xFFFFFFFF
BLOCK_ELEMENTS = 1 << 16  # elements (x seeds) per eager block: the block's z stays in L2
REPLAY_CHUNK = 64  # seeds folded into one accumulator pass
_REPLAY_BLOCK = 1 << 16  # elements per compiled call when several seeds are folded (cache-sized block)
FEW = 2  # up to this many seeds (a MeZO pass folds two) go through one whole-parameter call, seeds unrolled


# ----------------------------------------------------------------------------------------------- eager path
def _block_z(first: int, n: int, keys: torch.Tensor, kind: str, device) -> torch.Tensor:
    """z of elements [first, first + n) for every key row: [seeds, n], each pair / word computed once."""
    keys = keys.unsqueeze(1)  # [seeds, 1, 3]
    if kind == "gaussian":
        lo, hi = first >> 1, (first + n + 1) >> 1
        x, y = gaussian_pairs(counters(hi - lo, lo, device), keys)
        z = torch.stack((x, y), dim=-1).flatten(1)  # [seeds, 2 * pairs], interleaved
        offset = first - 2 * lo
    else:
        lo, hi = first >> 5, (first + n + WORD_BITS - 1) >> 5
        words = rademacher_words(counters(hi - lo, lo, device), keys)
        shifts = torch.arange(WORD_BITS, dtype=torch.int32, device=device)
        z = signs(words.unsqueeze(-1), shifts).flatten(1)  # [seeds, words * 32]
        offset = first - WORD_BITS * lo
    return z[:, offset : offset + n]


def axpy_z_(flat: torch.Tensor, start: int, keys: torch.Tensor, coefs: torch.Tensor, kind: str) -> None:
    """flat += sum_s coefs[s] * z(keys[s]) over elements [start, start + len(flat)), in float32 (eager)."""
    z = _block_z(int(start), flat.numel(), keys, kind, flat.device)
    update = (coefs.unsqueeze(1) * z).sum(0)
    flat.copy_((flat.to(torch.float32) + update).to(flat.dtype))


def rows_(weight: torch.Tensor, rows: torch.Tensor, keys: torch.Tensor, coefs: torch.Tensor, kind: str) -> None:
    """weight[rows] += sum_s coefs[s] * z(keys[s]) on those rows of a 2-D parameter only (element-wise stream:
    every element keeps its own index, so a row's z is the same as in a whole-tensor pass)."""
    width = weight.shape[1]
    counter = rows.to(torch.int32).unsqueeze(1) * width + torch.arange(width, dtype=torch.int32,
                                                                       device=weight.device)
    z = GENERATORS[kind](counter.unsqueeze(0), keys[:, None, None, :])  # [seeds, rows, width]
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
    counter = counters(pairs.numel(), start, pairs.device).unsqueeze(1)
    x, y = pair_fn(counter, keys.unsqueeze(0))  # [pairs, seeds]; pair_fn: bench/gaussian_floor.py times its parts
    low, high = _halves(pairs)
    pairs.copy_(_packed(low + (x * coefs).sum(1), high + (y * coefs).sum(1)))


def _gaussian_few_(pairs: torch.Tensor, start: torch.Tensor, keys: torch.Tensor, coefs: torch.Tensor) -> None:
    """The packed Gaussian update for a few seeds, unrolled: one pass over the weights applies them all (a seeds
    axis this short would be a reduction the kernel cannot vectorise)."""
    counter = counters(pairs.numel(), start, pairs.device)
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
    counter = counters(rows.shape[0], start, rows.device)
    shifts = torch.arange(WORD_BITS, dtype=torch.int32, device=rows.device)
    total = rows.to(torch.float32)
    for s in range(keys.shape[0]):
        words = rademacher_words(counter, keys[s])  # [words]
        total = total + coefs[s] * signs(words.unsqueeze(1), shifts)
    rows.copy_(total.to(rows.dtype))


def _rademacher_word_table(count: int, start: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """The words of `count` consecutive word counters for every seed: [words, seeds] (one block's worth)."""
    return rademacher_words(counters(count, start, keys.device).unsqueeze(1), keys.unsqueeze(0))


def _rademacher_fold_(rows: torch.Tensor, words: torch.Tensor, coefs: torch.Tensor) -> None:
    """rows[w, b] += sum_s coefs[s] * sign(bit b of words[w, s]): many seeds onto one cached block."""
    shifts = torch.arange(WORD_BITS, dtype=torch.int32, device=rows.device).view(1, WORD_BITS, 1)
    z = signs(words.unsqueeze(1), shifts)  # [words, 32, seeds]
    rows.copy_((rows.to(torch.float32) + (z * coefs).sum(2)).to(rows.dtype))


def _rademacher_many_(rows: torch.Tensor, start: torch.Tensor, keys: torch.Tensor, coefs: torch.Tensor) -> None:
    """Rademacher update with several seeds: the word table first (hashed once per word and seed), then the
    fold; two kernels, because one fused kernel re-hashes every word for each of its 32 signs."""
    words = compiled("rademacher_table")(rows.shape[0], start, keys)
    compiled("rademacher_fold")(rows, words, coefs)


def _generic_(flat: torch.Tensor, start: torch.Tensor, keys: torch.Tensor, coefs: torch.Tensor, kind: str) -> None:
    """Element-wise update for layouts the two kernels above do not cover (e.g. bfloat16 Gaussian)."""
    z = GENERATORS[kind](counters(flat.numel(), start, flat.device), keys.unsqueeze(1))  # [seeds, n]
    flat.copy_((flat.to(torch.float32) + (coefs.unsqueeze(1) * z).sum(0)).to(flat.dtype))


_compiled: dict[str, Callable] = {}


def compiled(name: str) -> Callable:
    """The named kernel compiled once per process, shape-dynamic (one graph serves every parameter size)."""
    if name not in _compiled:
        source = {"gaussian": _gaussian_packed_, "gaussian_few": _gaussian_few_, "generic": _generic_,
                  "rademacher": _rademacher_words_,
                  "rademacher_table": _rademacher_word_table, "rademacher_fold": _rademacher_fold_,
                  "rows": rows_}[name]
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
        return 2, compiled("gaussian_few" if seeds <= FEW else "gaussian"), lambda part: part.view(torch.int64)
    if kind == "rademacher":
        kernel = compiled("rademacher") if seeds <= FEW else _rademacher_many_
        return WORD_BITS, kernel, lambda part: part.view(-1, WORD_BITS)
    generic = compiled("generic")
    return 1, lambda part, start, keys, coefs: generic(part, start, keys, coefs, kind), lambda part: part


def few_seed_pass(flat: torch.Tensor, kind: str) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """flat += sum_s coefs[s] * z(keys[s]) for at most FEW seeds as one prepared kernel call over the whole
    parameter (pure pointwise, no buffer). Kernel, view and start are built once per parameter."""
    unit, kernel, view = _layout(flat, 1, kind)
    body = flat.numel() - flat.numel() % unit
    if body < 2 * unit:  # dynamic shapes specialise sizes 0 and 1: leave tiny tensors to eager
        return lambda keys, coefs: axpy_z_(flat, 0, keys, coefs, kind)
    part, tail = view(flat[:body]), flat[body:]
    start = torch.zeros((), dtype=torch.int32, device=flat.device)

    def apply(keys: torch.Tensor, coefs: torch.Tensor) -> None:
        kernel(part, start, keys, coefs)
        if tail.numel():
            axpy_z_(tail, body, keys, coefs, kind)

    return apply


def apply_compiled_(flat: torch.Tensor, keys: torch.Tensor, coefs: torch.Tensor, kind: str) -> None:
    """flat += sum_s coefs[s] * z(keys[s]) for several seeds, in cache-sized blocks so that each block's
    accumulators stay in cache while every seed visits it; leftover elements go the eager way."""
    unit, kernel, view = _layout(flat, keys.shape[0], kind)
    n = flat.numel()
    body = n - n % unit
    block = _REPLAY_BLOCK
    for first in range(0, body, block):
        last = min(body, first + block)
        if last - first < 2 * unit:  # dynamic shapes specialise sizes 0 and 1: leave tiny pieces to eager
            axpy_z_(flat[first:last], first, keys, coefs, kind)
            continue
        start = torch.tensor(first // unit, dtype=torch.int32, device=flat.device)
        kernel(view(flat[first:last]), start, keys, coefs)
    if body < n:
        axpy_z_(flat[body:], body, keys, coefs, kind)
