"""Rouge-L against hand-computed LCS values, left-padded greedy generation, and the eval loss."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import dolly_records
from evaluations import eval_loss, evaluate, generate_greedy, rouge_l
from modeling import lm_loss, load_model, load_tokenizer
from utils_data.default_tokens import IGNORE_INDEX
from utils_data.llm_dataset import LLMDataset, collate_right_pad

PROMPTS = ["what is the river ?", "tell me about paris", "a",
           "name three red book and the water of london city", "who is it"]  # different lengths on purpose


def f1(lcs: int, n_pred: int, n_ref: int) -> float:
    p, r = lcs / n_pred, lcs / n_ref
    return 2 * p * r / (p + r) if lcs else 0.0


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="module")
def dataset(tiny):
    # Responses of 1-3 repeats, so examples have different numbers of response tokens.
    records = [dict(r, response=" ".join([r["response"]] * (1 + i % 3)))
               for i, r in enumerate(dolly_records(2))]
    return LLMDataset(records[:10], tiny[1], "dolly", max_length=64)


# --- rouge_l ---------------------------------------------------------------------------------------

def test_rouge_l_matches_hand_computed_lcs():
    cases = [  # (prediction, reference, LCS length, prediction words, reference words)
        ("the cat on the mat", "the cat sat on the mat", 5, 5, 6),
        ("police killed the gunman", "the gunman police killed", 2, 4, 4),
        ("one two three four", "one x two y three", 3, 4, 5),
        ("red blue", "blue green red water", 1, 2, 4),
    ]
    for pred, ref, lcs, n_pred, n_ref in cases:
        assert rouge_l([pred], [ref]) == pytest.approx(f1(lcs, n_pred, n_ref), abs=1e-9), (pred, ref)
    expected = sum(f1(*c[2:]) for c in cases) / len(cases)
    assert rouge_l([c[0] for c in cases], [c[1] for c in cases]) == pytest.approx(expected, abs=1e-9)
    assert f1(5, 5, 6) == pytest.approx(10 / 11)


def test_rouge_l_edges():
    assert rouge_l(["the cat sat"], ["the cat sat"]) == pytest.approx(1.0)
    assert rouge_l(["The Cat, sat!"], ["the cat sat"]) == pytest.approx(1.0)  # lower-cased, no punctuation
    assert rouge_l(["red blue"], ["green water"]) == 0.0
    assert rouge_l([""], ["green water"]) == 0.0
    assert rouge_l(["cats running"], ["cat run"]) == 0.0  # no stemming
    assert rouge_l(["a b", "c d"], ["a b", "x y"]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        rouge_l(["a"], ["a", "b"])
    with pytest.raises(ValueError):
        rouge_l([], [])


# --- generate_greedy -------------------------------------------------------------------------------

def encode(tokenizer, prompts: list[str]) -> list[list[int]]:
    return [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]


def manual_greedy(model, tokenizer, prompt: str, n: int) -> str:
    """Reference: argmax of a full forward pass per step, no cache, no padding."""
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    start = ids.shape[1]
    with torch.no_grad():
        for _ in range(n):
            nxt = model(input_ids=ids).logits[0, -1].argmax()
            ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
            if nxt.item() == tokenizer.eos_token_id:
                break
    return tokenizer.decode(ids[0, start:], skip_special_tokens=True).strip()


def test_generate_returns_only_the_greedy_continuation(tiny):
    model, tok = tiny
    out = generate_greedy(model, tok, encode(tok, PROMPTS[:2]), max_new_tokens=10)
    assert out == [manual_greedy(model, tok, p, 10) for p in PROMPTS[:2]]
    assert all(o and not o.startswith(p) for o, p in zip(out, PROMPTS[:2], strict=True))


def test_batched_left_padding_equals_one_by_one(tiny):
    model, tok = tiny
    assert tok.padding_side == "right"  # the default here: generate_greedy must not rely on it
    single = [generate_greedy(model, tok, encode(tok, [p]), max_new_tokens=12)[0] for p in PROMPTS]
    assert all(single) and len(set(single)) == len(PROMPTS)  # non-trivial, distinct outputs
    for bs in (2, len(PROMPTS)):
        assert generate_greedy(model, tok, encode(tok, PROMPTS), max_new_tokens=12, batch_size=bs) == single
    assert tok.padding_side == "right"

    # The comparison has teeth: right-padded batched generation gives different text on this model.
    enc = tok(PROMPTS, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, do_sample=False, max_new_tokens=12, pad_token_id=tok.pad_token_id)
    new = out[:, enc["input_ids"].shape[1]:]
    right = [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]
    assert right != single



def test_first_eos_probability_is_that_of_the_first_answer_token(tiny):
    model, tok = tiny
    expected = []
    with torch.no_grad():
        for ids in encode(tok, PROMPTS):
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            expected.append(logits.softmax(dim=-1)[tok.eos_token_id].item())
    assert len(set(expected)) == len(PROMPTS)  # one value a prompt: a mix-up of rows would show
    first_eos = []
    generate_greedy(model, tok, encode(tok, PROMPTS), max_new_tokens=4, batch_size=2, first_eos=first_eos)
    assert first_eos == pytest.approx(expected, rel=1e-4)


def test_an_answer_that_starts_with_eos_is_empty_and_counted(tiny, dataset):
    model, tok = tiny
    base = evaluate(model, tok, dataset, "rouge", max_new_tokens=4, batch_size=4)
    assert base["empty_answers"] == 0.0 and base["first_eos_prob"] < 0.05

    def eos_first(module, inputs, logits):  # every position prefers EOS; only the first answer token matters
        logits[..., tok.eos_token_id] += 30.0
        return logits

    handle = model.lm_head.register_forward_hook(eos_first)
    try:
        generations = []
        out = evaluate(model, tok, dataset, "rouge", max_new_tokens=4, batch_size=4, generations=generations)
    finally:
        handle.remove()
    assert out["empty_answers"] == 1.0 and out["first_eos_prob"] > 0.99
    assert all(g["prediction"] == "" and g["first_eos_prob"] > 0.99 for g in generations)

# --- eval_loss -------------------------------------------------------------------------------------

def test_eval_loss_matches_hand_cross_entropy(tiny, dataset):
    model, _ = tiny
    item = dataset[0]
    with torch.no_grad():
        logits = model(input_ids=item["input_ids"][None]).logits[0]
    labels = item["labels"][1:]
    mask = labels != IGNORE_INDEX
    expected = F.cross_entropy(logits[:-1][mask], labels[mask]).item()
    one = torch.utils.data.Subset(dataset, [0])
    assert eval_loss(model, one) == pytest.approx(expected, abs=1e-5)
    with torch.no_grad():
        assert lm_loss(model, collate_right_pad([item], 0)).item() == pytest.approx(expected, abs=1e-5)


def test_eval_loss_is_a_mean_over_examples_whatever_the_batch_size(tiny, dataset):
    model, _ = tiny
    per_example = [eval_loss(model, torch.utils.data.Subset(dataset, [i])) for i in range(len(dataset))]
    expected = sum(per_example) / len(per_example)
    for bs in (1, 3, 4):
        assert eval_loss(model, dataset, batch_size=bs) == pytest.approx(expected, abs=1e-5), bs
    # A token-weighted batch loss would differ here, so the check above is not vacuous.
    with torch.no_grad():
        batch_loss = lm_loss(model, collate_right_pad([dataset[i] for i in range(4)], 0)).item()
    assert abs(batch_loss - sum(per_example[:4]) / 4) > 1e-4


# --- evaluate --------------------------------------------------------------------------------------

def test_evaluate_keys_by_metric(tiny, dataset):
    model, tok = tiny
    loss = eval_loss(model, dataset)
    assert evaluate(model, tok, dataset, "loss") == pytest.approx({"eval_loss": loss}, abs=1e-5)
    generations = []
    out = evaluate(model, tok, dataset, "rouge", max_new_tokens=8, batch_size=4, progress=True,
                   generations=generations)
    assert set(out) == {"eval_loss", "rouge_l", "empty_answers", "first_eos_prob"}
    preds = generate_greedy(model, tok, [dataset.prompt_ids(i) for i in range(len(dataset))], max_new_tokens=8)
    refs = [r["response"] for r in dataset.records]
    assert out["rouge_l"] == pytest.approx(rouge_l(preds, refs))
    pairs = list(zip(preds, refs, strict=True))
    assert [(g["record"], g["prediction"], g["reference"]) for g in generations] == \
        [(i, p, r) for i, (p, r) in enumerate(pairs)]
    assert [g["rouge_l"] for g in generations] == pytest.approx([rouge_l([p], [r]) for p, r in pairs])
    assert 0.0 <= out["rouge_l"] <= 1.0 and out["eval_loss"] == pytest.approx(loss, abs=1e-5)
    with pytest.raises(ValueError):
        evaluate(model, tok, dataset, "bleu")
