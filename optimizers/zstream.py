"""The perturbation z: a pure function of (seed, parameter name, element index), the same on every device.

Each element's value comes from a counter-based hash: the key is derived from (seed, parameter name) with
blake2b, and the counter is the element's index (or the index of the pair / word it belongs to). Nothing
depends on the order in which parameters are visited, on the device, on the blocking, or on the model's
dtype (z is made in float32 and cast at the end). The integer stream is bitwise identical everywhere. The
float transform calls no math library: ln and sin/cos are short series after an exact reduction (_radius,
_quarter_turns), so it is float32 +, -, *, / and sqrt in a fixed order, which every backend evaluates alike
up to a few ulps (a fused multiply-add, a vector sqrt). z is within 1e-6 of Box-Muller computed in float64.

The streams:
    gaussian    elements 2p and 2p+1 are the two Box-Muller outputs r*cos(t), r*sin(t) of pair p, with
                r = sqrt(-2 ln u1), t = 2 pi u2, and (u1, u2) from the words w1, w2 hashed from p
    rademacher  element i is bit (i mod 32) of the word hashed from i // 32, mapped to {-1, +1}
Both share their expensive part (hash, ln, sqrt, sin/cos) among several elements: a pair, a 32-bit word.

Integer arithmetic is int32 holding the bits of uint32 values: additions and multiplications wrap modulo
2**32 (two's complement) in torch's CPU kernels, in inductor's vectorised C++ and in Triton alike, and right
shifts are made logical with a mask. int32 lanes are twice as many per vector as int64 ones, which is what
makes the hash cheap. The tests check every path bit for bit against an independent int64 reference.

z_for() is the reference: the whole tensor in one go, for tests and tools. optimizers/z_native_source.py (CPU) and
optimizers/z_kernels.py (eager blocks, torch.compile kernels) apply the same stream fast;
optimizers/perturbation.py is what the project calls.
"""
from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence

import numpy as np
import torch

