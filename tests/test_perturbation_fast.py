"""The fast perturbation paths (eager blocks, compiled packed/word kernels, many-seed replay) produce exactly
the stream a plain whole-tensor implementation defines, and that stream looks like what it claims to be.

The reference below is written out independently of optimizers/zstream.py (only keys_for, the
blake2b key derivation, is shared). The compiled check compiles every kernel once (tens of seconds on a
cold inductor cache); it runs whatever FEDKSEED_COMPILE says, because it is the only test of those kernels.
"""
from __future__ import annotations

import math
import os

os.environ.setdefault("FEDKSEED_COMPILE", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from optimizers import perturbation as pert  # noqa: E402
from optimizers import z_kernels, zstream  # noqa: E402
from optimizers.perturbation import Perturbation, keys_for  # noqa: E402

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
    """Box-Muller on every pair, both outputs, interleaved: z[2p] = r cos t, z[2p+1] = r sin t."""
    w1, w2 = ref_gaussian_words(seed, name, (numel + 1) // 2)
    u1 = (2 * (w1 >> 9) + 1).to(torch.float32) * 2.0**-24
    t = (w2 >> 8).to(torch.float32) * (2 * math.pi * 2.0**-24)
    r = torch.sqrt(-2.0 * torch.log(u1))
    z = torch.empty(2 * len(w1), dtype=torch.float32)
    z[0::2], z[1::2] = r * torch.cos(t), r * torch.sin(t)
    return z[:numel]


def ref_rademacher_words(seed: int, name: str, words: int) -> torch.Tensor:
    k0, k1, _ = keys_for(seed, name)
    return ref_mix32(ref_mix32((torch.arange(words, dtype=torch.int64) + k0) & U32) ^ k1)


def ref_rademacher(seed: int, name: str, numel: int) -> torch.Tensor:
    """Element i is bit (i mod 32) of word i // 32: 1 -> +1, 0 -> -1."""
    words = ref_rademacher_words(seed, name, (numel + 31) // 32)
    bits = (words.unsqueeze(1) >> torch.arange(32)) & 1
    return (2 * bits - 1).to(torch.float32).reshape(-1)[:numel]


REFERENCE = {"gaussian": ref_gaussian, "rademacher": ref_rademacher}


def one_param(numel: int, dtype=torch.float32, name: str = "w") -> torch.nn.Module:
    module = torch.nn.Module()
    module.register_parameter(name, torch.nn.Parameter(torch.zeros(numel, dtype=dtype)))
    return module


# Sizes around every block boundary the code has: pairs (2), words (32), eager block (65536) and the compiled
# replay block, plus tiny tensors that dynamic shapes would special-case.
SIZES = [1, 2, 3, 31, 33, 95, 65536 + 33, 3 * z_kernels._REPLAY_BLOCK + 37]


# ---------------------------------------------------------------------------------------------------- tests
def test_integer_stream_is_bitwise_the_reference():
    seed = 4242
    w1, w2 = ref_gaussian_words(seed, NAME, 5000)
    keys = pert.key_tensor([(seed, NAME)])[0]  # int32 bits of the uint32 keys
    assert [k & U32 for k in keys.tolist()] == list(keys_for(seed, NAME))
    pairs = torch.arange(5000, dtype=torch.int32)
    a = zstream._mix32(pairs + keys[0])
    assert a.dtype == torch.int32  # the project hashes in int32 with wrapping arithmetic
    assert torch.equal(zstream._mix32(a ^ keys[1]).to(torch.int64) & U32, w1)
    assert torch.equal(zstream._mix32(zstream._mix32(a ^ keys[1]) ^ keys[2]).to(torch.int64) & U32, w2)
    assert torch.equal(zstream.rademacher_words(pairs, keys).to(torch.int64) & U32,
                       ref_rademacher_words(seed, NAME, 5000))
    assert int(w1.min()) >= 0 and int(w1.max()) < 2**32  # the reference holds uint32 values in int64


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
@pytest.mark.parametrize("numel", SIZES)
def test_eager_blocks_equal_the_reference(kind, numel):
    model = one_param(numel)
    Perturbation(model, kind=kind, compile=False).perturb_(99, 1.0)
    expected = REFERENCE[kind](99, "w", numel)
    torch.testing.assert_close(model.w.detach(), expected, rtol=0, atol=1e-6)
    if kind == "rademacher":
        assert torch.equal(model.w.detach(), expected)  # signs are exact


def test_z_for_is_the_reference():
    for kind, ref in REFERENCE.items():
        torch.testing.assert_close(pert.z_for(5, NAME, 1001, kind), ref(5, NAME, 1001), rtol=0, atol=1e-6)


def test_compiled_kernels_equal_the_reference_and_replay_equals_per_seed_sums():
    """Every compiled kernel once: single seed (step) and many seeds (replay), both kinds, odd sizes,
    float32 (packed pairs / word rows) and bfloat16 (element-wise kernel)."""
    seeds = [3, 17, 2**31 - 1, 123456, 5]
    coefs = [0.05, -0.1, 0.2, 1e-3, -0.025]
    for kind, ref in REFERENCE.items():
        for numel in (33, 2 * z_kernels._REPLAY_BLOCK + 37):
            model = one_param(numel)
            Perturbation(model, kind=kind, compile=True).perturb_(11, 0.5)
            torch.testing.assert_close(model.w.detach(), 0.5 * ref(11, "w", numel), rtol=0, atol=1e-6,
                                       msg=f"{kind} {numel} single seed")
            model = one_param(numel)
            Perturbation(model, kind=kind, compile=True).replay_(seeds, coefs)
            expected = sum(c * ref(s, "w", numel).double() for s, c in zip(seeds, coefs, strict=True))
            torch.testing.assert_close(model.w.detach().double(), expected, rtol=0, atol=2e-6,
                                       msg=f"{kind} {numel} replay")
        bf16 = one_param(1001, dtype=torch.bfloat16)
        Perturbation(bf16, kind=kind, compile=True).perturb_(11, 0.5)
        torch.testing.assert_close(bf16.w.detach().float(), (0.5 * ref(11, "w", 1001)).bfloat16().float(),
                                   rtol=0, atol=1e-2, msg=f"{kind} bfloat16")


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_replay_of_delta_c_equals_the_sum_of_per_seed_applications(kind):
    rng = np.random.default_rng(7)
    seeds = rng.choice(2**31, size=130, replace=False).tolist()  # three chunks of at most 64 seeds
    coefs = rng.normal(scale=1e-2, size=130).tolist()
    coefs[5] = 0.0  # zero coefficients are skipped, not applied
    numel = 70001
    one_by_one, replayed = one_param(numel), one_param(numel)
    single = Perturbation(one_by_one, kind=kind, compile=False)
    for s, c in zip(seeds, coefs, strict=True):
        single.perturb_(s, c)
    Perturbation(replayed, kind=kind, compile=False).replay_(seeds, coefs)
    expected = sum(c * REFERENCE[kind](s, "w", numel).double() for s, c in zip(seeds, coefs, strict=True))
    torch.testing.assert_close(replayed.w.detach(), one_by_one.w.detach(), rtol=0, atol=2e-6)
    torch.testing.assert_close(replayed.w.detach().double(), expected, rtol=0, atol=2e-6)


# ------------------------------------------------------------------------------------------------ statistics
N = 1 << 20  # 1M samples: the standard error of a mean or a correlation is 1e-3; tolerances are 5 of them


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.double().numpy(), b.double().numpy())[0, 1])


def test_gaussian_moments_and_pair_independence():
    z = ref_gaussian(2024, NAME, N).double()
    assert torch.allclose(pert.z_for(2024, NAME, N).double(), z, atol=1e-6)
    mean, var = float(z.mean()), float(z.var())
    assert abs(mean) < 5e-3
    assert abs(var - 1.0) < 7e-3  # standard error sqrt(2/N) = 1.4e-3
    assert abs(float(((z - mean) ** 4).mean()) / var**2 - 3.0) < 0.03  # standard error 5e-3
    assert abs(float((z.abs() < 1).double().mean()) - 0.682689) < 3e-3
    assert abs(float((z.abs() > 3).double().mean()) - 0.0026998) < 5e-4  # the tails are there
    x, y = z[0::2], z[1::2]  # the two Box-Muller outputs of each pair: independent, not just uncorrelated
    assert abs(corr(x, y)) < 5e-3
    assert abs(corr(x**2, y**2)) < 5e-3


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_no_correlation_between_adjacent_seeds_elements_and_names(kind):
    ref = REFERENCE[kind]
    z0, z1 = ref(777, NAME, N), ref(778, NAME, N)
    assert abs(corr(z0, z1)) < 5e-3  # seeds j and j+1
    assert abs(corr(z0, ref(777, NAME.replace("q_proj", "k_proj"), N))) < 5e-3  # adjacent parameters
    for lag in (1, 2, 31, 32, 33):  # within a pair / word and across neighbouring pairs / words
        assert abs(corr(z0[:-lag], z0[lag:])) < 5e-3, lag
    if kind == "rademacher":
        assert set(torch.unique(z0).tolist()) == {-1.0, 1.0}
        assert abs(float(z0.double().mean())) < 5e-3


@pytest.mark.parametrize("compile", [False, True])
def test_two_terms_in_one_pass_equal_the_sum_of_their_references(compile):
    """The folded pass of a MeZO step (restore-and-update of one seed + the next seed's +eps), both kinds,
    sizes off the pair / word / block boundaries."""
    for kind, ref in REFERENCE.items():
        for numel in (33, 2 * z_kernels._REPLAY_BLOCK + 37):
            model = one_param(numel)
            Perturbation(model, kind=kind, compile=compile).apply_([pert.Term(11, 0.5), pert.Term(2**31 - 1, -0.25)])
            expected = 0.5 * ref(11, "w", numel).double() - 0.25 * ref(2**31 - 1, "w", numel).double()
            torch.testing.assert_close(model.w.detach().double(), expected, rtol=0, atol=1e-6,
                                       msg=f"{kind} {numel} compile={compile}")
