"""Natural Instructions v2 (default split) the FedKSeed way: a client per train task, test tasks for eval."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from errors import FedKSeedError

logger = logging.getLogger(__name__)

MIN_TRAIN_INSTANCES = 20  # a train task with fewer instances (after the length filter) is not a client
TRAIN_FRACTION = 0.2
TEST_FRACTION = 0.02
MIN_TEST_INSTANCES = 20


def load_natural_instructions(root: Path, max_length: int, rng: np.random.Generator
                              ) -> tuple[list[list[dict]], list[str], list[dict]]:
    """(train clients' records, their task names, eval records) from `root` = .../natural-instructions.

    Instances with len(input) >= max_length characters are dropped. A train task with at least 20
    left becomes a client holding int(20%) of them (>= 4); a test task with more than 20 left gives
    max(20, int(2%)) eval records, otherwise all of them, as the authors' loader. Split tasks missing on disk
    are skipped.
    """
    root = Path(root)
    clients, names, too_small = [], [], 0
    for task in _present_tasks(root, "train"):
        records = _load_task(root, task, max_length)
        if len(records) < MIN_TRAIN_INSTANCES:
            too_small += 1
            continue
        clients.append(_sample(records, int(TRAIN_FRACTION * len(records)), rng))
        names.append(task)
    if too_small:
        logger.info("natural-instructions: skipped %d train tasks with fewer than %d instances "
                    "shorter than %d characters", too_small, MIN_TRAIN_INSTANCES, max_length)
    if not clients:
        raise FedKSeedError(f"{root}: no train task has {MIN_TRAIN_INSTANCES} instances with inputs "
                            f"shorter than {max_length} characters")

    eval_records = []
    for task in _present_tasks(root, "test"):
        records = _load_task(root, task, max_length)
        if len(records) > MIN_TEST_INSTANCES:
            records = _sample(records, max(MIN_TEST_INSTANCES, int(TEST_FRACTION * len(records))), rng)
        eval_records.extend(records)
    if not eval_records:
        raise FedKSeedError(f"{root}: the test tasks have no instance with input shorter than "
                            f"{max_length} characters")
    return clients, names, eval_records


def _present_tasks(root: Path, split: str) -> list[str]:
    """Names of a split's tasks whose files exist; the missing ones are counted in one log line."""
    split_file = root / "splits" / "default" / f"{split}_tasks.txt"
    try:
        listed = [line.strip() for line in split_file.read_text(encoding="utf-8").splitlines()]
    except OSError:
        raise FedKSeedError(f"{split_file}: Natural Instructions split file not found") from None
    listed = [name for name in listed if name]
    present = [name for name in listed if (root / "tasks" / f"{name}.json").is_file()]
    missing = len(listed) - len(present)
    if missing:
        logger.warning("natural-instructions: %d of %d %s tasks missing on disk, skipped",
                       missing, len(listed), split)
    return present


def _load_task(root: Path, task: str, max_length: int) -> list[dict]:
    """A task's instances as records, without those whose input is max_length characters or longer."""
    path = root / "tasks" / f"{task}.json"
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        instruction = data["Definition"][0]
        pairs = [(ins["input"], ins["output"][0]) for ins in data["Instances"]]
    except json.JSONDecodeError as exc:
        raise FedKSeedError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FedKSeedError(f"{path}: cannot read task file ({exc.__class__.__name__})") from None
    except (KeyError, IndexError, TypeError):
        raise FedKSeedError(f"{path}: not a Natural Instructions task (needs Definition and "
                            f"Instances with input and output)") from None
    if not isinstance(instruction, str) or not all(isinstance(x, str) and isinstance(y, str)
                                                   for x, y in pairs):
        raise FedKSeedError(f"{path}: Definition, input and output must be strings")
    return [{"instruction": instruction, "context": x, "response": y, "category": task}
            for x, y in pairs if len(x) < max_length]


def _sample(records: list[dict], k: int, rng: np.random.Generator) -> list[dict]:
    """k records without replacement, kept in file order."""
    chosen = np.sort(rng.choice(len(records), size=k, replace=False))
    return [records[i] for i in chosen]
