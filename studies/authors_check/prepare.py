"""What a run of the authors' FedKSeed code needs to stand on a committed study run's ground (README.md here): the base
model as a Hugging Face folder, the run's evaluation records (those it scored, after its tokenizer dropped the ones
that do not fit --max_length) and the run's settings as the authors' flags.

    python -m studies.authors_check.prepare studies/quality_cost/results/instruct/fedkseed-lr1e-5-s2 OUT
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import config
from export_model import as_plain_weights
from modeling import load_model, load_tokenizer
from run_evaluation import held_out_set
from utils_data.load_data import load_for_run

# The authors' flags that carry a study run's settings (same names in both main.py's)
AUTHORS_FLAGS = ("dataset", "num_clients", "m", "rounds", "local_step", "max_length", "lr", "K", "zo_eps", "seed",
                 "grad_clip", "iid")


def authors_argv(flags: dict) -> list[str]:
    """The authors' main.py command line with the run's settings (their -K and -m are short flags)."""
    argv = []
    for name in AUTHORS_FLAGS:
        argv += [f"-{name}" if name in ("K", "m") else f"--{name}", str(flags[name])]
    return argv


def prepare(run: Path, out: Path, data_path: str | None = None) -> dict:
    """Write OUT/model, OUT/eval_records.json and OUT/settings.json for the committed run `run`."""
    flags = json.loads((run / "config.json").read_text())["flags"]
    if data_path is not None:
        flags["data_path"] = data_path
    cfg = config.recorded(flags)
    tokenizer = load_tokenizer(cfg.model.model)
    scored = held_out_set(cfg, load_for_run(cfg).eval_records, tokenizer, "evaluation").records
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval_records.json").write_text(json.dumps(scored, indent=0))
    if not (out / "model" / "config.json").is_file():
        model = load_model(cfg.model.model, "float32")
        as_plain_weights(model)
        model.save_pretrained(out / "model")
        tokenizer.save_pretrained(out / "model")
    settings = {"run": str(run), "data_path": cfg.data.data_path, "argv": authors_argv(flags),
                "eval_records": len(scored)}
    (out / "settings.json").write_text(json.dumps(settings, indent=1))
    return settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a committed study run (its config.json)")
    parser.add_argument("out", type=Path, help="where the model folder, records and settings go")
    parser.add_argument("--data_path", help="the datasets' folder, if not the run's")
    args = parser.parse_args(argv)
    settings = prepare(args.run, args.out, args.data_path)
    print(f"{args.out}: model, {settings['eval_records']} evaluation records, settings {' '.join(settings['argv'])}")


if __name__ == "__main__":
    main()
