"""In-context linear regression: y = ⟨w, x⟩ + ε with x ~ N(0, Σ) or U(−a, a)^d, w ~ N(0, I).

Σ is isotropic (I), anisotropic (diag λ) or rotated (R diag λ Rᵀ, R a fixed random rotation).
Options: label noise σ, a finite task pool (w drawn from K fixed vectors), a test length M ≠ N.
The batch is layout-neutral (x, y); each model builds its own embedding (ZFB matrix or
interleaved tokens). See `tasks/base.py` for shapes.
"""

from __future__ import annotations

from typing import Literal, Optional, Sequence

import torch
from pydantic import Field, model_validator

from icldyn.config import Strict
from icldyn.errors import UsageError
from icldyn.seeding import generator
from icldyn.tasks.base import Batch, Task


class Curriculum(Strict):
    """Garg et al.'s curriculum: training prompts use only the first `dims_start` input coordinates
    (the rest zeroed), one more every `every` steps, until all d are used. Held-out prompts use all d."""

    dims_start: int = Field(default=1, gt=0)
    every: int = Field(default=500, gt=0, description="steps between increments")
    increment: int = Field(default=1, gt=0)

    def dims_at(self, step: int, d: int) -> int:
        return min(d, self.dims_start + self.increment * (step // self.every))


class LinearRegressionConfig(Strict):
    name: Literal["linear-regression"] = "linear-regression"
    d: int = Field(default=5, gt=0)
    n_points: int = Field(default=20, ge=1, description="N: in-context examples in a training prompt")
    n_test_points: Optional[int] = Field(default=None, ge=1, description="M: examples in a test prompt (default N)")
    covariance: Literal["isotropic", "anisotropic", "rotated"] = "isotropic"
    eigenvalues: Optional[list[float]] = Field(default=None, description="λ (length d) for anisotropic/rotated")
    inputs: Literal["gaussian", "uniform"] = "gaussian"
    uniform_a: float = Field(default=1.0, gt=0, description="inputs U(−a, a)^d")
    noise_std: float = Field(default=0.0, ge=0)
    pool_size: Optional[int] = Field(default=None, gt=0, description="finite task pool of K vectors w")
    rotation_seed: int = Field(default=0, ge=0)
    curriculum: Optional[Curriculum] = None

    @model_validator(mode="after")
    def _check_eigenvalues(self):
        if self.eigenvalues is not None:
            if len(self.eigenvalues) != self.d:
                raise ValueError(f"task.eigenvalues has {len(self.eigenvalues)} entries but task.d is {self.d}")
            if min(self.eigenvalues) <= 0:
                raise ValueError("task.eigenvalues must all be > 0")
        return self

    @property
    def test_points(self) -> int:
        return self.n_test_points or self.n_points

    def eigenvalue_list(self) -> list[float]:
        """λ of Σ: given, or 1 for isotropic, or geometric from 1 down to 0.1 for anisotropic."""
        if self.covariance == "isotropic":
            return [1.0] * self.d
        if self.eigenvalues is not None:
            return list(self.eigenvalues)
        return [0.1 ** (i / max(self.d - 1, 1)) for i in range(self.d)]


class LinearRegressionTask(Task):
    name = "linear-regression"
    estimators = ("zero", "averaging", "ols", "ridge", "gd_1", "gd_opt", "preconditioned_gd", "knn_3")

    def __init__(self, config: LinearRegressionConfig, dtype: torch.dtype = torch.float32):
        super().__init__(config, dtype)
        c = config
        lam = torch.tensor(c.eigenvalue_list(), dtype=torch.float64)
        if c.covariance == "rotated":
            g = generator(c.rotation_seed, "task", 0)
            q, r = torch.linalg.qr(torch.randn(c.d, c.d, generator=g, dtype=torch.float64))
            rotation = q * torch.sign(torch.diagonal(r))
        else:
            rotation = torch.eye(c.d, dtype=torch.float64)
        # x = z · diag(√λ) · Rᵀ has covariance R diag(λ) Rᵀ
        self.input_map = (torch.sqrt(lam)[:, None] * rotation.T)  # (d, d)
        self.eigenvalues = lam
        self.rotation = rotation
        if c.inputs == "uniform":
            self.covariance = torch.eye(c.d, dtype=torch.float64) * c.uniform_a**2 / 3
        else:
            self.covariance = rotation @ torch.diag(lam) @ rotation.T  # Σ, float64
        self.pool = None
        if c.pool_size is not None:
            self.pool = torch.randn(c.pool_size, c.d, generator=generator(c.rotation_seed, "pool", 0),
                                    dtype=torch.float64)

    # -- sampling -----------------------------------------------------------------------------
    def _one(self, seed: int, step: int, batch_size: int, T: int, stream: str, device) -> tuple:
        c, dt = self.config, self.dtype
        if stream == "eval":
            gx, gw, ge = (generator(seed, "eval", k, device) for k in range(3))
        elif stream == "fixed":
            gx, gw, ge = (generator(seed, "fixed", k, device) for k in range(3))
        else:
            gx, gw, ge = (generator(seed, s, step, device) for s in ("data", "task", "noise"))
        if c.inputs == "uniform":
            x = (torch.rand(batch_size, T, c.d, generator=gx, device=device, dtype=dt) * 2 - 1) * c.uniform_a
        else:
            z = torch.randn(batch_size, T, c.d, generator=gx, device=device, dtype=dt)
            x = z @ self.input_map.to(device, dt)
        if c.curriculum is not None and stream == "train":
            x[..., c.curriculum.dims_at(step, c.d):] = 0
        if self.pool is None:
            w = torch.randn(batch_size, c.d, generator=gw, device=device, dtype=dt)
        else:
            idx = torch.randint(0, c.pool_size, (batch_size,), generator=gw, device=device)
            w = self.pool.to(device, dt)[idx]
        y = torch.einsum("btd,bd->bt", x, w)
        if c.noise_std > 0:
            y = y + c.noise_std * torch.randn(batch_size, T, generator=ge, device=device, dtype=dt)
        return x, y, w

    def sample(self, seeds: Sequence[int], step: int, batch_size: int, *, n_points: int | None = None,
               device="cpu", stream: str = "train") -> Batch:
        """x (E, B, N+1, d), y (E, B, N+1), extras['w'] (E, B, d); the last point is the query."""
        T = (n_points or self.config.n_points) + 1
        parts = [self._one(s, step, batch_size, T, stream, device) for s in seeds]
        x, y, w = (torch.stack(p) for p in zip(*parts))
        return Batch(x, y, {"w": w})

    def eval_batch(self, n_prompts: int, eval_seed: int, *, n_points: int | None = None, device="cpu") -> Batch:
        return self.sample([eval_seed], 0, n_prompts, n_points=n_points or self.config.test_points,
                           device=device, stream="eval")

    # -- exact population risk (task side; validated against Monte-Carlo in the tests) ---------
    def population_risk(self, B: torch.Tensor, n: int | None = None) -> torch.Tensor:
        """E(hᵀ B x_q − y_q)² for h = (1/n) Σ y_i x_i, Gaussian x, w ~ N(0, I).  B (..., d, d) → (...).

        Gaussian fourth moments give E[S A S] = (1+1/n) Σ A Σ + tr(AΣ) Σ / n for S the sample
        second moment and A symmetric, hence tr(B Σ Bᵀ Σ Γ_n) − 2 tr(B Σ²) + tr Σ, plus
        σ²/n · tr(B Σ Bᵀ Σ) + σ² from label noise.
        """
        c = self.config
        if c.inputs != "gaussian" or c.pool_size is not None:
            raise UsageError("train.gradient=population needs task.inputs=gaussian and no task.pool_size")
        n = n or c.n_points
        S = self.covariance.to(B.device, B.dtype)
        d = S.shape[0]
        gamma = (1 + 1 / n) * S + torch.trace(S) / n * torch.eye(d, device=B.device, dtype=B.dtype)
        BSBt = B @ S @ B.transpose(-1, -2)
        quad = BSBt @ S
        risk = (torch.einsum("...ij,ji->...", quad, gamma) - 2 * torch.einsum("...ij,ji->...", B, S @ S)
                + torch.trace(S))
        sigma2 = c.noise_std**2
        return risk + sigma2 / n * torch.diagonal(quad, dim1=-2, dim2=-1).sum(-1) + sigma2
