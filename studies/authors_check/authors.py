"""Run the authors' FedKSeed main.py (zhenqincn/FedKSeed) on a CPU, on prepare.py's model and evaluation records,
and write what it measured as this study's files (metrics.jsonl, generations-<round>.jsonl) for answers.py.

    OMP_NUM_THREADS=1 python studies/authors_check/authors.py AUTHORS PREPARED OUT [--rounds R] [--rouge 0,5] [FLAGS]

Run it as a script, not with -m: the authors' modules (client, server, evaluations, utils_data, optimizers) share
their names with this suite's, so this suite must not be on sys.path. Their code is run unchanged; around it:
- device and dtype: their Client and Server put everything on `cuda:N` and load float16; here the CPU and float32
  (half precision on this CPU is what bench/dtype_speed.py measures it to be: slow, and float16 slowest);
- data: their loader reads ~/.datasets/natural-instructions-2.8/tasks and ./data/natural-instructions-2.8/splits;
  both point at the shared data, the split lists cut to the tasks present (its README: 82 are missing);
- evaluation: their eval set (2% of each test task, from their own random stream) is replaced by the study run's
  scored records, tokenized by their LLMDataset; Rouge-L also at the rounds --rouge names, each generation's text
  and score recorded, and the probability of EOS as the first answer token measured before it generates.
"""
from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
import time
from pathlib import Path

import torch

NI = "natural-instructions-2.8"


def link_data(data_path: Path, work: Path) -> None:
    """The folders the authors' Natural Instructions loader reads, under `work` (which is also HOME)."""
    root = data_path / "natural-instructions"
    present = {p.stem for p in (root / "tasks").glob("*.json")}
    splits = work / "data" / NI / "splits" / "default"
    splits.mkdir(parents=True, exist_ok=True)
    for name in ("train_tasks.txt", "test_tasks.txt"):
        tasks = [t.strip() for t in (root / "splits" / "default" / name).read_text().splitlines() if t.strip()]
        (splits / name).write_text("".join(f"{t}\n" for t in tasks if t in present))
    tasks = work / ".datasets" / NI / "tasks"
    tasks.parent.mkdir(parents=True, exist_ok=True)
    if not tasks.exists():
        tasks.symlink_to((root / "tasks").resolve())


class Capture:
    """What the evaluations around the authors' code record: each evaluation's row, and a generation's answers."""

    def __init__(self, out: Path, records: list[dict], rouge_rounds: set[int]):
        self.out, self.records, self.rouge_rounds = out, records, rouge_rounds
        self.loaders: dict[bool, object] = {}  # generation? -> a loader of the study's records
        self.answers: list[dict] = []
        self.start = time.time()

    def row(self, row: dict) -> None:
        row["seconds"] = round(time.time() - self.start, 1)
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"authors_check: {row}", flush=True)


def first_eos_probs(model, loader, eos_id: int) -> list[float]:
    """P(EOS) as the next token after each prompt: the probability that greedy decoding could end at once."""
    probs = []
    with torch.inference_mode():
        for batch in loader:
            logits = model(input_ids=batch["input_ids"]).logits[0, -1].float()
            probs.append(logits.softmax(-1)[eos_id].item())
    return probs


