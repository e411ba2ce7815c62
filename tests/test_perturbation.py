"""z(seed) is a pure function of (seed, parameter name, element index): FedKSeed's premise that a seed alone
reproduces a perturbation on every client, whatever the model layout, dtype or blocking."""
from __future__ import annotations

import os

os.environ.setdefault("FEDKSEED_COMPILE", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from optimizers import perturbation as perturbation_module  # noqa: E402
from optimizers import z_kernels  # noqa: E402
from optimizers.perturbation import Perturbation, keys_for, z_for  # noqa: E402

NAME = "model.layers.0.mlp.up_proj.weight"
ULPS = {"rtol": 4 * 2**-23, "atol": 1e-6}  # the native kernel's fused multiply-adds move z by a few ulps


def zero_module(shapes: dict[str, tuple[int, ...]], dtype=torch.float32) -> torch.nn.Module:
    """A module whose parameters are registered in the order of `shapes` (names may be dotted)."""
    root = torch.nn.Module()
    for name, shape in shapes.items():
        owner = root
        *path, leaf = name.split(".")
        for part in path:
            if not hasattr(owner, part):
                owner.add_module(part, torch.nn.Module())
            owner = getattr(owner, part)
        owner.register_parameter(leaf, torch.nn.Parameter(torch.zeros(shape, dtype=dtype)))
    return root


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_z_does_not_depend_on_the_order_parameters_are_visited():
    shapes = {"embed.weight": (50, 7), "layers.0.proj.weight": (13, 11), "layers.0.proj.bias": (13,),
              "head.weight": (3, 50)}
    forward = zero_module(shapes)
    backward = zero_module(dict(reversed(list(shapes.items()))))
    assert [n for n, _ in forward.named_parameters()] != [n for n, _ in backward.named_parameters()]
    for model in (forward, backward):
        Perturbation(model).perturb_(seed=987, scale=0.3)
    a, b = params(forward), params(backward)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
        torch.testing.assert_close(a[name].view(-1), 0.3 * z_for(987, name, a[name].numel()), **ULPS, msg=name)


def test_z_does_not_depend_on_dtype_bf16_is_the_cast_of_fp32():
    shapes = {"a.weight": (40, 33), "b.bias": (77,)}
    fp32, bf16 = zero_module(shapes), zero_module(shapes, dtype=torch.bfloat16)
    scale = 0.01
    for kind in ("gaussian", "rademacher"):
        for p in (*fp32.parameters(), *bf16.parameters()):
            p.data.zero_()
        Perturbation(fp32, kind=kind, compile=False).perturb_(5, scale)  # one path for both: the native kernel's
        Perturbation(bf16, kind=kind, compile=False).perturb_(5, scale)  # few-ulp moves could flip a bf16 rounding
        for (name, p32), (_, p16) in zip(fp32.named_parameters(), bf16.named_parameters(), strict=True):
            assert p16.dtype == torch.bfloat16
            expected = (scale * z_for(5, name, p32.numel(), kind)).to(torch.bfloat16).view(p16.shape)
            assert torch.equal(p16.detach(), expected), (kind, name)
            assert torch.equal(p32.detach().to(torch.bfloat16), expected), (kind, name)


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
@pytest.mark.parametrize("numel", [1, 31, 65535, 65537, 200003])
def test_eager_blocked_z_equals_the_reference_z_for(kind, numel):
    model = zero_module({"w": (numel,)})
    Perturbation(model, kind=kind, compile=False).perturb_(4242, 1.0)
    assert torch.equal(model.w.detach(), z_for(4242, "w", numel, kind))


def test_z_stream_is_pinned():
    # PINNED on purpose: these literals are the z stream every client, checkpoint and saved c depends on.
    # If this test fails, the stream changed and every saved coefficient vector (seed pool + c) now
    # describes a different model. Do not update the numbers unless that break is intended.
    # (The integers are platform-exact; the gaussian floats are float32 arithmetic with no math library, equal
    # everywhere up to a few ulps. They changed once, by at most 1.2e-7, when log/cos/sin gave way to it.)
    gaussian = torch.tensor([0.31605005264282227, 0.09448880702257156, -0.2830216884613037,
                             -0.18810003995895386, -0.04173066467046738, -0.6916065216064453,
                             0.09668397158384323, -1.2240098714828491], dtype=torch.float32)
    signs = torch.tensor([1, -1, 1, 1, 1, -1, 1, 1, 1, 1, 1, -1, 1, -1, -1, 1], dtype=torch.float32)
    torch.testing.assert_close(z_for(12345, NAME, 8, "gaussian"), gaussian, **ULPS)
    assert torch.equal(z_for(12345, NAME, 16, "rademacher"), signs)
    for kind, expected in (("gaussian", gaussian), ("rademacher", signs)):  # the default (native) path too
        model = zero_module({NAME: (len(expected),)})
        Perturbation(model, kind=kind).perturb_(12345, 1.0)
        torch.testing.assert_close(dict(model.named_parameters())[NAME].detach(), expected, **ULPS)


def test_keys_differ_for_adjacent_seeds_and_for_different_names():
    base = keys_for(100, NAME)
    assert len(base) == 3 and all(0 <= k < 2**32 for k in base)
    assert keys_for(100, NAME) == base  # pure
    for other in (keys_for(101, NAME), keys_for(99, NAME), keys_for(100, NAME.replace("up", "down")),
                  keys_for(100, NAME + "x")):
        assert all(a != b for a, b in zip(base, other, strict=True))
    # "1:2x" vs "12:x" style ambiguity: the seed/name separator keeps these apart
    assert keys_for(1, "2x") != keys_for(12, "x")


N_STATS = 1_000_000


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.double().numpy(), b.double().numpy())[0, 1])


