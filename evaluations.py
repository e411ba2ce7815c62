"""Evaluation: Rouge-L of greedy generations and the mean response-token loss on a held-out set."""
from __future__ import annotations

import sys
from statistics import fmean

import torch
import torch.nn.functional as F
from tqdm import tqdm

from utils_data.default_tokens import IGNORE_INDEX
from utils_data.llm_dataset import collate_right_pad


def rouge_l_scores(predictions: list[str], references: list[str]) -> list[float]:
    """Rouge-L F-measure of each prediction/reference pair, in [0, 1].

    Scored with rouge-score's RougeScorer(["rougeL"], use_stemmer=False): the paper's code used the
    `rouge` package, which does not stem, and Porter stemming only fits English while Natural
    Instructions has other languages. Raises ValueError on a length mismatch or on no pairs at all
    (an empty evaluation set is a bug upstream, not a score of 0).
    """
    from rouge_score.rouge_scorer import RougeScorer

    if len(predictions) != len(references):
        raise ValueError(f"rouge_l: {len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("rouge_l: no prediction/reference pairs to score")
    scorer = RougeScorer(["rougeL"], use_stemmer=False)
    return [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references, strict=True)]


def rouge_l(predictions: list[str], references: list[str]) -> float:
    """Mean Rouge-L F-measure of prediction/reference pairs (rouge_l_scores)."""
    return fmean(rouge_l_scores(predictions, references))


def _bar(iterable, progress: bool, desc: str):
    """A tqdm bar only when asked for and stderr is a terminal."""
    return tqdm(iterable, desc=desc, disable=not (progress and sys.stderr.isatty()), leave=False)


def stop_ids(model, tokenizer) -> list[int]:
    """The tokens that end a greedy answer: the model's generation EOS ids and the tokenizer's EOS, which training
    appends to every response."""
    eos = model.generation_config.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos:
        eos.append(tokenizer.eos_token_id)
    return eos


@torch.inference_mode()
def generate_greedy(model, tokenizer, prompts: list[list[int]], max_new_tokens: int = 128, batch_size: int = 8,
                    progress: bool = False, first_eos: list[float] | None = None) -> list[str]:
    """Greedy continuations of tokenized `prompts` (new text only, stripped), in input order.

    Prompts are token ids as training saw them (LLMDataset.prompt_ids: BOS when the tokenizer adds it, then the
    template), padded on the left so that each ends right where generation starts. Given a list as `first_eos`,
    each prompt's probability that the answer's first token is an end of sequence (an empty answer) is appended.
    """
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = stop_ids(model, tokenizer)
    outputs: list[str] = []
    for start in _bar(range(0, len(prompts), batch_size), progress, "generate"):
        ids, mask = _left_pad(prompts[start:start + batch_size], pad_id)
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                             do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                             pad_token_id=pad_id, eos_token_id=eos or None,
                             return_dict_in_generate=True, output_logits=first_eos is not None)
        new = out.sequences[:, ids.shape[1]:]
        outputs += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
        if first_eos is not None and eos:
            first = out.logits[0].float().softmax(dim=-1)  # raw logits of the first new token, before any processor
            first_eos += first[:, eos].sum(dim=-1).tolist()
    return outputs


def _left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of rows padded on the left to the longest."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row):] = 1
    return ids, mask


def next_token_logits(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 logits at every position but the last, the labels they predict) of one right-padded batch."""
    device = next(model.parameters()).device
    logits = model(input_ids=batch["input_ids"].to(device),
                   attention_mask=batch["attention_mask"].to(device)).logits.float()
    return logits[:, :-1], batch["labels"].to(device)[:, 1:]  # token t is predicted from positions < t


def _per_example_losses(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean next-token loss over each row's labelled tokens, count of those tokens) for one batch."""
    logits, labels = next_token_logits(model, batch)
    nll = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
    counts = (labels != IGNORE_INDEX).sum(dim=1)
    return nll.sum(dim=1) / counts.clamp(min=1), counts


@torch.inference_mode()
def eval_loss(model, dataset, batch_size: int = 1, pad_id: int = 0, progress: bool = False) -> float:
    """Mean over examples of each example's mean response-token loss (independent of batch_size).

    With batch_size 1 this is the paper's loop (mean of per-batch losses). Examples without any
    labelled token (response truncated away) are skipped; ValueError if none is left.
    """
    total, n = 0.0, 0
    for start in _bar(range(0, len(dataset), batch_size), progress, "eval loss"):
        batch = collate_right_pad([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))],
                                  pad_id)
        losses, counts = _per_example_losses(model, batch)
        total += losses[counts > 0].double().sum().item()
        n += int((counts > 0).sum().item())
    if n == 0:
        raise ValueError("eval_loss: no example has a labelled (response) token")
    return total / n


def evaluate(model, tokenizer, dataset, metric: str, max_new_tokens: int = 128, batch_size: int = 8,
             progress: bool = False, generations: list[dict] | None = None) -> dict:
    """{"eval_loss"} always, plus, when metric == "rouge", {"rouge_l"} of greedy generations, the share of empty
    answers ("empty_answers") and the mean probability of an end of sequence as the first answer token
    ("first_eos_prob"). Given a list as `generations`, each record's {"record", "reference", "prediction",
    "rouge_l", "first_eos_prob"} is appended to it."""
    if metric not in ("loss", "rouge"):
        raise ValueError(f"evaluate: unknown metric {metric!r} (expected 'loss' or 'rouge')")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    result = {"eval_loss": eval_loss(model, dataset, batch_size, pad_id, progress=progress)}
    if metric == "rouge":
        prompts = [dataset.prompt_ids(i) for i in range(len(dataset))]
        first_eos: list[float] = []
        predictions = generate_greedy(model, tokenizer, prompts, max_new_tokens, batch_size, progress, first_eos)
        references = [r["response"] for r in dataset.records]
        scores = rouge_l_scores(predictions, references)
        result["rouge_l"] = fmean(scores)
        result["empty_answers"] = fmean(not p for p in predictions)
        if first_eos:
            result["first_eos_prob"] = fmean(first_eos)
        if generations is not None:
            rows = zip(references, predictions, scores, first_eos or [None] * len(predictions), strict=True)
            generations += [{"record": i, "reference": ref, "prediction": pred, "rouge_l": score, "first_eos_prob": p}
                            for i, (ref, pred, score, p) in enumerate(rows)]
    return result
