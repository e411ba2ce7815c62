"""The native kernel (optimizers/z_native_source.py) applies the same z as the reference and the eager path: signs
bit for bit, Gaussian floats within a few ulps (fused multiply-adds), for any size, table of tensors, seed
count and thread count; it is rebuilt when storage moves, and the project falls back when it is off or
cannot be built."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from optimizers import z_native
from optimizers.perturbation import Perturbation, Term
from optimizers.zstream import key_tensor, z_for
from zstream_reference import REFERENCE

ULPS = {"rtol": 4 * 2**-23, "atol": 1e-6}
SIZES = [1, 2, 3, 31, 32, 33, 1023, 1024, 1025, 2047, 2048 + 33, 65536 + 17]

pytestmark = pytest.mark.skipif(z_native.library() is None, reason="no C++ compiler to build the native kernel")


@pytest.fixture(autouse=True)
def _eager_fallback(monkeypatch):
    monkeypatch.setenv("FEDKSEED_COMPILE", "0")  # what the native kernel does not take goes the eager way here


def zeros(*sizes: int) -> torch.nn.Module:
    module = torch.nn.Module()
    for i, n in enumerate(sizes):
        module.register_parameter(f"p{i}", torch.nn.Parameter(torch.zeros(n)))
    return module


def expected(seeds: list[int], coefs: list[float], name: str, numel: int, kind: str) -> torch.Tensor:
    return sum(c * z_for(s, name, numel, kind).double() for s, c in zip(seeds, coefs, strict=True)).float()


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_single_seed_equals_the_reference_for_sizes_off_every_block(kind):
    model = zeros(*SIZES)
    perturbation = Perturbation(model, kind=kind)
    assert perturbation._native()[0] is not None  # the native path is what runs
    perturbation.perturb_(99, 1.0)
    for name, p in model.named_parameters():
        got = p.detach()
        torch.testing.assert_close(got, z_for(99, name, p.numel(), kind), **ULPS, msg=name)
        torch.testing.assert_close(got, REFERENCE[kind](99, name, p.numel()), rtol=0, atol=2e-6, msg=name)
        if kind == "rademacher":
            assert torch.equal(got, z_for(99, name, p.numel(), kind)), name  # signs are exact


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
@pytest.mark.parametrize("count", [1, 2, 3, 70])  # direct loops (1, 2 seeds), block accumulators (3+)
def test_several_seeds_equal_the_sum_of_their_z(kind, count):
    rng = np.random.default_rng(count)
    seeds = rng.choice(2**31, size=count, replace=False).tolist()
    coefs = rng.normal(scale=0.1, size=count).tolist()
    model = zeros(2048 + 33, 5, 70001)
    Perturbation(model, kind=kind).replay_(seeds, coefs)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected(seeds, coefs, name, p.numel(), kind),
                                   rtol=0, atol=1e-6 * max(1, count // 8), msg=name)


def test_a_zero_coefficient_leaves_its_tensor_untouched():
    model = zeros(3000, 3001)
    keys = np.stack([key_tensor([(5, "p0"), (6, "p0")]).numpy(), key_tensor([(5, "p1"), (6, "p1")]).numpy()])
    coefs = np.array([[0.5, 0.0], [0.0, 0.0]], dtype=np.float32)
    z_native.NativePass(z_native.library(), [p.detach() for p in model.parameters()], "gaussian")(keys, coefs)
    torch.testing.assert_close(model.p0.detach(), 0.5 * z_for(5, "p0", 3000), **ULPS)
    assert not model.p1.detach().any()


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_the_result_does_not_depend_on_the_thread_count(kind):
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            model = zeros(300_001, 7, 200_000)
            Perturbation(model, kind=kind).apply_([Term(3, 0.5), Term(4, -0.25)])
            results.append(torch.cat([p.detach() for p in model.parameters()]))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(results[0], r) for r in results[1:])


def test_a_replaced_storage_is_followed():
    model = zeros(4099)
    perturbation = Perturbation(model)
    perturbation.perturb_(1, 1.0)
    old = model.p0.data
    model.p0.data = torch.zeros(4099)  # e.g. a load_state_dict(assign=True) or .to()
    perturbation.perturb_(2, 1.0)
    torch.testing.assert_close(old, z_for(1, "p0", 4099), **ULPS)  # not written again
    torch.testing.assert_close(model.p0.detach(), z_for(2, "p0", 4099), **ULPS)


def test_parameters_the_kernel_cannot_take_go_the_other_way():
    model = zeros(1001, 1002)
    model.p1.data = torch.zeros(1002, dtype=torch.float16)
    perturbation = Perturbation(model)
    native, covered = perturbation._native()
    assert native is not None and covered == [0]
    perturbation.perturb_(8, 1.0)
    torch.testing.assert_close(model.p0.detach(), z_for(8, "p0", 1001), **ULPS)
    assert torch.equal(model.p1.detach(), z_for(8, "p1", 1002).half())


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
@pytest.mark.parametrize("count", [1, 2, 3])  # direct loops (1, 2 seeds), block accumulators (3+)
def test_a_bfloat16_weight_takes_the_float32_update_rounded_once(kind, count):
    """In place on bfloat16 storage: widened, the float32 update added, rounded to nearest even; what the float32
    pass gives the same weights, then cast (and so no float32 copy of the tensor is needed)."""
    rng = np.random.default_rng(count)
    sizes = (2048 + 33, 5, 70001)
    start = [torch.from_numpy(rng.normal(size=n).astype(np.float32)).bfloat16() for n in sizes]
    half, wide = zeros(*sizes), zeros(*sizes)
    for i, t in enumerate(start):
        half.get_parameter(f"p{i}").data = t.clone()
        wide.get_parameter(f"p{i}").data = t.float()
    seeds, coefs = rng.choice(2**31, size=count, replace=False).tolist(), rng.normal(size=count).tolist()
    perturbation = Perturbation(half, kind=kind)
    assert perturbation._native()[1] == [2, 1, 0]  # every bfloat16 tensor goes the native way
    perturbation.replay_(seeds, coefs)
    Perturbation(wide, kind=kind).replay_(seeds, coefs)
    for (name, got), want in zip(half.named_parameters(), wide.parameters(), strict=True):
        assert got.dtype == torch.bfloat16 and torch.equal(got.detach(), want.detach().bfloat16()), name


def test_fedkseed_native_0_turns_it_off(monkeypatch):
    monkeypatch.setenv("FEDKSEED_NATIVE", "0")
    model = zeros(1001)
    perturbation = Perturbation(model)
    assert perturbation._native() == (None, [])
    perturbation.perturb_(8, 1.0)
    torch.testing.assert_close(model.p0.detach(), z_for(8, "p0", 1001), **ULPS)


def test_without_a_compiler_it_warns_and_the_project_falls_back(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("FEDKSEED_CACHE", str(tmp_path / "cache"))
    z_native.library.cache_clear()
    try:
        with pytest.warns(UserWarning, match="no C\\+\\+ compiler"):
            model = zeros(1001)
            Perturbation(model).perturb_(8, 1.0)
        torch.testing.assert_close(model.p0.detach(), z_for(8, "p0", 1001), **ULPS)
    finally:
        z_native.library.cache_clear()


def test_a_failing_build_warns_and_the_project_falls_back(monkeypatch, tmp_path):
    compiler = tmp_path / "broken-cxx"
    compiler.write_text("#!/bin/sh\necho 'internal compiler error' >&2\nexit 1\n")
    compiler.chmod(0o755)
    monkeypatch.setenv("CXX", str(compiler))
    monkeypatch.setenv("FEDKSEED_CACHE", str(tmp_path / "cache"))
    z_native.library.cache_clear()
    try:
        with pytest.warns(UserWarning, match="internal compiler error"):
            assert z_native.library() is None
        assert not list((tmp_path / "cache").glob("*.so"))
    finally:
        z_native.library.cache_clear()


def test_rows_reject_ids_outside_the_table_and_wrong_tensors():
    lib, key = z_native.library(), key_tensor([(1, "w")]).numpy()[0]
    with pytest.raises(ValueError, match="row ids"):
        z_native.apply_rows(lib, torch.zeros(4, 3), torch.tensor([4]), key, 1.0, "gaussian")
    with pytest.raises(ValueError, match="2-D float32 or bfloat16"):
        z_native.apply_rows(lib, torch.zeros(4, 3, dtype=torch.float64), torch.tensor([0]), key, 1.0, "gaussian")


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rows_are_bitwise_the_whole_tensor_pass_on_those_rows(kind, dtype):
    width, rows = 37, torch.tensor([0, 5, 6, 40])  # odd width: rows start mid-pair and mid-word
    dense, sparse = torch.zeros(41, width, dtype=dtype), torch.zeros(41, width, dtype=dtype)
    key = key_tensor([(77, "e")]).numpy()
    z_native.NativePass(z_native.library(), [dense], kind)(key[None], np.array([[0.3]], dtype=np.float32))
    z_native.apply_rows(z_native.library(), sparse, rows, key[0], 0.3, kind)
    assert torch.equal(sparse[rows], dense[rows])
    others = torch.ones(41, dtype=torch.bool)
    others[rows] = False
    assert not sparse[others].any()


def test_an_unwritable_cache_warns_and_the_project_falls_back(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("FEDKSEED_CACHE", str(blocker / "cache"))  # below a file: cannot be created
    z_native.library.cache_clear()
    try:
        with pytest.warns(UserWarning, match="native z kernel unavailable"):
            assert z_native.library() is None
    finally:
        z_native.library.cache_clear()
