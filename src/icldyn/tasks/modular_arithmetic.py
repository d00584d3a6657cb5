"""Modular arithmetic for grokking (Power et al. 2022; Nanda et al. 2023): prompts "a b =" as three
tokens of a vocabulary of p + 1 (the numbers 0..p−1 and "=" = p), label (a ∘ b) mod p.

The p² pairs are split once, by `split_seed` (the same split for every training seed): a
`train_fraction` of them (rounded) is the training set, the rest the held-out test set.

Streams (`sample(..., stream=)`), shapes x (E', B, 3) token ids, y (E', B) labels:
  fixed   the whole training split, the same for every seed (batch_size must be its size)
  train   per seed and step, `batch_size` training pairs without replacement
  eval    the whole test split, E' = 1 (`eval_batch`, whatever number of prompts is asked for:
          the held-out set is the task's fixed test split)
  split   the whole training split, E' = 1 (the train accuracy's prompts)
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from pydantic import Field

from icldyn.config import Strict
from icldyn.errors import UsageError
from icldyn.seeding import generator
from icldyn.tasks.base import Batch, Task

OPERATIONS = {"add": lambda a, b, p: (a + b) % p, "subtract": lambda a, b, p: (a - b) % p,
              "multiply": lambda a, b, p: (a * b) % p}


class ModularArithmeticConfig(Strict):
    name: Literal["modular-arithmetic"] = "modular-arithmetic"
    p: int = Field(default=113, ge=2, description="the modulus; vocabulary p + 1 with '='")
    operation: Literal["add", "subtract", "multiply"] = "add"
    train_fraction: float = Field(default=0.3, gt=0, lt=1, description="share of the p² pairs trained on")
    split_seed: int = Field(default=0, ge=0, description="seeds the train/test split (shared by all seeds)")

    @property
    def vocab_size(self) -> int:
        return self.p + 1

    @property
    def seq_len(self) -> int:
        return 3

    @property
    def n_train(self) -> int:
        return max(1, min(self.p * self.p - 1, round(self.train_fraction * self.p * self.p)))


class ModularArithmeticTask(Task):
    name = "modular-arithmetic"
    config_class = ModularArithmeticConfig
    loss_kind = "ce"

    def __init__(self, config: ModularArithmeticConfig, dtype: torch.dtype = torch.float32):
        super().__init__(config, dtype)
        p = config.p
        order = torch.randperm(p * p, generator=generator(config.split_seed, "task"))
        a, b = order // p, order % p
        x = torch.stack([a, b, torch.full_like(a, p)], dim=-1)                       # (p², 3)
        y = OPERATIONS[config.operation](a, b, p)                                    # (p²,)
        n = config.n_train
        self.train_x, self.train_y, self.test_x, self.test_y = x[:n], y[:n], x[n:], y[n:]

    @property
    def n_train(self) -> int:
        return self.train_x.shape[0]

    def sample(self, seeds: Sequence[int], step: int, batch_size: int, *, n_points: int | None = None,
               device="cpu", stream: str = "train") -> Batch:
        """Prompts of one stream (module doc): x (E', B, 3) token ids, y (E', B) labels."""
        E = len(seeds)
        if stream == "fixed":
            if batch_size != self.n_train:
                raise UsageError(f"train.dataset_size={batch_size} but the training split of p={self.config.p} "
                                 f"at train_fraction={self.config.train_fraction} holds {self.n_train} pairs; "
                                 f"set train.dataset_size={self.n_train}")
            x, y = self.train_x.expand(E, -1, -1), self.train_y.expand(E, -1)
        elif stream == "train":
            if batch_size > self.n_train:
                raise UsageError(f"train.batch_size={batch_size} exceeds the {self.n_train} training pairs")
            idx = torch.stack([torch.randperm(self.n_train, generator=generator(s, "data", step))[:batch_size]
                               for s in seeds])
            x, y = self.train_x[idx], self.train_y[idx]
        elif stream == "eval":
            x, y = self.test_x[None], self.test_y[None]
        elif stream == "split":
            x, y = self.train_x[None], self.train_y[None]
        else:
            raise UsageError(f"unknown sampling stream {stream!r}; allowed: fixed, train, eval, split")
        return Batch(x.contiguous().to(device), y.contiguous().to(device))

    def train_batch(self, device="cpu") -> Batch:
        """The whole training split, shared by all seeds (E' = 1)."""
        return self.sample([0], 0, self.n_train, device=device, stream="split")
