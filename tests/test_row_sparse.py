"""The input embedding is row-sparse for a MeZO step: a loss reads only the rows of the batch's tokens, so the
+-eps passes touch only those rows, and the last pass gives every other row its update -lr*g*z alone.
The model a step leaves behind is the dense step's (theta0 - lr g z), and the losses are the dense losses."""
from __future__ import annotations

import copy
import os

os.environ.setdefault("FEDKSEED_COMPILE", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from modeling import lm_loss  # noqa: E402
from optimizers.mezo_optimizer import MeZOOptimizer  # noqa: E402
from optimizers.perturbation import Perturbation, z_for  # noqa: E402
from optimizers.seed_pool import SeededModel, make_seed_pool  # noqa: E402

EMBED = "model.embed_tokens.weight"


def llama(tied: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=tied)
    return LlamaForCausalLM(config).eval()


def batch_of(ids: list[int]) -> dict[str, torch.Tensor]:
    tokens = torch.tensor([ids])
    return {"input_ids": tokens, "attention_mask": torch.ones_like(tokens), "labels": tokens.clone()}


def test_only_an_untied_trained_input_embedding_is_row_sparse():
    assert Perturbation(llama(tied=False)).row_sparse == EMBED
    assert Perturbation(llama(tied=True)).row_sparse is None  # the tied output layer reads every row
    frozen = llama(tied=False)
    frozen.get_input_embeddings().weight.requires_grad_(False)
    assert Perturbation(frozen).row_sparse is None
    assert Perturbation(torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 2))).row_sparse is None


@pytest.mark.parametrize("compile", [False, True])
def test_token_rows_get_scale_other_rows_get_rest_and_dense_parameters_get_scale(compile):
    model = llama(tied=False)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tokens = torch.tensor([[7, 3, 7, 41]])  # repeated ids count once
    Perturbation(model, compile=compile).perturb_(99, 0.5, tokens, rest=-0.25)
    for name, p in model.named_parameters():
        z = z_for(99, name, p.numel()).view(p.shape)
        if name == EMBED:
            used = torch.zeros(p.shape[0], dtype=torch.bool)
            used[[3, 7, 41]] = True
            expected = before[name] + torch.where(used.unsqueeze(1), 0.5 * z, -0.25 * z)
        else:
            expected = before[name] + 0.5 * z
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-6, msg=name)


def test_a_step_reads_only_token_rows_perturbed_and_ends_at_the_dense_update():
    model = llama(tied=False)
    dense = copy.deepcopy(model)
    theta0 = model.get_input_embeddings().weight.detach().clone()
    batch = batch_of([5, 9, 9, 12, 30])
    used = torch.zeros(theta0.shape[0], dtype=torch.bool)
    used[[5, 9, 12, 30]] = True
    seen: list[torch.Tensor] = []

    def spying_loss(m: torch.nn.Module, b: dict) -> torch.Tensor:
        seen.append(m.get_input_embeddings().weight.detach().clone())
        return lm_loss(m, b)

    pool = make_seed_pool(4, np.random.default_rng(0))
    lr, eps = 1e-2, 1e-2
    sparse_result = MeZOOptimizer(SeededModel(model, pool, lr), lr, eps).step(batch, spying_loss,
                                                                               np.random.default_rng(3))
    dense_seeded = SeededModel(dense, pool, lr)
    dense_seeded.perturbation.row_sparse = None  # the plain step: every pass over every row
    dense_result = MeZOOptimizer(dense_seeded, lr, eps).step(batch, lm_loss, np.random.default_rng(3))

    z = z_for(int(pool[sparse_result.seed_index]), EMBED, theta0.numel()).view(theta0.shape)
    for got, scale in zip(seen, (eps, -eps), strict=True):  # what the two losses saw
        assert torch.equal(got[~used], theta0[~used])  # rows outside the batch were never perturbed
        torch.testing.assert_close(got[used], theta0[used] + scale * z[used], rtol=0, atol=1e-6)
    assert sparse_result.grad == dense_result.grad  # the very same losses
    assert abs(sparse_result.grad) > 1e-3
    for (name, a), (_, b) in zip(model.named_parameters(), dense.named_parameters(), strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=1e-6, msg=name)
    expected = theta0 - lr * sparse_result.grad * z
    torch.testing.assert_close(model.get_input_embeddings().weight.detach(), expected, rtol=0, atol=1e-6)
