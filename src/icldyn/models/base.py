"""What every model shares: a leading seed axis on every parameter and named hook points.

An ensemble of E seeds is one module whose parameters have shape (E, ...): summing the
per-seed losses gives each seed exactly its own gradient, and Adam/SGD act elementwise, so
training the ensemble equals training each seed alone (a test checks it).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import torch
from torch import nn

from icldyn.seeding import generator


class EnsembleModel(nn.Module):
    """Base class. Subclasses set `prefix_outputs` and implement `forward(batch) -> (E, B, P)`.

    `prefix_outputs`: True when the model predicts y at every position (P = T, teacher forcing),
    False when it predicts only the query (P = 1).
    """

    prefix_outputs: bool = False

    def __init__(self, n_seeds: int):
        super().__init__()
        self.n_seeds = n_seeds
        self._cache: dict[str, torch.Tensor] | None = None

    def hook(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """A named hook point (TransformerLens style): stored when running with a cache."""
        if self._cache is not None:
            self._cache[name] = value.detach()
        return value

    @contextmanager
    def caching(self):
        self._cache = {}
        try:
            yield self._cache
        finally:
            self._cache = None

    def run_with_cache(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with self.caching() as cache:
            out = self(batch)
        return out, cache

    def loss(self, pred: torch.Tensor, batch) -> torch.Tensor:
        """Per-seed training loss (E,): ½·mean squared error over the predicted positions.

        Token models (cross-entropy, or a paper's own loss switch) override this.
        """
        target = batch.y if self.prefix_outputs else batch.y[..., -1:]
        return 0.5 * (pred - target).pow(2).flatten(1).mean(1)

    def population_loss(self, task) -> torch.Tensor:
        """Per-seed exact expected training loss (E,), where the model and task offer one."""
        raise NotImplementedError(f"{type(self).__name__} has no exact population loss")


def seeded_normal(seeds: Sequence[int], shape: Sequence[int], std: float, salt: int,
                  dtype=torch.float32) -> torch.Tensor:
    """(E, *shape) normal init, each seed's slice from its own init stream (salted per tensor)."""
    return torch.stack([
        torch.randn(*shape, generator=generator(s, "init", salt), dtype=dtype) * std for s in seeds
    ])
