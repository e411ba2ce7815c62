"""One MeZO step (FedKSeed's local update): g = (L(theta + eps z) - L(theta - eps z)) / 2eps with z = z(seed_j)
for a seed j of the pool, theta <- theta - lr g z, c_j <- c_j + g; non-finite or clipped steps change nothing."""
from __future__ import annotations

import copy
import itertools
import os

os.environ.setdefault("FEDKSEED_COMPILE", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch.func import functional_call  # noqa: E402

from conftest import (
    dolly_records,  # noqa: E402
    materialise,  # noqa: E402
)
from modeling import lm_loss, load_model, load_tokenizer  # noqa: E402
from optimizers.mezo_optimizer import MeZOOptimizer  # noqa: E402
from optimizers.perturbation import z_for  # noqa: E402
from optimizers.seed_pool import SeededModel, make_seed_pool  # noqa: E402
from utils_data.llm_dataset import LLMDataset, collate_right_pad  # noqa: E402

K = 8


def regression_problem(seed: int = 0):
    """A small linear model with a squared loss: smooth, so the finite difference is well conditioned."""
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    batch = {"x": torch.randn(16, 6, generator=gen), "y": torch.randn(16, 1, generator=gen)}
    return model, batch


def mse(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    return ((model(batch["x"]) - batch["y"]) ** 2).mean()


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    data = LLMDataset(dolly_records(1)[:2], tokenizer, "plain", max_length=64)
    batch = collate_right_pad([data[0], data[1]], tokenizer.pad_token_id)
    return load_model(str(tiny_model_dir)), batch


def z_of(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    return {n: z_for(seed, n, p.numel()).view(p.shape) for n, p in model.named_parameters()}


def shifted_loss(model, theta: dict, z: dict, scale: float, loss_on, batch) -> float:
    """L(theta + scale z), computed with functional weights, never touching the model's own."""
    weights = {n: theta[n] + scale * z[n] for n in theta}
    with torch.no_grad():
        return float(loss_on(lambda *a, **kw: functional_call(model, weights, a, kw), batch))


def lm_loss_on(call, batch):
    """lm_loss written again against a callable (the reference for the step's own lm_loss)."""
    out = call(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    return out.loss.float()


def mse_on(call, batch):
    return ((call(batch["x"]) - batch["y"]) ** 2).mean()


@pytest.mark.parametrize("problem", ["regression", "tiny_lm"])
def test_step_moves_theta_by_minus_lr_g_z_and_adds_g_to_c(problem, request):
    if problem == "regression":
        model, batch = regression_problem()
        loss_fn, functional_loss, eps, lr = mse, mse_on, 1e-2, 0.05
    else:
        base, batch = request.getfixturevalue("tiny_lm")
        model = copy.deepcopy(base)
        loss_fn, functional_loss, eps, lr = lm_loss, lm_loss_on, 1e-2, 1e-3
    pool = make_seed_pool(K, np.random.default_rng(1))
    seeded = SeededModel(model, pool, lr)
    seeded.c = np.linspace(-1.0, 1.0, K)  # c_j <- c_j + g must add to what is there
    c_before = seeded.c.copy()
    theta0 = {n: p.detach().clone() for n, p in model.named_parameters()}

    result = MeZOOptimizer(seeded, lr=lr, eps=eps).step(batch, loss_fn, np.random.default_rng(7))

    assert result.skipped is None
    seed = int(pool[result.seed_index])
    z = z_of(model, seed)
    loss_plus = shifted_loss(model, theta0, z, eps, functional_loss, batch)
    loss_minus = shifted_loss(model, theta0, z, -eps, functional_loss, batch)
    g = (loss_plus - loss_minus) / (2 * eps)
    assert abs(g) > 1e-3  # a real gradient, so the update below is not vacuous
    assert result.grad == pytest.approx(g, rel=1e-3, abs=1e-4)
    assert result.loss == pytest.approx((loss_plus + loss_minus) / 2, rel=1e-5)
    for name, p in model.named_parameters():
        expected = theta0[name] - lr * result.grad * z[name]
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-6, msg=name)
    delta_c = seeded.c - c_before
    assert delta_c[result.seed_index] == pytest.approx(result.grad, abs=1e-12)
    assert np.count_nonzero(np.delete(delta_c, result.seed_index)) == 0


def test_after_steps_the_model_is_theta0_minus_lr_sum_c_z():
    model, batch = regression_problem()
    theta0_model = copy.deepcopy(model)
    pool = make_seed_pool(K, np.random.default_rng(2))
    seeded = SeededModel(model, pool, lr=0.05)
    optimizer = MeZOOptimizer(seeded, lr=0.05, eps=1e-2)
    rng = np.random.default_rng(3)
    losses = [optimizer.step(batch, mse, rng).loss for _ in range(20)]
    assert np.count_nonzero(seeded.c) >= 2
    assert losses[-1] < losses[0]  # zeroth-order descent on a smooth loss
    rebuilt = materialise(theta0_model, pool, seeded.c, 0.05)
    for (name, a), (_, b) in zip(model.named_parameters(), rebuilt.named_parameters(), strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=1e-5, msg=name)


def scripted_loss(values):
    """A loss_fn returning the given values in turn, so a step sees chosen L+ and L-."""
    it = iter(values)
    return lambda model, batch: torch.tensor(next(it))


@pytest.mark.parametrize("values", [(1.0, float("nan")), (float("nan"), 1.0), (float("inf"), 1.0),
                                    (1.0, float("-inf"))])
def test_non_finite_loss_skips_the_step_and_restores_theta_and_c(values):
    model, batch = regression_problem()
    theta0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    seeded = SeededModel(model, make_seed_pool(K, np.random.default_rng(0)), lr=0.05)
    seeded.c[:] = 0.5
    result = MeZOOptimizer(seeded, lr=0.05, eps=0.1, grad_clip=100.0).step(
        batch, scripted_loss(values), np.random.default_rng(0))
    assert result.skipped == "nan"
    assert result.grad == 0.0
    assert np.all(seeded.c == 0.5)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), theta0[name], rtol=0, atol=1e-6, msg=name)


def test_loss_gap_above_grad_clip_skips_the_step():
    model, batch = regression_problem()
    theta0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    seeded = SeededModel(model, make_seed_pool(K, np.random.default_rng(0)), lr=0.05)
    result = MeZOOptimizer(seeded, lr=0.05, eps=0.1, grad_clip=1.0).step(
        batch, scripted_loss([5.0, 1.0]), np.random.default_rng(0))
    assert result.skipped == "clip"
    assert not np.any(seeded.c)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), theta0[name], rtol=0, atol=1e-6, msg=name)

    # The same gap under a looser clip is a normal step with g = (5 - 1) / (2 * 0.1) = 20.
    result = MeZOOptimizer(seeded, lr=0.05, eps=0.1, grad_clip=4.5).step(
        batch, scripted_loss([5.0, 1.0]), np.random.default_rng(0))
    assert result.skipped is None
    assert result.grad == pytest.approx(20.0)
    assert seeded.c[result.seed_index] == pytest.approx(20.0)


