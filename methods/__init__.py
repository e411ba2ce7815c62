"""Federated fine-tuning methods behind one interface (methods.base.Method): FedKSeed (and Pro), FedIT, FedAvg."""
from __future__ import annotations

import argparse

import torch

from checkpoint import RunState, TensorState
from client import Client
from methods.base import ArrayClient, LocalReport, Method

METHODS = ("fedkseed", "fedit", "fedavg")

__all__ = ["METHODS", "LocalReport", "Method", "build_array_client", "build_method"]


def build_method(args: argparse.Namespace, model: torch.nn.Module, clients: list[Client],
                 resume: RunState | TensorState | None = None) -> Method:
    """The method --method names, around the loaded base model."""
    if args.method == "fedkseed":
        from methods.fedkseed import FedKSeed

        return FedKSeed(args, model, clients, resume)
    from methods.first_order import FirstOrder

    return FirstOrder(args, model, clients, resume)


def build_array_client(args: argparse.Namespace, model: torch.nn.Module) -> ArrayClient:
    """The client side alone of an array-shipping --method (fedit, fedavg), around the loaded base model: what a
    Flower node trains with (the server's copy of the model stays on the server)."""
    from methods.first_order import FirstOrderClient

    return FirstOrderClient.around_base(args, model)
