"""Vector-valued in-context regression (the exact-dynamics paper's own task): y = W^µ x ∈ ℝᵈ with
x ~ N(0, Σ), Σ = U diag(s) Uᵀ, and W^µ = U diag(λ^µ) Uᵀ drawn uniformly from a fixed pool of P
tasks whose entries λ^µ_α are N(0, 1) (symmetric tasks sharing Σ's eigenbasis); optionally each
mode's entries are rescaled to mean square 1 over the pool (`normalize_pool`).

Batch: x (E, B, N+1, d), y (E, B, N+1, d) (the query's label is the target; models never read
it), extras['task'] (E, B) the pool index. The pool and U are fixed by `task_seed`; prompts are a
pure function of (seed, step) through the seeding streams, as for every task.
"""

from __future__ import annotations

from typing import Literal, Optional, Sequence

import torch
from pydantic import Field, model_validator

from icldyn.config import Strict
from icldyn.seeding import generator, generators
from icldyn.tasks.base import Batch, Task


class VectorRegressionConfig(Strict):
    name: Literal["vector-regression"] = "vector-regression"
    d: int = Field(default=3, gt=0)
    n_points: int = Field(default=20, ge=1, description="N: in-context examples per prompt")
    eigenvalues: Optional[list[float]] = Field(default=None, description="s (length d), Σ's eigenvalues; "
                                               "default 1, 1/2, 1/4, ...")
    n_tasks: int = Field(default=16, gt=0, description="P: the fixed pool of tasks W^µ")
    normalize_pool: bool = Field(default=False, description="rescale each mode's λ^µ to mean square 1 over the "
                                 "pool (c_α = 1: the timescales of an infinite pool, and the scalar task's weights)")
    basis: Literal["identity", "rotated"] = "rotated"
    task_seed: int = Field(default=0, ge=0, description="seeds U and the task pool")
    # The exact population loss (train.gradient=population) at N examples, or its N → ∞ limit
    # (Σ̂ = Σ), where the paper's modes decouple exactly; sampled prompts always hold N examples.
    population_context: Literal["finite", "infinite"] = "finite"

    @model_validator(mode="after")
    def _check_eigenvalues(self):
        if self.eigenvalues is None:
            self.__dict__["eigenvalues"] = [0.5**i for i in range(self.d)]
        if len(self.eigenvalues) != self.d:
            raise ValueError(f"task.eigenvalues has {len(self.eigenvalues)} entries but task.d is {self.d}")
        if min(self.eigenvalues) <= 0:
            raise ValueError("task.eigenvalues must all be > 0")
        return self

    def resolved_defaults(self) -> dict:
        rule = [0.5**i for i in range(self.d)]
        return {"eigenvalues": rule} if self.eigenvalues == rule else {}


class VectorRegressionTask(Task):
    name = "vector-regression"
    estimators = ()

    def __init__(self, config: VectorRegressionConfig, dtype: torch.dtype = torch.float32):
        super().__init__(config, dtype)
        c = config
        self.eigenvalues = torch.tensor(c.eigenvalues, dtype=torch.float64)     # s (d,)
        if c.basis == "rotated":
            q, r = torch.linalg.qr(torch.randn(c.d, c.d, generator=generator(c.task_seed, "task", 0),
                                               dtype=torch.float64))
            self.basis = q * torch.sign(torch.diagonal(r))                      # U (d, d)
        else:
            self.basis = torch.eye(c.d, dtype=torch.float64)
        self.covariance = self.basis @ torch.diag(self.eigenvalues) @ self.basis.T
        self.pool = torch.randn(c.n_tasks, c.d, generator=generator(c.task_seed, "pool", 0),
                                dtype=torch.float64)                           # λ^µ (P, d)
        if c.normalize_pool:
            self.pool = self.pool / self.pool.pow(2).mean(0).sqrt()
        self.input_map = torch.sqrt(self.eigenvalues)[:, None] * self.basis.T  # x = z · √s Uᵀ

    @property
    def mode_moments(self) -> torch.Tensor:
        """c_α = (1/P) Σ_µ (λ^µ_α)² (d,): the pool's second moment per mode (the loss's weights)."""
        return self.pool.pow(2).mean(0)

    @property
    def inverse_n(self) -> float:
        """1/N of the population loss: 0 in the N → ∞ limit."""
        return 0.0 if self.config.population_context == "infinite" else 1.0 / self.config.n_points

    def task_matrices(self) -> torch.Tensor:
        """W^µ = U diag(λ^µ) Uᵀ (P, d, d), float64."""
        return self.basis @ (self.pool[:, :, None] * self.basis.T)

    def sample(self, seeds: Sequence[int], step: int, batch_size: int, *, n_points: int | None = None,
               device="cpu", stream: str = "train") -> Batch:
        """x (E, B, N+1, d), y (E, B, N+1, d), extras['task'] (E, B)."""
        c, T = self.config, (n_points or self.config.n_points) + 1
        names = (stream, stream) if stream in ("eval", "fixed") else ("data", "task")
        keys = [(s, name, 0 if stream in ("eval", "fixed") else step) for s in seeds for name in names]
        gens = generators(keys, device)
        z = torch.stack([torch.randn(batch_size, T, c.d, generator=gens[2 * e], device=device, dtype=self.dtype)
                         for e in range(len(seeds))])
        idx = torch.stack([torch.randint(0, c.n_tasks, (batch_size,), generator=gens[2 * e + 1], device=device)
                           for e in range(len(seeds))])
        x = z @ self.input_map.to(device, self.dtype)
        W = self.task_matrices().to(device, self.dtype)[idx]                     # (E, B, d, d)
        y = x @ W.transpose(-1, -2)                                              # y_i = W x_i
        return Batch(x, y, {"task": idx})

    def eval_batch(self, n_prompts: int, eval_seed: int, *, n_points: int | None = None, device="cpu") -> Batch:
        return self.sample([eval_seed], 0, n_prompts, n_points=n_points, device=device, stream="eval")