KINDS = ("gaussian", "rademacher")
_MUL1 = 0x7FEB352D
_MUL2 = 0x846CA68B - (1 << 32)  # the int32 bits of the uint32 constant
WORD_BITS = 32  # Rademacher signs per hashed word
_LN2 = 0.6931471805599453
_SQRT2_MANTISSA = 0x3504F3  # float32 mantissa bits of sqrt(2)
_TURN_STEP = (math.pi / 2) / 2**22  # radians per unit of the angle's 22 bits below the quarter turn


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit integer hash (xorshift-multiply, 'lowbias32' constants) on int32-held uint32 bits."""
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * _MUL1
    x = x ^ ((x >> 15) & 0x1FFFF)
    x = x * _MUL2
    return x ^ ((x >> 16) & 0xFFFF)


def counters(n: int, start: int | torch.Tensor, device) -> torch.Tensor:
    """int32 counters start, start+1, ..., start+n-1 (start: an int or an int32 scalar tensor)."""
    return torch.arange(n, dtype=torch.int32, device=device) + start


def _radius(w1: torch.Tensor) -> torch.Tensor:
    """sqrt(-2 ln u1), u1 = k * 2**-24 with k the odd 24-bit number in w1's top bits (u1 in (0, 1), never 0).

    ln k comes from k's float32 exponent e and mantissa f (moved into [sqrt(1/2), sqrt(2))) as
    e ln 2 + 2 atanh((f - 1) / (f + 1)), the series to s**9 (error < 1e-9): plain float32 arithmetic that every
    backend (eager, inductor's C++, Triton, optimizers/z_native_source.py) evaluates the same way, step for step.
    """
    k = (((w1 >> 8) & 0xFFFFFE) | 1).to(torch.float32)  # exact: below 2**24
    bits = k.view(torch.int32)
    mantissa = bits & 0x7FFFFF
    high = (mantissa > _SQRT2_MANTISSA).to(torch.int32)  # f above sqrt(2): use f / 2 and e + 1
    f = (mantissa | (0x3F800000 - high * 0x800000)).view(torch.float32)
    e = (bits >> 23) - 127 + high
    s = (f - 1.0) / (f + 1.0)
    s2 = s * s
    series = 1.0 + s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0))))
    minus_ln_u = (24 - e).to(torch.float32) * _LN2 - 2.0 * s * series
    return torch.sqrt(2.0 * minus_ln_u)


def _quarter_turns(w2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) of the angle 2 pi a / 2**24, a the 24-bit number in w2's top bits.

    The angle is reduced exactly in integers to q quarter turns plus t in [-pi/4, pi/4); Taylor series to t**9
    (sin) and t**8 (cos) are good to 3e-8 there, and the quarter turns swap and negate them.
    """
    a = (w2 >> 8) & 0xFFFFFF
    rounded = (a + (1 << 21)) >> 22
    q = rounded & 3
    t = (a - (rounded << 22)).to(torch.float32) * _TURN_STEP
    t2 = t * t
    sin_t = t * (1.0 + t2 * (-1.0 / 6.0 + t2 * (1.0 / 120.0 + t2 * (-1.0 / 5040.0 + t2 * (1.0 / 362880.0)))))
    cos_t = 1.0 + t2 * (-0.5 + t2 * (1.0 / 24.0 + t2 * (-1.0 / 720.0 + t2 * (1.0 / 40320.0))))
    odd = (q & 1) == 1
    c, s = torch.where(odd, sin_t, cos_t), torch.where(odd, cos_t, sin_t)
    return torch.where((q == 1) | (q == 2), -c, c), torch.where(q >= 2, -s, s)


def gaussian_pairs(pair: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two standard normals (x, y) of int32 pair counters; keys[..., 0:3] are int32 keys (broadcast)."""
    w1 = _mix32(_mix32(pair + keys[..., 0]) ^ keys[..., 1])
    w2 = _mix32(w1 ^ keys[..., 2])
    radius = _radius(w1)
    cos, sin = _quarter_turns(w2)
    return radius * cos, radius * sin


def rademacher_words(word: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """The 32-bit word (int32 bits) whose bits are the signs of elements 32*word ... 32*word+31."""
    return _mix32(_mix32(word + keys[..., 0]) ^ keys[..., 1])


def gaussian(counter: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Element-wise form of the Gaussian stream: element i is half (i mod 2) of pair i // 2."""
    x, y = gaussian_pairs(counter >> 1, keys)
    return torch.where((counter & 1) == 0, x, y)


def signs(words: torch.Tensor, bit: torch.Tensor) -> torch.Tensor:
    """Bit `bit` of each word as a Rademacher value: 1 -> +1.0, 0 -> -1.0 (float32; broadcasts)."""
    return (((words >> bit) & 1) * 2 - 1).to(torch.float32)


def rademacher(counter: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Element-wise form of the Rademacher stream: bit (i mod 32) of word i // 32, as -1 or +1."""
    return signs(rademacher_words(counter >> 5, keys), counter & 31)


GENERATORS = {"gaussian": gaussian, "rademacher": rademacher}


@functools.lru_cache(maxsize=1 << 17)  # a run draws from K seeds x its parameter names, pass after pass
def keys_for(seed: int, name: str) -> tuple[int, int, int]:
    """Three uint32 keys for one (seed, parameter name): the stream's only link to either."""
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=12).digest()
    return tuple(int.from_bytes(digest[i : i + 4], "little") for i in (0, 4, 8))


def key_array(pairs: Sequence[tuple[int, str]]) -> np.ndarray:
    """The keys of (seed, name) pairs as int32 bits, one row each: [len(pairs), 3]."""
    return np.array([keys_for(int(s), n) for s, n in pairs], dtype=np.uint32).reshape(len(pairs), 3).view(np.int32)


def key_tensor(pairs: Sequence[tuple[int, str]], device="cpu") -> torch.Tensor:
    """key_array as a torch tensor on `device`."""
    return torch.from_numpy(key_array(pairs)).to(device)


def z_for(seed: int, name: str, numel: int, kind: str = "gaussian", device="cpu") -> torch.Tensor:
    """Reference: the whole float32 z of one parameter, generated in one go (tests and tools only)."""
    counter = torch.arange(numel, dtype=torch.int32, device=device)
    return GENERATORS[kind](counter, key_tensor([(seed, name)], device)[0])
