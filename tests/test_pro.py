"""FedKSeed-Pro: seed j is sampled with probability softmax(minmax(mean_t |clip(g_{j,t}, +-bias_loss_clip)|)),
where each seed's history starts with one entry grad_initial."""
from __future__ import annotations

import math
import os

os.environ.setdefault("FEDKSEED_COMPILE", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from optimizers.mezo_bias_optimizer import GradientHistory, MeZOBiasOptimizer, pro_probabilities  # noqa: E402
from optimizers.seed_pool import SeededModel, make_seed_pool  # noqa: E402


def test_probabilities_from_a_fixed_history_match_the_hand_computed_softmax():
    # K = 4, grad_initial = 0.5, clip = 2.0. Histories (initial entry first), |clip(g)| and means:
    #   seed 0: 0.5, 1.0, -3.0        -> 0.5, 1.0, 2.0      mean 3.5/3 = 7/6
    #   seed 1: 0.5                   -> 0.5                mean 0.5
    #   seed 2: 0.5, -0.2             -> 0.5, 0.2           mean 0.35
    #   seed 3: 0.5, 10, 0.1, -0.4    -> 0.5, 2.0, 0.1, 0.4 mean 0.75
    # min-max (span 7/6 - 0.35 = 49/60): 1, (0.15)/(49/60) = 9/49, 0, (0.4)/(49/60) = 24/49
    # softmax: (e, e^(9/49), 1, e^(24/49)) / sum
    history = GradientHistory(4, grad_initial=0.5, clip=2.0)
    history.add(np.array([0, 0]), np.array([1.0, -3.0]))
    history.add(np.array([2]), np.array([-0.2]))
    history.add(np.array([3, 3, 3]), np.array([10.0, 0.1, -0.4]))
    np.testing.assert_allclose(history.abs_sum / history.counts, [7 / 6, 0.5, 0.35, 0.75], rtol=1e-12)
    expected = np.array([0.4148852489122435, 0.1834010789298449, 0.1526277535201109, 0.24908591863780064])
    unnormalised = np.array([math.e, math.exp(9 / 49), 1.0, math.exp(24 / 49)])
    np.testing.assert_allclose(unnormalised / unnormalised.sum(), expected, rtol=1e-12)
    np.testing.assert_allclose(history.probabilities(), expected, rtol=1e-12)
    assert history.probabilities().sum() == pytest.approx(1.0, abs=1e-15)


def test_grad_initial_is_clipped_like_every_other_entry():
    # grad_initial = -3, clip = 2: every history starts with |clip(-3)| = 2.
    #   seed 0: 2, |4| -> 2          mean 2
    #   seed 1: 2, 0, 1              mean 1
    #   seed 2: 2                    mean 2
    # min-max: 1, 0, 1 -> softmax (e, 1, e) / (2e + 1)
    history = GradientHistory(3, grad_initial=-3.0, clip=2.0)
    history.add(np.array([0, 1, 1]), np.array([4.0, 0.0, 1.0]))
    expected = np.array([math.e, 1.0, math.e]) / (2 * math.e + 1)
    np.testing.assert_allclose(history.probabilities(), expected, rtol=1e-12)


def test_pro_probabilities_direct_call_and_invariance_to_scaling():
    p = pro_probabilities(np.array([0.0, 2.0, 1.0]), np.array([1, 1, 1]))
    np.testing.assert_allclose(p, np.array([1.0, math.e, math.exp(0.5)]) / (1 + math.e + math.exp(0.5)),
                               rtol=1e-12)
    # min-max normalisation: a common scale of the gradients does not change the probabilities
    np.testing.assert_allclose(pro_probabilities(np.array([0.0, 2e6, 1e6]), np.array([1, 1, 1])), p, rtol=1e-12)


@pytest.mark.parametrize("grad_initial", [0.0, 0.7])
def test_all_equal_history_gives_uniform_probabilities(grad_initial):
    fresh = GradientHistory(5, grad_initial=grad_initial, clip=1000.0)
    np.testing.assert_allclose(fresh.probabilities(), np.full(5, 0.2), rtol=1e-12)
    equal = GradientHistory(5, grad_initial=1.0, clip=1000.0)
    equal.add(np.arange(5), np.array([1.0, -1.0, 1.0, -1.0, 1.0]))  # |g| equal, signs irrelevant
    np.testing.assert_allclose(equal.probabilities(), np.full(5, 0.2), rtol=1e-12)
    assert np.all(np.isfinite(equal.probabilities()))


def test_history_add_counts_repeated_indices_in_one_upload():
    history = GradientHistory(4, grad_initial=0.0, clip=5.0)
    history.add(np.array([1, 1, 3, 1]), np.array([0.5, -0.7, 9.0, 0.25]))
    np.testing.assert_allclose(history.abs_sum, [0.0, 0.5 + 0.7 + 0.25, 0.0, 5.0], rtol=1e-12)
    np.testing.assert_array_equal(history.counts, [1, 4, 1, 2])
    history.add(np.array([], dtype=np.int64), np.array([], dtype=np.float64))  # an all-skipped client
    np.testing.assert_array_equal(history.counts, [1, 4, 1, 2])


def bias_optimizer(probabilities: np.ndarray) -> MeZOBiasOptimizer:
    k = len(probabilities)
    seeded = SeededModel(torch.nn.Linear(3, 2), make_seed_pool(k, np.random.default_rng(0)), lr=0.1)
    return MeZOBiasOptimizer(seeded, lr=0.1, eps=0.01, grad_clip=-1.0, probabilities=probabilities)


def test_bias_sampling_frequencies_follow_the_pro_probabilities():
    history = GradientHistory(4, grad_initial=0.5, clip=2.0)
    history.add(np.array([0, 0, 2, 3, 3, 3]), np.array([1.0, -3.0, -0.2, 10.0, 0.1, -0.4]))
    probabilities = history.probabilities()
    optimizer = bias_optimizer(probabilities)
    rng = np.random.default_rng(2024)
    draws = 20000
    counts = np.bincount([optimizer.sample_seed_index(rng) for _ in range(draws)], minlength=4)
    assert np.abs(counts / draws - probabilities).max() < 0.01
    chi2 = float(((counts - draws * probabilities) ** 2 / (draws * probabilities)).sum())
    assert chi2 < 16.3  # 3 degrees of freedom, p = 0.001
    # and clearly not uniform: seed 0 is drawn about 0.41 of the time, seed 2 about 0.15
    assert counts[0] > 2 * counts[2]


def test_bias_step_uses_only_seeds_with_probability_mass():
    optimizer = bias_optimizer(np.array([0.0, 0.0, 1.0, 0.0]))
    rng = np.random.default_rng(0)
    batch = {"x": torch.ones(4, 3)}
    for _ in range(5):
        result = optimizer.step(batch, lambda model, b: model(b["x"]).pow(2).mean(), rng)
        assert result.seed_index == 2
    assert np.flatnonzero(optimizer.seeded.c).tolist() == [2]


def test_bias_optimizer_rejects_probabilities_of_the_wrong_length():
    seeded = SeededModel(torch.nn.Linear(3, 2), make_seed_pool(4, np.random.default_rng(0)), lr=0.1)
    with pytest.raises(ValueError, match="3 probabilities for 4 seeds"):
        MeZOBiasOptimizer(seeded, lr=0.1, eps=0.01, grad_clip=-1.0, probabilities=np.full(3, 1 / 3))