@pytest.mark.parametrize("grad_clip", [0.0, -1.0, -100.0])
def test_grad_clip_at_or_below_zero_never_clips(grad_clip):
    model, batch = regression_problem()
    seeded = SeededModel(model, make_seed_pool(K, np.random.default_rng(0)), lr=1e-9)
    result = MeZOOptimizer(seeded, lr=1e-9, eps=0.5, grad_clip=grad_clip).step(
        batch, scripted_loss([1e6, -1e6]), np.random.default_rng(0))
    assert result.skipped is None
    assert result.grad == pytest.approx(2e6)
    assert seeded.c[result.seed_index] == pytest.approx(2e6)


def test_uniform_seed_choice_covers_the_pool_evenly():
    k, draws = 16, 16000
    seeded = SeededModel(torch.nn.Linear(2, 1), make_seed_pool(k, np.random.default_rng(0)), lr=0.1)
    optimizer = MeZOOptimizer(seeded, lr=0.1, eps=0.1)
    rng = np.random.default_rng(123)
    counts = np.bincount([optimizer.sample_seed_index(rng) for _ in range(draws)], minlength=k)
    assert len(counts) == k and counts.min() > 0
    expected = draws / k
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 37.7  # chi-square, 15 degrees of freedom, p = 0.001


def test_step_uses_the_seed_it_samples_and_changes_only_that_coefficient():
    model, batch = regression_problem()
    pool = make_seed_pool(K, np.random.default_rng(4))
    seeded = SeededModel(model, pool, lr=0.05)
    optimizer = MeZOOptimizer(seeded, lr=0.05, eps=1e-2)
    for rng_seed in itertools.islice(itertools.count(), 5):
        expected_index = int(np.random.default_rng(rng_seed).integers(K))
        before = seeded.c.copy()
        result = optimizer.step(batch, mse, np.random.default_rng(rng_seed))
        assert result.seed_index == expected_index
        changed = np.flatnonzero(seeded.c != before)
        assert changed.tolist() == [expected_index]


def test_folded_steps_equal_separate_steps_and_leave_the_model_at_theta0_minus_lr_sum_c_z():
    """steps() rides each restore-and-update on the next +eps pass; the run ends where separate steps end."""
    model, batch = regression_problem(3)
    folded_model = copy.deepcopy(model)
    pool = make_seed_pool(K, np.random.default_rng(2))
    lr, eps = 0.05, 1e-2
    separate, folded = SeededModel(model, pool, lr), SeededModel(folded_model, pool, lr)
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    one_by_one = [MeZOOptimizer(separate, lr, eps).step(batch, mse, rng_a) for _ in range(5)]
    in_a_run = list(MeZOOptimizer(folded, lr, eps).steps([batch] * 5, mse, rng_b))
    assert [r.seed_index for r in in_a_run] == [r.seed_index for r in one_by_one]
    assert len({r.seed_index for r in in_a_run}) > 1  # several seeds, so the folded passes mixed two of them
    np.testing.assert_allclose(folded.c, separate.c, rtol=1e-4, atol=1e-6)
    for (name, a), (_, b) in zip(folded_model.named_parameters(), model.named_parameters(), strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=1e-5, msg=name)


def test_closing_a_run_early_applies_the_pending_update():
    model, batch = regression_problem(4)
    theta0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    pool = make_seed_pool(K, np.random.default_rng(2))
    seeded = SeededModel(model, pool, 0.05)
    run = MeZOOptimizer(seeded, 0.05, 1e-2).steps(itertools.repeat(batch), mse, np.random.default_rng(1))
    results = [next(run), next(run)]
    run.close()  # an endless run stopped after two steps
    assert all(r.skipped is None for r in results)
    for name, p in model.named_parameters():
        expected = theta0[name] - 0.05 * sum(c * z_for(int(s), name, p.numel()).view(p.shape)
                                             for s, c in zip(pool, seeded.c, strict=True) if c != 0)
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-6, msg=name)