def patch(capture: Capture) -> None:
    """Wrap the authors' modules as the module doc says (they are imported from the authors' repo)."""
    from rouge_score.rouge_scorer import RougeScorer
    from torch.utils.data import DataLoader

    import client
    import server
    from utils_data import load_data
    from utils_data.natural_instruction_loader import LLMDataCollator, LLMDataset

    torch.cuda.max_memory_allocated = torch.cuda.max_memory_reserved = lambda *a, **k: 0
    for cls in (client.Client, server.Server):
        init = cls.__init__

        def on_cpu(self, *args, _init=init, **kwargs):
            _init(self, *args, **kwargs)
            self.device = torch.device("cpu")
        cls.__init__ = on_cpu

    class Float32Models:
        @staticmethod
        def from_pretrained(path, **kwargs):
            from transformers import AutoModelForCausalLM
            return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    server.AutoModelForCausalLM = Float32Models

    get_loaders = load_data.get_loaders

    def study_eval_loaders(args, only_eval=False):
        train, _, tokenizer = get_loaders(args, only_eval)
        data = [(r["instruction"], r["context"], r["response"]) for r in capture.records]
        for generation in (False, True):
            capture.loaders[generation] = DataLoader(
                LLMDataset(data, tokenizer, use_prompts=args.use_prompts, generation=generation), shuffle=False,
                batch_size=1, collate_fn=LLMDataCollator(tokenizer=tokenizer))
        print(f"authors_check: {len(train)} clients, {int(args.num_clients * args.m)} a round, "
              f"{len(data)} evaluation records", flush=True)
        return train, capture.loaders[args.eval_metric != "loss"], tokenizer
    load_data.get_loaders = study_eval_loaders

    rouge_score, scorer = server.rouge_score, RougeScorer(["rougeL"], use_stemmer=False)

    def recorded_rouge(hyp_ids, ref_ids, tokenizer):
        theirs = rouge_score(hyp_ids, ref_ids, tokenizer)
        hyp, ref = (tokenizer.decode(ids, skip_special_tokens=True) for ids in (hyp_ids, ref_ids))
        capture.answers.append({"record": len(capture.answers), "reference": ref, "prediction": hyp,
                                "rouge_l": scorer.score(ref, hyp)["rougeL"].fmeasure, "rouge_l_authors": theirs})
        return theirs
    server.rouge_score = recorded_rouge

    eval_generate, evaluate = server.Server.eval_generate, server.Server.eval

    def generate_and_record(self, cur_round):
        eos = first_eos_probs(self.model, self.eval_loader, self.tokenizer.eos_token_id)
        capture.answers = []
        score = eval_generate(self, cur_round)
        with open(capture.out / f"generations-{cur_round}.jsonl", "w") as f:
            for answer, p in zip(capture.answers, eos, strict=True):
                f.write(json.dumps({**answer, "first_eos_prob": p}) + "\n")
        n = len(capture.answers)
        capture.row({"round": cur_round, "rouge_l": sum(a["rouge_l"] for a in capture.answers) / n,
                     "rouge_l_authors": score, "empty_answers": sum(not a["prediction"].strip()
                                                                    for a in capture.answers) / n,
                     "first_eos_prob": sum(eos) / n})
        return score

    def eval_and_record(self, cur_round, eval_avg_acc):
        result = evaluate(self, cur_round, eval_avg_acc)
        if self.args.eval_metric == "loss":
            capture.row({"round": cur_round, "eval_loss": result})
            if cur_round in capture.rouge_rounds and cur_round < self.args.rounds:
                loss_loader, self.eval_loader = self.eval_loader, capture.loaders[True]
                generate_and_record(self, cur_round)
                self.eval_loader = loss_loader
        return result
    server.Server.eval_generate, server.Server.eval = generate_and_record, eval_and_record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("authors", type=Path, help="a checkout of zhenqincn/FedKSeed")
    parser.add_argument("prepared", type=Path, help="prepare.py's folder")
    parser.add_argument("out", type=Path, help="where metrics.jsonl, generations and the authors' logs go")
    parser.add_argument("--rounds", type=int, help="fewer rounds than the study run's")
    parser.add_argument("--rouge", default="0", help="rounds (besides the last) with a Rouge-L evaluation")
    args, extra = parser.parse_known_args()  # extra: the authors' flags to override, e.g. --local_step 2
    prepared, out, authors = args.prepared.resolve(), args.out.resolve(), args.authors.resolve()
    settings = json.loads((prepared / "settings.json").read_text())
    argv = list(settings["argv"])
    if args.rounds is not None:
        argv[argv.index("--rounds") + 1] = str(args.rounds)
    work = out / "work"
    data_path = Path(settings["data_path"])
    link_data(data_path if data_path.is_absolute() else (Path(__file__).parents[2] / data_path).resolve(), work)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)
    records = json.loads((prepared / "eval_records.json").read_text())
    capture = Capture(out, records, {int(r) for r in args.rouge.split(",") if r})
    (out / "config.json").write_text(json.dumps({"authors": str(authors), "prepared": settings, "argv": argv + extra,
                                                 "threads": torch.get_num_threads()}, indent=1))
    os.environ["HOME"] = str(work)
    os.chdir(work)
    sys.path.insert(0, str(authors))
    patch(capture)
    sys.argv = ["main.py", *argv, *extra, "--model", str(prepared / "model"), "--log", "--log_root", str(out / "logs")]
    runpy.run_path(str(authors / "main.py"), run_name="__main__")


if __name__ == "__main__":
    main()
