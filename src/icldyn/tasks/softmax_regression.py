"""In-context softmax regression (Li, Song, Xia, Yu & Zhou 2023; the protocol is ours).

Per task: x* ~ N(0, I_d/d)·scale, n context words a_i ~ N(0, I_d) (the rows of A) and m query
words a_q ~ N(0, I_d); context targets b = softmax over the n context words of a_iᵀx*, query
targets b_q = softmax over the m query words of a_qᵀx* (both realisable by x*).

Batch layout (the regression layout of `tasks/base.py` with m query points at the end):
x (E, B, n+m, d) the words, y (E, B, n+m) the targets: y[..., :n] = b, y[..., n:] = b_q.
Query targets are in y for the loss only: models read the context labels y[..., :n] and never
y[..., n:] (their tokens are (a_q; 0)). extras: 'x_star' (E, B, d), 'n_queries' m (an int).
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from pydantic import Field

from icldyn.config import Strict
from icldyn.seeding import generator
from icldyn.tasks.base import Batch, Task


class SoftmaxRegressionConfig(Strict):
    name: Literal["softmax-regression"] = "softmax-regression"
    d: int = Field(default=20, gt=0, description="embedding size d")
    n_points: int = Field(default=25, ge=2, description="n: context words per task")
    n_queries: int = Field(default=5, ge=2, description="m: query words per task (softmax over them)")
    scale: float = Field(default=3.0, gt=0, description="x* ~ N(0, I_d/d)·scale")


class SoftmaxRegressionTask(Task):
    name = "softmax-regression"
    estimators = ()  # one-step GD and the optimum take (A, b) blocks: estimators/softmax_regression.py

    def __init__(self, config: SoftmaxRegressionConfig, dtype: torch.dtype = torch.float32):
        super().__init__(config, dtype)
        self.d, self.n, self.m = config.d, config.n_points, config.n_queries

    def _one(self, seed: int, step: int, batch_size: int, n: int, stream: str, device):
        """One seed's tasks: words (B, n+m, d), targets (B, n+m), x* (B, d), all from one generator."""
        c, m = self.config, self.m
        g = generator(seed, stream if stream != "train" else "data", step, device)
        words = torch.randn(batch_size, n + m, c.d, generator=g, device=device, dtype=torch.float64)
        x_star = torch.randn(batch_size, c.d, generator=g, device=device, dtype=torch.float64) * (c.scale / c.d**0.5)
        logits = (words @ x_star[..., None]).squeeze(-1)                     # (B, n+m)
        y = torch.cat([torch.softmax(logits[:, :n], -1), torch.softmax(logits[:, n:], -1)], -1)
        return words.to(self.dtype), y.to(self.dtype), x_star.to(self.dtype)

    def sample(self, seeds: Sequence[int], step: int, batch_size: int, *, n_points: int | None = None,
               device="cpu", stream: str = "train") -> Batch:
        """x (E, B, n+m, d), y (E, B, n+m), extras 'x_star' (E, B, d), 'n_queries' (int)."""
        n = n_points or self.n
        parts = [self._one(s, step, batch_size, n, stream, device) for s in seeds]
        x, y, x_star = (torch.stack(p) for p in zip(*parts))
        return Batch(x, y, {"x_star": x_star, "n_queries": self.m})


def split(batch: Batch, m: int):
    """(A (.., n, d), b (.., n), queries (.., m, d), query targets (.., m)) of a batch."""
    return batch.x[..., :-m, :], batch.y[..., :-m], batch.x[..., -m:, :], batch.y[..., -m:]
