"""What a run evaluates, on which records, and when (both engines use it; it knows nothing of the method).

- The evaluation set: --eval_examples held-out records from a seeded shuffle (all of them with 0).
- The validation set (--val_examples): the next records of the same shuffle, disjoint from the evaluation set; its
  loss is logged as val_loss beside every evaluation, so that hyperparameters can be chosen on records that are
  not the reported ones.
- When: eval loss every --eval_every rounds, Rouge-L every --rouge_every rounds (with --eval_metric rouge), and
  --eval_metric at round 0 (the base model) and at the last round.
- Each Rouge-L evaluation's generations go to <output_dir>/generations-<round>.jsonl.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from errors import FedKSeedError
from evaluations import evaluate
from run_data import report_dropped, run_prompt_format
from run_records import write_generations
from streams import stream
from utils_data.llm_dataset import LLMDataset

if TYPE_CHECKING:
    from config import RunConfig

logger = logging.getLogger("fedkseed")


def eval_subset(records: list[dict], n: int, seed: int, skip: int = 0) -> list[dict]:
    """n held-out records from a seeded shuffle, after its first `skip`, in their original order (all of them
    when n is 0)."""
    if n == 0 or (skip == 0 and n >= len(records)):
        return records
    order = stream(seed, "eval").permutation(len(records))[skip:skip + n]
    return [records[i] for i in sorted(order)]


def held_out_set(cfg: RunConfig, records: list[dict], tokenizer, kind: str) -> LLMDataset:
    """The evaluation (kind "evaluation") or validation (kind "validation") records, tokenized."""
    ev = cfg.evaluation
    n, skip = (ev.eval_examples, 0) if kind == "evaluation" else (ev.val_examples, ev.eval_examples)
    dataset = LLMDataset(eval_subset(records, n, cfg.federation.seed, skip), tokenizer, run_prompt_format(cfg.data),
                         cfg.data.max_length)
    report_dropped(kind, [dataset], cfg.data.max_length)
    if len(dataset) == 0:
        raise FedKSeedError(f"no usable {kind} examples after tokenisation (check --max_length, and that "
                            f"{len(records)} held-out records cover --eval_examples + --val_examples)")
    return dataset


class RoundEvaluator:
    """Evaluates a model after a round, as the flags say."""

    def __init__(self, cfg: RunConfig, records: list[dict], tokenizer):
        self.cfg, self.tokenizer = cfg, tokenizer
        self.eval_set = held_out_set(cfg, records, tokenizer, "evaluation")
        self.val_set = held_out_set(cfg, records, tokenizer, "validation") if cfg.evaluation.val_examples else None

    def __len__(self) -> int:
        return len(self.eval_set)

    def metric_due(self, round_idx: int) -> str | None:
        """What to evaluate after round `round_idx` (0: the base model): "rouge", "loss", or None."""
        ev = self.cfg.evaluation
        if round_idx in (0, self.cfg.federation.rounds):
            return ev.eval_metric
        if ev.eval_metric == "rouge" and ev.rouge_every and round_idx % ev.rouge_every == 0:
            return "rouge"
        if ev.eval_every and round_idx % ev.eval_every == 0:
            return "loss"
        return None

    def __call__(self, model, round_idx: int, metric: str, progress: bool = False) -> dict:
        ev = self.cfg.evaluation
        generations: list[dict] = []
        result = evaluate(model, self.tokenizer, self.eval_set, metric, ev.max_new_tokens, ev.eval_batch_size,
                          progress=progress, generations=generations)
        if generations:
            write_generations(self.cfg.output.output_dir, round_idx, generations)
        if self.val_set is not None:
            result["val_loss"] = evaluate(model, self.tokenizer, self.val_set, "loss", batch_size=ev.eval_batch_size,
                                          progress=progress)["eval_loss"]
        logger.info("round %d: %s", round_idx, "  ".join(f"{k} {v:.4f}" for k, v in result.items()))
        return result
