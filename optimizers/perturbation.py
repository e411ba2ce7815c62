"""Seeded perturbations of a model's trainable parameters: what the rest of the project calls.

    Perturbation(model).perturb_(seed, scale)     theta += scale * z(seed)
    Perturbation(model).perturb_(seed, scale, tokens, rest)
                                                  the input embedding (when not tied to the output layer) gets
                                                  scale only on the rows of those token ids, rest elsewhere
    Perturbation(model).apply_([Term(seed, scale, rows, rest), ...])
                                                  a few terms in one pass (rows: distinct embedding rows)
    Perturbation(model).replay_(seeds, coefs)     theta += sum_j coefs[j] * z(seeds[j])
    z_for(seed, name, numel, kind)                the reference values, for tests and tools

z is defined in optimizers/zstream.py and applied by optimizers/z_kernels.py.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from optimizers.z_kernels import (
    BLOCK_ELEMENTS,
    FEW,
    REPLAY_CHUNK,
    apply_compiled_,
    axpy_z_,
    compile_enabled,
    compiled,
    few_seed_pass,
    rows_,
)
from optimizers.zstream import KINDS, WORD_BITS, key_tensor, keys_for, z_for

__all__ = ["KINDS", "Perturbation", "Term", "key_tensor", "keys_for", "z_for"]


def _row_sparse_name(model: torch.nn.Module, params: list[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the input embedding when a loss reads only its rows of the tokens it sees: an
    nn.Embedding that is trained and not tied to another module (a tied output layer reads every row)."""
    get = getattr(model, "get_input_embeddings", None)
    embedding = get() if callable(get) else None
    if not isinstance(embedding, torch.nn.Embedding):
        return None
    uses = [name for name, p in model.named_parameters(remove_duplicate=False) if p is embedding.weight]
    names = {name for name, _ in params}
    return uses[0] if len(uses) == 1 and uses[0] in names else None


@dataclass(frozen=True)
class Term:
    """scale * z(seed). With rows (the distinct input ids of a batch, 1-D), the row-sparse input embedding gets
    scale only on those rows and rest on every other row: a loss reads no other row, so a MeZO step's +-eps
    passes skip them (a quarter of a small model's weights) and its last pass gives them just their update."""

    seed: int
    scale: float
    rows: torch.Tensor | None = None
    rest: float = 0.0


class Perturbation:
    """Applies seeded perturbations in place to every trainable parameter of a model."""

    def __init__(self, model: torch.nn.Module, kind: str = "gaussian", compile: bool | None = None):
        if kind not in KINDS:
            raise ValueError(f"unknown perturbation {kind!r}; expected one of {KINDS}")
        self.kind = kind
        self.params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        for name, p in self.params:
            if p.numel() >= 1 << 31:
                raise ValueError(f"parameter {name} has {p.numel()} elements; counters are 31-bit")
        self.compile = compile_enabled() if compile is None else compile
        self.row_sparse = _row_sparse_name(model, self.params)
        self._passes: dict[str, tuple[int, Callable]] = {}  # name -> (data_ptr it was built for, pass)

    @torch.no_grad()
    def perturb_(self, seed: int, scale: float, tokens: torch.Tensor | None = None, rest: float = 0.0) -> None:
        """theta += scale * z(seed) for every trainable parameter; tokens: any input ids (see Term for rest)."""
        self.apply_([Term(seed, scale, None if tokens is None else torch.unique(tokens), rest)])

    @torch.no_grad()
    def apply_(self, terms: Sequence[Term]) -> None:
        """theta += the sum of a few terms in one pass over the weights (a MeZO step folds two into a pass)."""
        if not self.params or not terms:
            return
        device = self.params[0][1].device
        keys = key_tensor([(t.seed, name) for name, _ in self.params for t in terms], device)
        keys = keys.view(len(self.params), len(terms), 3)
        coefs = torch.tensor([t.scale for t in terms], dtype=torch.float32, device=device)
        # Last parameter first: the forward that follows starts with the first layers, whose freshly written
        # weights are then still in cache (z does not depend on the order; ~2% of a step on the bench model).
        for i, (name, p) in reversed(list(enumerate(self.params))):
            if name != self.row_sparse or all(t.rows is None for t in terms):
                self._apply(name, p, keys[i], coefs)
                continue
            whole = [(j, t.scale if t.rows is None else t.rest) for j, t in enumerate(terms)]
            whole = [(j, c) for j, c in whole if c != 0.0]
            if whole:
                self._apply(name, p, keys[i, [j for j, _ in whole]],
                            torch.tensor([c for _, c in whole], dtype=torch.float32, device=device))
            for j, t in enumerate(terms):
                if t.rows is not None and t.scale != t.rest:
                    rows = t.rows.to(p.device)
                    row_coefs = torch.tensor([t.scale - t.rest], dtype=torch.float32, device=device)
                    rows_kernel = compiled("rows") if self.compile else rows_
                    rows_kernel(p.detach(), rows, keys[i, j : j + 1], row_coefs, self.kind)

    @torch.no_grad()
    def replay_(self, seeds: Sequence[int], coefs: Sequence[float]) -> None:
        """theta += sum_j coefs[j] * z(seeds[j]); zero coefficients are skipped."""
        pairs = [(int(s), float(c)) for s, c in zip(seeds, coefs, strict=True) if c != 0.0]
        for start in range(0, len(pairs), REPLAY_CHUNK):
            chunk = pairs[start : start + REPLAY_CHUNK]
            for name, p in self.params:
                keys = key_tensor([(s, name) for s, _ in chunk], p.device)
                self._apply(name, p, keys, torch.tensor([c for _, c in chunk], dtype=torch.float32, device=p.device))

    def _apply(self, name: str, p: torch.Tensor, keys: torch.Tensor, coefs: torch.Tensor) -> None:
        flat = p.detach().view(-1)  # kernels never need autograd; a detached view keeps dynamo off the leaf
        if self.compile and keys.shape[0] <= FEW:
            built_for, apply = self._passes.get(name, (None, None))
            if built_for != p.data_ptr():  # first use, or the parameter's storage was replaced (e.g. .to())
                apply = few_seed_pass(flat, self.kind)
                self._passes[name] = (p.data_ptr(), apply)
            apply(keys, coefs)
            return
        if self.compile:
            apply_compiled_(flat, keys, coefs, self.kind)
            return
        block = max(WORD_BITS, (BLOCK_ELEMENTS // keys.shape[0]) // WORD_BITS * WORD_BITS)  # pair- and word-aligned
        for first in range(0, flat.numel(), block):
            axpy_z_(flat[first : first + block], first, keys, coefs, self.kind)
