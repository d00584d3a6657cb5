"""In-context linear regression: y = ⟨w, x⟩ + ε with x ~ N(0, Σ) or U(−a, a)^d, w ~ N(0, I).

Σ is isotropic (I), anisotropic (diag λ) or rotated (R diag λ Rᵀ, R a fixed random rotation).
Options: label noise σ, a finite task pool (w drawn from K fixed vectors), a test length M ≠ N.
The batch is layout-neutral (x, y); each model builds its own embedding (ZFB matrix or
interleaved tokens). See `tasks/base.py` for shapes.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Literal, Optional, Sequence

import torch
from pydantic import Field, model_validator

from icldyn.config import Strict
from icldyn.errors import UsageError
from icldyn.seeding import generator, generators
from icldyn.tasks.base import Batch, Task


_POOL: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, workers, pool)


PARALLEL_MIN_NUMEL = 1 << 17  # per seed; below it thread hand-offs cost more than they save


def parallel_over_seeds(fill: Callable[[int], None], n_seeds: int, device, numel_per_seed: int | None = None) -> None:
    """Call fill(e) for e < n_seeds, in up to torch.get_num_threads() threads on a CPU device.

    Each seed's draws come from its own generator, so the order of the calls does not matter;
    a generator is sequential, so threads over seeds are how sampling uses more than one core.
    Only seeds with at least PARALLEL_MIN_NUMEL numbers to draw are spread over threads. The
    pool is rebuilt after a fork (a forked child inherits no threads).
    """
    global _POOL
    workers = min(n_seeds, torch.get_num_threads()) if torch.device(device).type == "cpu" else 1
    if workers <= 1 or (numel_per_seed is not None and numel_per_seed < PARALLEL_MIN_NUMEL):
        for e in range(n_seeds):
            fill(e)
        return
    if _POOL is None or _POOL[0] != os.getpid() or _POOL[1] != workers:
        _POOL = (os.getpid(), workers, ThreadPoolExecutor(workers, thread_name_prefix="icldyn-sample"))
    list(_POOL[2].map(fill, range(n_seeds)))  # list(): re-raises a worker's exception here


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
        elif self.covariance != "isotropic":
            # config.yaml holds the λ used: the rule's values, not `null` (not a user's setting,
            # so it stays out of model_fields_set; set without re-validating the block)
            self.__dict__["eigenvalues"] = self.default_eigenvalues()
        return self

    @property
    def test_points(self) -> int:
        return self.n_test_points or self.n_points

    def default_eigenvalues(self) -> list[float] | None:
        """λ when none are given: geometric from 1 down to 0.1 for anisotropic/rotated, None
        (λ = 1) for isotropic."""
        if self.covariance == "isotropic":
            return None
        return [0.1 ** (i / max(self.d - 1, 1)) for i in range(self.d)]

    def resolved_defaults(self) -> dict:
        rule = self.default_eigenvalues()
        return {"eigenvalues": rule} if rule is not None and self.eigenvalues == rule else {}

    def eigenvalue_list(self) -> list[float]:
        """λ of Σ: 1 for isotropic (`eigenvalues` is then not used), else `eigenvalues` (given, or
        resolved at validation by `default_eigenvalues`)."""
        if self.covariance == "isotropic":
            return [1.0] * self.d
        return list(self.eigenvalues)


class LinearRegressionTask(Task):
    name = "linear-regression"
    estimators = ("zero", "averaging", "ols", "ridge", "gd_1", "gd_opt", "gd_5", "preconditioned_gd", "knn_3")

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
    # Each seed draws from its own generators, so a seed's prompts never depend on the ensemble.
    # The ensemble's tensors are allocated once and every seed's draws are written into its
    # slice (no per-seed temporaries, no stack); the input map is skipped when it is the
    # identity and is a product with √λ when it is diagonal, which give the same bits as the
    # (d, d) matmul. With several threads, seeds are filled in parallel: torch releases the
    # GIL and a generator is sequential, so one seed cannot use two cores, but two seeds can.
    @staticmethod
    def _generators(seeds: Sequence[int], step: int, stream: str, device) -> list[tuple]:
        """(inputs, task vector, noise) generators of each seed: [(gx, gw, ge), ...]."""
        if stream in ("eval", "fixed"):
            entries = [(s, stream, k) for s in seeds for k in range(3)]
        else:
            entries = [(s, name, step) for s in seeds for name in ("data", "task", "noise")]
        gens = generators(entries, device)
        return [tuple(gens[3 * e: 3 * e + 3]) for e in range(len(seeds))]

    def _input_map(self, device, dtype) -> tuple[str, torch.Tensor | None]:
        """("identity" | "diagonal" | "matrix", tensor): how z ~ N(0, I) becomes x."""
        key = (str(device), dtype)
        cache = self.__dict__.setdefault("_map_cache", {})
        if key not in cache:
            m = self.input_map
            if torch.equal(m, torch.eye(m.shape[0], dtype=m.dtype)):
                cache[key] = ("identity", None)
            elif torch.equal(m, torch.diag(torch.diagonal(m))):
                cache[key] = ("diagonal", torch.diagonal(m).to(device, dtype).contiguous())
            else:
                cache[key] = ("matrix", m.to(device, dtype))
        return cache[key]

    def _fill(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None, gens: tuple, step: int,
              stream: str) -> None:
        """Draw one seed's inputs x (B, T, d), task vectors w (B, d) and, when given, its label
        noise (B, T) into these contiguous slices, from its generators `gens` = (gx, gw, ge)."""
        c, dt, device = self.config, self.dtype, x.device
        batch_size, T = x.shape[0], x.shape[1]
        gx, gw, ge = gens
        if c.inputs == "uniform":
            torch.rand(batch_size, T, c.d, generator=gx, device=device, dtype=dt, out=x)
            x.mul_(2).sub_(1).mul_(c.uniform_a)
        else:
            kind, m = self._input_map(device, dt)
            if kind == "identity":
                torch.randn(batch_size, T, c.d, generator=gx, device=device, dtype=dt, out=x)
            else:
                z = torch.randn(batch_size, T, c.d, generator=gx, device=device, dtype=dt)
                torch.mul(z, m, out=x) if kind == "diagonal" else torch.matmul(z, m, out=x)
        if c.curriculum is not None and stream == "train":
            x[..., c.curriculum.dims_at(step, c.d):] = 0
        if self.pool is None:
            torch.randn(batch_size, c.d, generator=gw, device=device, dtype=dt, out=w)
        else:
            idx = torch.randint(0, c.pool_size, (batch_size,), generator=gw, device=device)
            torch.index_select(self._pool_on(device, dt), 0, idx, out=w)
        if noise is not None:
            torch.randn(batch_size, T, generator=ge, device=device, dtype=dt, out=noise)

    def _labels(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """y = ⟨w, x⟩ (+ σ·noise) for x (..., B, T, d), w (..., B, d): one bmm for every seed."""
        B, T, d = x.shape[-3:]
        y = torch.bmm(x.reshape(-1, T, d), w.reshape(-1, d, 1)).view(x.shape[:-1])
        if noise is not None:
            y.add_(noise.mul_(self.config.noise_std))
        return y

    def _pool_on(self, device, dtype) -> torch.Tensor:
        cache = self.__dict__.setdefault("_pool_cache", {})
        key = (str(device), dtype)
        if key not in cache:
            cache[key] = self.pool.to(device, dtype)
        return cache[key]

    def _one(self, seed: int, step: int, batch_size: int, T: int, stream: str, device) -> tuple:
        """One seed's prompts: x (B, T, d), y (B, T), w (B, d)."""
        x, w, noise = self._buffers(1, batch_size, T, device)
        self._fill(x[0], w[0], None if noise is None else noise[0],
                   self._generators([seed], step, stream, device)[0], step, stream)
        return x[0], self._labels(x, w, noise)[0], w[0]

    def _buffers(self, E: int, batch_size: int, T: int, device) -> tuple:
        d, dt = self.config.d, self.dtype
        noise = torch.empty(E, batch_size, T, device=device, dtype=dt) if self.config.noise_std > 0 else None
        return (torch.empty(E, batch_size, T, d, device=device, dtype=dt),
                torch.empty(E, batch_size, d, device=device, dtype=dt), noise)

    def sample(self, seeds: Sequence[int], step: int, batch_size: int, *, n_points: int | None = None,
               device="cpu", stream: str = "train") -> Batch:
        """x (E, B, N+1, d), y (E, B, N+1), extras['w'] (E, B, d); the last point is the query."""
        T = (n_points or self.config.n_points) + 1
        x, w, noise = self._buffers(len(seeds), batch_size, T, device)
        gens = self._generators(seeds, step, stream, x.device)

        def fill(e: int) -> None:
            self._fill(x[e], w[e], None if noise is None else noise[e], gens[e], step, stream)

        parallel_over_seeds(fill, len(seeds), x.device, numel_per_seed=x[0].numel())
        return Batch(x, self._labels(x, w, noise), {"w": w})

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
