"""studies/quality_cost/eos_loss.py splits the eval loss into the closing EOS token's and the other answer tokens':
its eval loss is the suite's, and a model that makes EOS likelier everywhere shows as a lower EOS-token loss, a
higher loss on the other tokens and a higher P(EOS first)."""
from __future__ import annotations

import pytest
import torch

from conftest import dolly_records
from evaluations import eval_loss, evaluate, stop_ids
from modeling import load_model, load_tokenizer
from studies.quality_cost.eos_loss import eos_numbers, run_and_round
from utils_data.llm_dataset import LLMDataset


@pytest.mark.parametrize("arg, expected", [
    ("runs/a@15", ("runs/a", 15)), ("runs/a", ("runs/a", None)), ("runs/me@host/a", ("runs/me@host/a", None)),
    ("runs/me@host/a@0", ("runs/me@host/a", 0)),
])
def test_a_run_names_an_earlier_round_after_its_last_at(arg, expected):
    run, at = run_and_round(arg)
    assert (str(run), at) == expected


class EosBoosted(torch.nn.Module):
    """The model with `boost` added to the logits of the stop tokens at every position."""

    def __init__(self, model, stops: list[int], boost: float):
        super().__init__()
        self.model, self.stops, self.boost = model, stops, boost

    def forward(self, **kwargs):
        out = self.model(**kwargs)
        out.logits[..., self.stops] += self.boost
        return out


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))
    dataset = LLMDataset(dolly_records(2)[:12], tokenizer, "dolly", max_length=64)
    return model, tokenizer, dataset, stop_ids(model, tokenizer), tokenizer.pad_token_id


def test_the_split_measures_the_suites_eval_loss_and_p_eos_first(setup):
    model, tokenizer, dataset, stops, pad_id = setup
    numbers = eos_numbers(model, dataset, stops, pad_id)
    assert numbers["records"] == len(dataset)
    assert numbers["eval_loss"] == pytest.approx(eval_loss(model, dataset, 1, pad_id), rel=1e-6)
    generated = evaluate(model, tokenizer, dataset, "rouge", max_new_tokens=1, batch_size=1)
    assert numbers["first_eos_prob"] == pytest.approx(generated["first_eos_prob"], rel=1e-5)
    assert numbers["eos_loss"] != pytest.approx(numbers["content_loss"], rel=1e-3)  # two different token sets


def test_a_model_that_favours_eos_everywhere_shows_in_each_number(setup):
    model, _, dataset, stops, pad_id = setup
    plain = eos_numbers(model, dataset, stops, pad_id)
    boosted = eos_numbers(EosBoosted(model, stops, 3.0), dataset, stops, pad_id)
    assert boosted["eos_loss"] < plain["eos_loss"] - 1.0
    assert boosted["content_loss"] > plain["content_loss"]
    assert boosted["first_eos_prob"] > plain["first_eos_prob"]
