"""Seeded perturbations of a model's trainable parameters: what the rest of the project calls.

    Perturbation(model).perturb_(seed, scale)     theta += scale * z(seed)
    Perturbation(model).perturb_(seed, scale, tokens, rest)
                                                  the input embedding (when not tied to the output layer) gets
                                                  scale only on the rows of those token ids, rest elsewhere
    Perturbation(model).apply_([Term(seed, scale, rows, rest), ...])
                                                  a few terms in one pass (rows: distinct embedding rows)
    Perturbation(model).replay_(seeds, coefs)     theta += sum_j coefs[j] * z(seeds[j])
    Perturbation(model).replay_table_(seeds, coefs)
                                                  theta_i += sum_j coefs[i, j] * z_i(seeds[j]), per parameter i
    Perturbation(model).project(i, values, seeds) <values, z_i(seed)> for each seed (parameter i)
    z_for(seed, name, numel, kind)                the reference values, for tests and tools

z is defined in optimizers/zstream.py. Which code applies it (compile=None picks the fastest there is):
    native    optimizers/z_native_source.py, float32 and bfloat16 CPU parameters, every parameter in one call
              (compile=None)
    compiled  the torch.compile kernels of optimizers/z_kernels.py (compile=True; CUDA and float16)
    eager     plain torch ops in cache-sized blocks (compile=False; no build or compile time)
All three give the same z (integer stream bit for bit, floats within a few ulps).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
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
from optimizers.z_native import NativePass, apply_rows, library, native_enabled, supports
from optimizers.z_native import dot as native_dot
from optimizers.zstream import KINDS, WORD_BITS, key_array, key_tensor, keys_for, z_for

__all__ = ["KINDS", "Perturbation", "Term", "key_tensor", "keys_for", "z_for"]

PROJECT_CHUNK = 1 << 16  # elements a projection sums at a time (a fixed order, whatever the thread count)


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
        self.native = compile is None and native_enabled()
        self.compile = compile_enabled() if compile is None else compile
        self.row_sparse = _row_sparse_name(model, self.params)
        self._passes: dict[str, tuple[int, Callable]] = {}  # name -> (data_ptr it was built for, pass)
        self._native_pass: tuple[tuple[int, ...], NativePass | None, list[int]] | None = None

    def _keys(self, seeds: Sequence[int]) -> np.ndarray:
        """The int32 keys of every (parameter, seed): [parameters, seeds, 3]."""
        return key_array([(s, name) for name, _ in self.params for s in seeds]).reshape(len(self.params), -1, 3)

    @torch.no_grad()
    def perturb_(self, seed: int, scale: float, tokens: torch.Tensor | None = None, rest: float = 0.0) -> None:
        """theta += scale * z(seed) for every trainable parameter; tokens: any input ids (see Term for rest)."""
        self.apply_([Term(seed, scale, None if tokens is None else torch.unique(tokens), rest)])

    @torch.no_grad()
    def apply_(self, terms: Sequence[Term]) -> None:
        """theta += the sum of a few terms in one pass over the weights (a MeZO step folds two into a pass)."""
        if not self.params or not terms:
            return
        keys = self._keys([t.seed for t in terms])
        coefs = np.tile(np.array([t.scale for t in terms], dtype=np.float32), (len(self.params), 1))
        sparse = [i for i, (name, _) in enumerate(self.params) if name == self.row_sparse]
        for i in sparse:  # the whole-tensor pass gives the embedding `rest` for terms with rows
            coefs[i] = [t.scale if t.rows is None else t.rest for t in terms]
        native, covered = self._native()
        self._apply_all(keys, coefs, native, covered)
        for i in sparse:
            name, p = self.params[i]
            for j, t in enumerate(terms):
                if t.rows is None or t.scale == t.rest:
                    continue
                if native is not None and i in covered:
                    apply_rows(native.lib, p.detach(), t.rows, keys[i, j], t.scale - t.rest, self.kind)
                    continue
                row_keys = torch.from_numpy(keys[i, j : j + 1]).to(p.device)
                row_coefs = torch.tensor([t.scale - t.rest], dtype=torch.float32, device=p.device)
                rows_kernel = compiled("rows") if self.compile else rows_
                rows_kernel(p.detach(), t.rows.to(p.device), row_keys, row_coefs, self.kind)

    @torch.no_grad()
    def replay_(self, seeds: Sequence[int], coefs: Sequence[float]) -> None:
        """theta += sum_j coefs[j] * z(seeds[j]); zero coefficients are skipped."""
        pairs = [(int(s), float(c)) for s, c in zip(seeds, coefs, strict=True) if c != 0.0]
        table = np.array([c for _, c in pairs], dtype=np.float32)
        self.replay_table_([s for s, _ in pairs], np.tile(table, (len(self.params), 1)))

    @torch.no_grad()
    def replay_table_(self, seeds: Sequence[int], coefs: np.ndarray) -> None:
        """theta_i += sum_j coefs[i, j] * z_i(seeds[j]) for every trainable parameter i (in self.params order): a
        coefficient of its own per parameter and seed (Ferret's per-block coefficients)."""
        coefs = np.asarray(coefs, dtype=np.float32).reshape(len(self.params), len(seeds))
        for start in range(0, len(seeds), REPLAY_CHUNK):
            chunk = list(seeds[start : start + REPLAY_CHUNK])
            self._apply_all(self._keys(chunk), np.ascontiguousarray(coefs[:, start : start + len(chunk)]),
                            *self._native())

    @torch.no_grad()
    def project(self, index: int, values: torch.Tensor, seeds: Sequence[int]) -> np.ndarray:
        """<values, z_i(seed)> for each seed, in float64, for trainable parameter i (values: its shape): one native
        pass over values for all seeds, or z generated one seed at a time into a float32 buffer and the products
        summed by numpy in fixed chunks. Either way the result does not depend on the number of threads."""
        name, p = self.params[index]
        lib = library() if self.native else None
        values = values.detach()
        if lib is not None and supports(values) and values.dtype == torch.float32:
            return native_dot(lib, values, key_array([(int(s), name) for s in seeds]), self.kind)
        flat = values.to("cpu", torch.float64).reshape(-1).numpy()
        buf = torch.empty(p.shape, dtype=torch.float32, device=p.device)
        out = np.zeros(len(seeds), dtype=np.float64)
        for j, seed in enumerate(seeds):
            buf.zero_()
            self._accumulate(buf, key_array([(int(seed), name)]), np.ones(1, dtype=np.float32))
            z = buf.to("cpu", torch.float64).reshape(-1).numpy()
            out[j] = sum(float(np.dot(flat[i : i + PROJECT_CHUNK], z[i : i + PROJECT_CHUNK]))
                         for i in range(0, len(flat), PROJECT_CHUNK))
        return out

    @torch.no_grad()
    def materialise_(self, theta0: Mapping[str, torch.Tensor], seeds: Sequence[int], coefs: Sequence[float]) -> None:
        """theta = theta0 + sum_j coefs[j] * z(seeds[j]), summed per element in float32 and rounded once to each
        parameter's dtype. A half-precision model then holds the closed form to within an ulp, where adding each
        round's change to its weights would round small changes away. theta0 maps parameter names to their base
        values (any device). A parameter the native kernel takes is rebuilt in place (theta0 copied in, then every
        seed in one call: the kernel sums them per element in float32 and rounds once); any other goes through a
        float32 buffer of its size, one alive at a time."""
        pairs = [(int(s), float(c)) for s, c in zip(seeds, coefs, strict=True) if c != 0.0]
        lib = library() if self.native else None
        for name, p in reversed(self.params):
            if lib is not None and supports(p):
                p.detach().copy_(theta0[name].view_as(p))
                if pairs:
                    keys = key_array([(s, name) for s, _ in pairs])[None]
                    NativePass(lib, [p.detach()], self.kind)(keys, np.array([[c for _, c in pairs]], dtype=np.float32))
                continue
            buf = theta0[name].to(device=p.device, dtype=torch.float32, copy=True).contiguous()
            for start in range(0, len(pairs), REPLAY_CHUNK):
                chunk = pairs[start : start + REPLAY_CHUNK]
                keys = key_array([(s, name) for s, _ in chunk])
                self._accumulate(buf, keys, np.array([c for _, c in chunk], dtype=np.float32))
            p.detach().copy_(buf.view_as(p))

    def _accumulate(self, buf: torch.Tensor, keys: np.ndarray, coefs: np.ndarray) -> None:
        """buf += sum_s coefs[s] * z(keys[s]) on a temporary float32 buffer (nothing prepared for it is kept)."""
        lib = library() if self.native and supports(buf) else None
        if lib is not None:
            NativePass(lib, [buf], self.kind)(keys[None], coefs[None])
            return
        flat = buf.view(-1)
        keys_t, coefs_t = torch.from_numpy(keys).to(buf.device), torch.from_numpy(coefs).to(buf.device)
        if self.compile:
            apply_compiled_(flat, keys_t, coefs_t, self.kind)
        else:
            self._eager(flat, keys_t, coefs_t)

    def _apply_all(self, keys: np.ndarray, coefs: np.ndarray, native: NativePass | None, covered: list[int]) -> None:
        """theta_i += sum_s coefs[i, s] * z(keys[i, s]) for every parameter i: `native` (see _native) takes
        the parameters it covers in one call, the others go one by one. Last parameter first: the forward that
        follows starts with the first layers, whose freshly written weights are then still in cache."""
        if native is not None:
            native(keys[covered], coefs[covered])
        done = set(covered) if native is not None else set()
        for i, (name, p) in reversed(list(enumerate(self.params))):
            active = np.flatnonzero(coefs[i])
            if i in done or active.size == 0:
                continue
            self._apply(name, p, torch.from_numpy(keys[i, active]).to(p.device),
                        torch.from_numpy(coefs[i, active]).to(p.device))

    def _native(self) -> tuple[NativePass | None, list[int]]:
        """The native pass over the supported parameters (last first), rebuilt when any storage moved."""
        if not self.native:
            return None, []
        pointers = tuple(p.data_ptr() for _, p in self.params)
        if self._native_pass is None or self._native_pass[0] != pointers:
            lib = library()
            covered = [i for i, (_, p) in reversed(list(enumerate(self.params))) if supports(p)]
            tensors = [self.params[i][1].detach() for i in covered]
            native = NativePass(lib, tensors, self.kind) if lib is not None and covered else None
            self._native_pass = (pointers, native, covered)
        return self._native_pass[1], self._native_pass[2]

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
        self._eager(flat, keys, coefs)

    def _eager(self, flat: torch.Tensor, keys: torch.Tensor, coefs: torch.Tensor) -> None:
        """flat += sum_s coefs[s] * z(keys[s]) with plain torch ops, in cache-sized blocks."""
        block = max(WORD_BITS, (BLOCK_ELEMENTS // keys.shape[0]) // WORD_BITS * WORD_BITS)  # pair- and word-aligned
        for first in range(0, flat.numel(), block):
            axpy_z_(flat[first : first + block], first, keys, coefs, self.kind)
