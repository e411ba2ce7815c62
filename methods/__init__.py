"""Federated fine-tuning methods behind one interface (methods.base.Method), each in its own module; METHODS is the
one place that names them (--method's choices)."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

import torch

from checkpoint import RunState, TensorState
from client import Client
from flag_group import FlagGroup
from methods.base import ArrayClient, LocalReport, Method

if TYPE_CHECKING:
    from config import RunConfig

# --method name -> "module:class" of its home (imported only when the method runs)
METHODS = {
    "fedkseed": "methods.fedkseed:FedKSeed",
    "fedit": "methods.first_order:FirstOrder",
    "fedavg": "methods.first_order:FirstOrder",
    "ferret": "methods.ferret:Ferret",
}

__all__ = ["METHODS", "LocalReport", "Method", "build_array_client", "build_method", "method_class",
           "method_flag_groups"]


def method_class(name: str) -> type[Method]:
    """The class of the method --method names."""
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def method_flag_groups() -> dict[str, type[FlagGroup]]:
    """Each method's own flags (Method.flags) by --method name, for the methods that declare some."""
    flags = {name: method_class(name).flags for name in METHODS}
    return {name: group for name, group in flags.items() if group is not None}


def build_method(cfg: RunConfig, model: torch.nn.Module, clients: list[Client],
                 resume: RunState | TensorState | None = None) -> Method:
    """The method --method names, around the loaded base model."""
    return method_class(cfg.method.method)(cfg, model, clients, resume)


def build_array_client(cfg: RunConfig, model: torch.nn.Module) -> ArrayClient:
    """The client side alone of an array-shipping --method, around the loaded base model: what a Flower node
    trains with (the server's copy of the model stays on the server)."""
    return method_class(cfg.method.method).build_client(cfg, model)
