"""Half-precision models hold theta0 - lr * sum_j c_j z_j to within an ulp, however small each round's change: they
are rebuilt from theta0 with the cumulative c (summed in float32, rounded once), never moved round by round."""
from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("FEDKSEED_COMPILE", "0")  # the compiled half-precision kernels take minutes to build

import main
from conftest import tiny_flags
from modeling import load_model
from optimizers.perturbation import z_for
from optimizers.seed_pool import FileTheta0, SeededModel, make_seed_pool

HALF = [torch.float16, torch.bfloat16]
NAMES = {torch.float16: "float16", torch.bfloat16: "bfloat16"}


def closed_form(theta0: dict[str, torch.Tensor], seed_pool: np.ndarray, c: np.ndarray, lr: float,
                kind: str = "gaussian") -> dict[str, torch.Tensor]:
    """theta0 - lr * sum_j c_j z_j in float64, from the reference z."""
    out = {}
    for name, base in theta0.items():
        acc = base.double().flatten().clone()
        for j in np.flatnonzero(c):
            acc -= lr * float(c[j]) * z_for(int(seed_pool[j]), name, base.numel(), kind).double()
        out[name] = acc.view_as(base)
    return out


def ulps_off(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> float:
    """The largest distance of a weight from its float64 value, in ulps of the weight's dtype at that value."""
    worst = 0.0
    for name, p in model.named_parameters():
        target = expected[name]
        rounded = target.to(p.dtype)
        ulp = (torch.nextafter(rounded.abs(), torch.full_like(rounded, float("inf"))) - rounded.abs()).double()
        worst = max(worst, float(((p.detach().double() - target).abs() / ulp).max()))
    return worst


@pytest.fixture(scope="module")
def models(tiny_model_dir):
    return {dtype: load_model(str(tiny_model_dir), NAMES[dtype]) for dtype in HALF}


def snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("compile_z", [None, False])  # native float32 accumulation, and plain torch
def test_rounds_of_changes_land_within_an_ulp_of_the_closed_form(models, dtype, compile_z):
    model = copy.deepcopy(models[dtype])
    theta0 = snapshot(model)
    pool = make_seed_pool(16, np.random.default_rng(0))
    seeded = SeededModel(model, pool, lr=1e-4, compile=compile_z)
    rng = np.random.default_rng(1)
    for _ in range(5):
        delta = np.zeros(16)
        delta[rng.choice(16, size=4, replace=False)] = rng.normal(size=4) * 3
        seeded.move_to(seeded.c + delta)
    assert np.count_nonzero(seeded.c) > 4
    assert ulps_off(model, closed_form(theta0, pool, seeded.c, 1e-4)) <= 1.0


@pytest.mark.parametrize("dtype", HALF)
def test_changes_below_half_an_ulp_each_still_move_the_weights(models, dtype):
    model = copy.deepcopy(models[dtype])
    theta0 = snapshot(model)
    pool = make_seed_pool(4, np.random.default_rng(0))
    # Weights in [2^-6, 2^-5) have an ulp of 2^-16 (float16) or 2^-13 (bfloat16); each round moves them by
    # ulp/16 * |z|, which rounds away for |z| < 8 (every z here) when added to the half-precision weights.
    ulp = 2.0 ** (-6 - (10 if dtype == torch.float16 else 7))
    seeded = SeededModel(model, pool, lr=ulp / 16)
    for _ in range(48):
        seeded.move_to(seeded.c + np.array([1.0, 0.0, 0.0, 0.0]))
    moved, band = 0, 0
    for name, p in model.named_parameters():
        in_band = (theta0[name].abs() >= 2.0 ** -6) & (theta0[name].abs() < 2.0 ** -5)
        band += int(in_band.sum())
        moved += int((p.detach() != theta0[name])[in_band].sum())
    assert band > 1000 and moved > band // 2  # 48 rounds = 3 ulps * |z|: most of the band has moved
    assert ulps_off(model, closed_form(theta0, pool, seeded.c, ulp / 16)) <= 1.0


def test_replay_of_rounds_rebuilds_the_same_half_precision_model(models):
    pool = make_seed_pool(8, np.random.default_rng(0))
    live = SeededModel(copy.deepcopy(models[torch.bfloat16]), pool, lr=1e-3)
    rng = np.random.default_rng(2)
    deltas = []
    for _ in range(4):
        idx = np.sort(rng.choice(8, size=3, replace=False)).astype(np.int32)
        values = rng.normal(size=3)
        delta = np.zeros(8)
        delta[idx] = values
        live.move_to(live.c + delta)
        deltas.append((idx, values))
    replayed = SeededModel(copy.deepcopy(models[torch.bfloat16]), pool, lr=1e-3)
    replayed.replay_rounds(deltas)
    assert np.array_equal(replayed.c, live.c)
    for (_, a), (_, b) in zip(live.model.named_parameters(), replayed.model.named_parameters(), strict=True):
        assert torch.equal(a, b)



def test_theta0_is_read_from_the_model_file_where_it_holds_the_models_values(models):
    """A bfloat16 model loaded from float32 safetensors: theta0 is the file's tensors cast as loading cast them (no
    copy in memory), and rebuilds from it equal rebuilds from a copy bit for bit; a model changed after loading is
    not what its file holds, so it gets a copy."""
    pool, c = make_seed_pool(8, np.random.default_rng(0)), np.random.default_rng(3).normal(size=8)
    on_disk = SeededModel(copy.deepcopy(models[torch.bfloat16]), pool, lr=1e-3)
    assert isinstance(on_disk.theta0, FileTheta0) and set(on_disk.theta0) == set(snapshot(on_disk.model))
    in_memory = SeededModel(copy.deepcopy(models[torch.bfloat16]), pool, lr=1e-3,
                            theta0=snapshot(models[torch.bfloat16]))
    on_disk.move_to(c)
    in_memory.move_to(c)
    for (_, a), (_, b) in zip(on_disk.model.named_parameters(), in_memory.model.named_parameters(), strict=True):
        assert torch.equal(a, b)
    changed = copy.deepcopy(models[torch.bfloat16])
    with torch.no_grad():
        next(changed.parameters()).view(-1)[0] += 1.0
    theta0 = SeededModel(changed, pool, lr=1e-3).theta0
    assert not isinstance(theta0, FileTheta0) and torch.equal(theta0[next(iter(theta0))],
                                                              next(changed.parameters()).detach())

def test_a_bfloat16_run_ends_at_the_closed_form(tiny_model_dir, dolly_file, tmp_path):
    flags = tiny_flags(tiny_model_dir, dolly_file, tmp_path / "run", "--dtype", "bfloat16", "--no_eval_base",
                       local_step=3, clients=2, m=1, eval_examples=2, eval_metric=None, max_new_tokens=2, zo_eps="1e-2",
                       no_compile=False)
    result = main.train(flags)
    server = result["method"].server
    assert np.count_nonzero(result["method"].c) > 0
    theta0 = snapshot(load_model(str(tiny_model_dir), "bfloat16"))
    assert ulps_off(server.seeded.model, closed_form(theta0, server.seed_pool, result["method"].c, 1e-3)) <= 1.0
