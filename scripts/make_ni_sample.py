"""Write data/ni-yesno-sample/: a small Natural Instructions sample of yes/no tasks, for README's first command.

The folder has the layout `--dataset instruct --data_path data/ni-yesno-sample` reads:
natural-instructions/splits/default/{train,test}_tasks.txt and natural-instructions/tasks/<name>.json. Every task
file keeps its metadata (Contributors, Source, URL, Categories, Definition, examples, Instance License, ...) as in
the source; only its Instances are cut to a seeded, label-balanced choice among the instances with short inputs.

Usage: python scripts/make_ni_sample.py [SOURCE_DIR] [OUTPUT_DIR]
  SOURCE_DIR: the folder holding natural-instructions/ (default ../shared/data next to this repository)
  OUTPUT_DIR: default data/ni-yesno-sample
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data"
OUTPUT = ROOT / "data" / "ni-yesno-sample"

# Clients: yes/no classification tasks of the default train split, permissive instance licences.
TRAIN_TASKS = (
    "task114_is_the_given_word_longest",  # MIT
    "task566_circa_classification",  # CC BY 4.0
    "task1205_atomic_classification_isafter",  # CC BY 4.0
    "task1207_atomic_classification_atlocation",  # CC BY 4.0
    "task1210_atomic_classification_madeupof",  # CC BY 4.0
)
# Held out: yes/no tasks of the default test split (other sources, other questions).
TEST_TASKS = (
    "task242_tweetqa_classification",  # CC BY-SA 4.0
    "task642_esnli_classification",  # MIT
    "task879_schema_guided_dstc8_classification",  # CC BY-SA 4.0
    "task970_sherliic_causal_relationship",  # CC BY 4.0
)
TRAIN_INSTANCES = 100  # the loader keeps 20% of a train task: 20 records a client
TEST_INSTANCES = 40  # the loader draws 20 of a test task's instances
MAX_INPUT_CHARS = 250  # every shipped input passes the loader's length filter at --max_length 256
LABELS = ("yes", "no")  # answers compared in lower case
SEED = 0


def choose(instances: list[dict], k: int, rng: np.random.Generator) -> list[dict]:
    """k instances with short inputs, k/2 answered yes and k/2 no (seeded), kept in file order."""
    chosen = []
    for label in LABELS:
        pool = [i for i, ins in enumerate(instances)
                if len(ins["input"]) < MAX_INPUT_CHARS and ins["output"][0].strip().lower() == label]
        if len(pool) < k // 2:
            raise SystemExit(f"only {len(pool)} instances answered {label!r} under {MAX_INPUT_CHARS} "
                             f"characters, need {k // 2}")
        chosen.extend(pool[j] for j in rng.choice(len(pool), size=k // 2, replace=False))
    return [instances[i] for i in sorted(chosen)]


def make_sample(source: Path, output: Path, seed: int = SEED) -> dict[str, int]:
    """Write the sample's split lists and task files; returns {task: instances written}."""
    rng = np.random.default_rng(seed)
    src, out = source / "natural-instructions", output / "natural-instructions"
    (out / "splits" / "default").mkdir(parents=True, exist_ok=True)
    (out / "tasks").mkdir(parents=True, exist_ok=True)
    for stale in (out / "tasks").glob("*.json"):  # a task no longer chosen must not linger
        if stale.stem not in TRAIN_TASKS + TEST_TASKS:
            stale.unlink()
    written = {}
    for split, tasks, k in (("train", TRAIN_TASKS, TRAIN_INSTANCES), ("test", TEST_TASKS, TEST_INSTANCES)):
        listed = set((src / "splits" / "default" / f"{split}_tasks.txt").read_text(encoding="utf-8").split())
        for task in tasks:
            if task not in listed:
                raise SystemExit(f"{task} is not in the source's {split} split")
            data = json.loads((src / "tasks" / f"{task}.json").read_text(encoding="utf-8"))
            data["Instances"] = choose(data["Instances"], k, rng)
            text = json.dumps(data, ensure_ascii=False, indent=1) + "\n"
            (out / "tasks" / f"{task}.json").write_text(text, encoding="utf-8")
            written[task] = len(data["Instances"])
        (out / "splits" / "default" / f"{split}_tasks.txt").write_text("".join(t + "\n" for t in tasks),
                                                                         encoding="utf-8")
    return written


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else SOURCE
    output = Path(sys.argv[2]) if len(sys.argv) > 2 else OUTPUT
    written = make_sample(source, output)
    for task, n in written.items():
        print(f"{task}: {n} instances")
    print(f"wrote {len(written)} tasks to {output}")


if __name__ == "__main__":
    main()
