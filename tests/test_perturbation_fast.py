"""The fast perturbation paths (eager blocks, compiled packed/word kernels, many-seed replay) produce exactly
the stream a plain whole-tensor implementation defines, and that stream looks like what it claims to be.
The native kernel has its own tests (test_perturbation_native.py).

The reference (tests/zstream_reference.py) is written out independently of optimizers/zstream.py (only
keys_for, the blake2b key derivation, is shared). The compiled check compiles every kernel once (tens of seconds on a
cold inductor cache); it runs whatever FEDKSEED_COMPILE says, because it is the only test of those kernels.
"""
from __future__ import annotations

import os

os.environ.setdefault("FEDKSEED_COMPILE", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from optimizers import perturbation as pert  # noqa: E402
from optimizers import z_kernels, zstream  # noqa: E402
from optimizers.perturbation import Perturbation, keys_for  # noqa: E402
from zstream_reference import (  # noqa: E402
    NAME,
    REFERENCE,
    U32,
    ref_gaussian,
    ref_gaussian_words,
    ref_rademacher_words,
)


def one_param(numel: int, dtype=torch.float32, name: str = "w") -> torch.nn.Module:
    module = torch.nn.Module()
    module.register_parameter(name, torch.nn.Parameter(torch.zeros(numel, dtype=dtype)))
    return module


# Sizes around every block boundary the code has: pairs (2), words (32), native blocks (1024 / 2048), eager
# block (65536) and the compiled replay block, plus tiny tensors that dynamic shapes would special-case.
SIZES = [1, 2, 3, 31, 33, 95, 1025, 2048 + 33, 65536 + 33, 3 * z_kernels._REPLAY_BLOCK + 37]


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


@pytest.mark.parametrize("compile", [False, True, None])  # eager, compiled, native
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
