"""Where a run's loss went, on its held-out records: the loss of the EOS token that closes each answer, the mean loss
of the answer's other tokens, and the probability of EOS as the answer's first token, for the base model and for
each run's model (rebuilt from its checkpoint). A method that lowers the loss by making EOS likelier everywhere,
not only after an answer, is one that ends answers before they start.

    python -m studies.quality_cost.eos_loss RUN[@ROUND] [RUN[@ROUND] ...] [--json PATH]

The runs share a dataset and seed (the base model is evaluated on the first run's records). Each row's eval loss is
the run's own measure (evaluations.eval_loss), so it checks the row against the run's metrics. RUN@ROUND takes the
model after that round of a seed-based run (its checkpoint keeps every round), RUN alone the last.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import config
from checkpoint import load_checkpoint
from evaluations import next_token_logits, stop_ids
from export_model import rebuild_model
from modeling import load_model, load_tokenizer
from run_evaluation import held_out_set
from utils_data.default_tokens import IGNORE_INDEX
from utils_data.llm_dataset import LLMDataset, collate_right_pad
from utils_data.load_data import load_for_run


@torch.inference_mode()
def eos_numbers(model, dataset: LLMDataset, stops: list[int], pad_id: int) -> dict:
    """Means over the records: eval loss (each record's mean answer-token loss), the closing EOS token's loss (records
    whose answer kept it within --max_length), the other answer tokens' mean loss, P(EOS first)."""
    record, eos, content, first = [], [], [], []
    for i in range(len(dataset)):
        logits, labels = next_token_logits(model, collate_right_pad([dataset[i]], pad_id))
        logits, labels = logits[0], labels[0]
        at = (labels != IGNORE_INDEX).nonzero().flatten()
        nll = F.cross_entropy(logits[at], labels[at], reduction="none")
        closing = torch.isin(labels[at], torch.tensor(stops))
        record.append(nll.mean().item())
        if closing.any():
            eos.append(nll[closing].mean().item())
        if (~closing).any():
            content.append(nll[~closing].mean().item())
        first.append(logits[at[0]].softmax(-1)[stops].sum().item())
    return {"records": len(dataset), "eval_loss": float(np.mean(record)), "eos_loss": float(np.mean(eos)),
            "content_loss": float(np.mean(content)), "first_eos_prob": float(np.mean(first))}


def run_and_round(arg: str) -> tuple[Path, int | None]:
    """RUN@ROUND -> (RUN, ROUND); RUN -> (RUN, None): its last round."""
    run, at, round_ = arg.rpartition("@")
    return (Path(run), int(round_)) if at and round_.isdigit() else (Path(arg), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories with their checkpoints; RUN@ROUND: an earlier round")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    runs = [run_and_round(r) for r in args.runs]
    cfg = config.recorded(json.loads((runs[0][0] / "config.json").read_text())["flags"])
    tokenizer = load_tokenizer(cfg.model.model)
    dataset = held_out_set(cfg, load_for_run(cfg).eval_records, tokenizer, "evaluation")
    pad_id = tokenizer.pad_token_id  # load_tokenizer gives every tokenizer one
    base = load_model(cfg.model.model, "float32")
    stops = stop_ids(base, tokenizer)
    rows = [{"model": "base", "round": 0, **eos_numbers(base, dataset, stops, pad_id)}]
    for run, at_round in runs:
        model, _ = rebuild_model(run, at_round=at_round)
        numbers = eos_numbers(model.eval(), dataset, stops, pad_id)
        rows.append({"model": run.name, "round": load_checkpoint(run).round if at_round is None else at_round,
                     **numbers})
    print("| model | round | records | eval loss | EOS-token loss | other answer tokens | P(EOS first) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['model']} | {r['round']} | {r['records']} | {r['eval_loss']:.4f} | {r['eos_loss']:.4f} | "
              f"{r['content_loss']:.4f} | {r['first_eos_prob']:.4f} |")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
