"""An independent reference of the z stream (optimizers/zstream.py), for the tests: integers in int64 holding
uint32 values, floats in float64. Only keys_for, the blake2b key derivation, is shared with the project."""
from __future__ import annotations

import math

import torch

from optimizers.zstream import keys_for

U32 = 0xFFFFFFFF
NAME = "model.layers.3.self_attn.q_proj.weight"


# ------------------------------------------------------------------------------------------------ reference
def ref_mix32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 on uint32 values held in int64 (the multiplications reduced mod 2**32 right away)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & U32
    x = x ^ (x >> 15)
    x = (x * (0x846CA68B - 2**32)) & U32  # == x * 0x846CA68B mod 2**32, products stay below 2**63
    return x ^ (x >> 16)


def ref_gaussian_words(seed: int, name: str, pairs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The two hashed words (w1, w2) of pairs 0 .. pairs-1."""
    k0, k1, k2 = keys_for(seed, name)
    p = torch.arange(pairs, dtype=torch.int64)
    w1 = ref_mix32(ref_mix32((p + k0) & U32) ^ k1)
    return w1, ref_mix32(w1 ^ k2)


def ref_gaussian(seed: int, name: str, numel: int) -> torch.Tensor:
    """Box-Muller on every pair, both outputs, interleaved: z[2p] = r cos t, z[2p+1] = r sin t, computed in
    float64 and rounded once to float32 (the project's float32 arithmetic is within 1e-6 of this)."""
    w1, w2 = ref_gaussian_words(seed, name, (numel + 1) // 2)
    u1 = (2 * (w1 >> 9) + 1).to(torch.float64) * 2.0**-24
    t = (w2 >> 8).to(torch.float64) * (2 * math.pi * 2.0**-24)
    r = torch.sqrt(-2.0 * torch.log(u1))
    z = torch.empty(2 * len(w1), dtype=torch.float64)
    z[0::2], z[1::2] = r * torch.cos(t), r * torch.sin(t)
    return z[:numel].to(torch.float32)


def ref_rademacher_words(seed: int, name: str, words: int) -> torch.Tensor:
    k0, k1, _ = keys_for(seed, name)
    return ref_mix32(ref_mix32((torch.arange(words, dtype=torch.int64) + k0) & U32) ^ k1)


def ref_rademacher(seed: int, name: str, numel: int) -> torch.Tensor:
    """Element i is bit (i mod 32) of word i // 32: 1 -> +1, 0 -> -1."""
    words = ref_rademacher_words(seed, name, (numel + 31) // 32)
    bits = (words.unsqueeze(1) >> torch.arange(32)) & 1
    return (2 * bits - 1).to(torch.float32).reshape(-1)[:numel]


REFERENCE = {"gaussian": ref_gaussian, "rademacher": ref_rademacher}