def test_gaussian_z_has_standard_normal_moments():
    z = z_for(2024, NAME, N_STATS, "gaussian").double()
    mean = float(z.mean())
    var = float(z.var())
    kurtosis = float(((z - mean) ** 4).mean() / var**2)
    assert abs(mean) < 0.005
    assert abs(var - 1.0) < 0.01
    assert abs(kurtosis - 3.0) < 0.05
    assert abs(float((z > 0).double().mean()) - 0.5) < 0.005  # symmetric
    assert abs(float((z.abs() < 1).double().mean()) - 0.6827) < 0.005  # one-sigma mass


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_z_of_adjacent_seeds_and_adjacent_elements_are_uncorrelated(kind):
    z0 = z_for(777, NAME, N_STATS, kind)
    z1 = z_for(778, NAME, N_STATS, kind)
    other_name = z_for(777, NAME.replace("0", "1"), N_STATS, kind)
    assert abs(corr(z0, z1)) < 0.005  # seeds j and j+1 are independent directions
    assert abs(corr(z0, other_name)) < 0.005
    assert abs(corr(z0[:-1], z0[1:])) < 0.005  # lag-1 autocorrelation within a parameter
    assert abs(corr(z0[:-32], z0[32:])) < 0.005  # rademacher: neighbouring 32-bit words


def test_rademacher_z_is_plus_minus_one_with_zero_mean():
    z = z_for(31337, NAME, N_STATS, "rademacher")
    assert set(torch.unique(z).tolist()) == {-1.0, 1.0}
    assert abs(float(z.double().mean())) < 0.005


def test_replay_equals_the_sum_of_per_seed_perturbations_across_seed_chunks():
    shapes = {"a.weight": (300, 7), "b": (5003,)}  # several 1024-element blocks at 64 seeds
    rng = np.random.default_rng(0)
    seeds = rng.choice(2**31, size=70, replace=False).tolist()  # > 64: two replay chunks
    coefs = rng.normal(scale=1e-2, size=70).tolist()
    one_by_one, replayed = zero_module(shapes), zero_module(shapes)
    single = Perturbation(one_by_one)
    for s, c in zip(seeds, coefs, strict=True):
        single.perturb_(s, c)
    Perturbation(replayed).replay_(seeds, coefs)
    expected = {n: sum(c * z_for(s, n, p.numel()).double() for s, c in zip(seeds, coefs, strict=True))
                for n, p in one_by_one.named_parameters()}
    for (name, a), (_, b) in zip(one_by_one.named_parameters(), replayed.named_parameters(), strict=True):
        assert float(a.detach().abs().max()) > 0.01  # it moved
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=1e-6)
        torch.testing.assert_close(b.detach().view(-1).double(), expected[name], rtol=0, atol=1e-6)


def test_replay_chunks_seeds_by_64_and_skips_zero_coefficients(monkeypatch):
    calls: list[int] = []
    real = z_kernels.axpy_z_

    def spy(flat, start, keys, coefs, kind):
        calls.append(keys.shape[0])
        assert bool((coefs != 0).all())
        real(flat, start, keys, coefs, kind)

    monkeypatch.setattr(perturbation_module, "axpy_z_", spy)
    model = zero_module({"w": (10,)})
    torch.nn.init.normal_(model.w)
    before = params(model)
    perturbation = Perturbation(model, compile=False)

    perturbation.replay_(list(range(70)), [0.0] * 70)
    assert calls == []
    assert torch.equal(model.w, before["w"])

    perturbation.replay_(list(range(70)), [0.1] * 70)
    assert calls == [64, 6]

    calls.clear()
    seeds, coefs = [3, 4, 5, 6], [0.0, 0.2, 0.0, -0.1]
    mixed, reference = zero_module({"w": (10,)}), zero_module({"w": (10,)})
    Perturbation(mixed, compile=False).replay_(seeds, coefs)
    assert calls == [2]
    Perturbation(reference, compile=False).replay_([4, 6], [0.2, -0.1])
    assert torch.equal(mixed.w, reference.w)


def test_replay_rejects_mismatched_seeds_and_coefficients():
    with pytest.raises(ValueError):
        Perturbation(zero_module({"w": (4,)})).replay_([1, 2], [0.1])


def test_compiled_z_equals_eager_z_for_odd_sizes_and_many_seeds():
    shapes = {"w": (70001,), "layer.b": (3, 5)}  # 70001 is not a multiple of the 65536-element block
    seeds = [1, 2, 3, 77, 123456, 2**31 - 1]
    coefs = [0.05, -0.1, 0.2, 1e-3, -0.025, 0.1]
    for kind in ("gaussian", "rademacher"):
        compiled, eager = zero_module(shapes), zero_module(shapes)
        Perturbation(compiled, kind=kind, compile=True).replay_(seeds, coefs)
        Perturbation(eager, kind=kind, compile=False).replay_(seeds, coefs)
        for (name, a), (_, b) in zip(compiled.named_parameters(), eager.named_parameters(), strict=True):
            assert float(b.detach().abs().max()) > 0.1, name
            torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=1e-6, msg=f"{kind} {name}")
