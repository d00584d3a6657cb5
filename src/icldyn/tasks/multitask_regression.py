"""Multi-task in-context linear regression (Chen, Sheen, Wang & Yang 2024, reconstructed).

x ~ N(0, I_d) with d = I·d₀ split into I blocks B_i of d₀ coordinates; I outputs
y^{(i)} = β_iᵀ x_{B_i} + ε_i, β_i ~ N(0, I_{d₀}/d₀) fresh per prompt, ε ~ N(0, σ² I_I).
General (paper) form: y = Gᵀx + ε with G = Σ_i Φ_i β_i ψ_iᵀ = Φ · blockdiag(β_1..β_I) · Ψᵀ for
orthogonal Φ (d×d; Φ_i its d×d₀ column block i) and Ψ (I×I; ψ_i its column i). Φ = Ψ = I by
default; `orthogonal: true` draws Haar-random Φ, Ψ from `rotation_seed`. Since x and ε are
isotropic, the rotated task is the canonical one seen in other coordinates: x = Φx̃, y = Ψỹ.

Batch layout (differs from `tasks/base.py` by a trailing task axis on y):
x (E, B, L+1, d), y (E, B, L+1, I); the last point is the query and its label is noiseless,
y_q = Gᵀx_q (the spec's target); extras 'beta' (E, B, I, d₀), 'G' (E, B, d, I).
The inputs and task vectors are drawn by the linear-regression task (d = I·d₀, isotropic,
w ~ N(0, I_d) split into blocks and scaled by 1/√d₀), so both tasks share one seeded stream layout.
"""

from __future__ import annotations

from typing import Literal, Optional, Sequence

import torch
from pydantic import Field

from icldyn.config import Strict
from icldyn.seeding import generator
from icldyn.tasks.base import Batch, Task
from icldyn.tasks.linear_regression import LinearRegressionConfig, LinearRegressionTask


class MultitaskRegressionConfig(Strict):
    name: Literal["multitask-regression"] = "multitask-regression"
    d0: int = Field(default=4, gt=0, description="d₀: coordinates per task block")
    n_tasks: int = Field(default=2, gt=0, description="I: tasks (outputs)")
    n_points: int = Field(default=80, ge=1, description="L: in-context examples in a prompt")
    n_test_points: Optional[int] = Field(default=None, ge=1, description="examples in a test prompt (default L)")
    noise_std: float = Field(default=0.0, ge=0, description="σ of the label noise on the examples")
    orthogonal: bool = Field(default=False, description="random orthogonal Φ, Ψ instead of the identity")
    rotation_seed: int = Field(default=0, ge=0)

    @property
    def d(self) -> int:
        return self.d0 * self.n_tasks

    @property
    def test_points(self) -> int:
        return self.n_test_points or self.n_points


def haar_orthogonal(n: int, g: torch.Generator) -> torch.Tensor:
    """(n, n) float64 Haar-random orthogonal matrix (QR of a Gaussian with the signs fixed)."""
    q, r = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


class MultitaskRegressionTask(Task):
    name = "multitask-regression"
    # per-task baselines (estimators/multihead.py): they use the block structure and answer the query only
    estimators = ("multitask_gd", "multitask_centred_gd", "multitask_ridge")

    def __init__(self, config: MultitaskRegressionConfig, dtype: torch.dtype = torch.float32):
        super().__init__(config, dtype)
        c = config
        self.d0, self.n_tasks, self.d = c.d0, c.n_tasks, c.d
        # noise 0: the label noise here is per task, so it is drawn below, not by the inner task
        self.inputs = LinearRegressionTask(LinearRegressionConfig(d=c.d, n_points=c.n_points), dtype)
        if c.orthogonal:
            self.phi = haar_orthogonal(c.d, generator(c.rotation_seed, "pool", 1))
            self.psi = haar_orthogonal(c.n_tasks, generator(c.rotation_seed, "pool", 2))
        else:
            self.phi = torch.eye(c.d, dtype=torch.float64)
            self.psi = torch.eye(c.n_tasks, dtype=torch.float64)

    def phi_blocks(self) -> torch.Tensor:
        """Φ_i stacked: (I, d, d₀) float64."""
        return self.phi.reshape(self.d, self.n_tasks, self.d0).permute(1, 0, 2)

    def _one(self, seed: int, step: int, batch_size: int, T: int, stream: str, device) -> tuple:
        c, dt = self.config, self.dtype
        x_can, _, w = self.inputs._one(seed, step, batch_size, T, stream, device)  # (B, T, d), (B, d)
        beta = w.reshape(batch_size, c.n_tasks, c.d0) / c.d0**0.5                   # β_i ~ N(0, I/d₀)
        # ỹ_i = x̃_{B_i}ᵀβ_i as one bmm over (prompt, task): (B·I, T, d₀) @ (B·I, d₀, 1)
        xb = x_can.reshape(batch_size, T, c.n_tasks, c.d0).transpose(1, 2).reshape(-1, T, c.d0)
        y_can = torch.bmm(xb, beta.reshape(-1, c.d0, 1)).reshape(batch_size, c.n_tasks, T).transpose(1, 2)
        # the identity basis (the default) needs no rotation: skip two (B, T, ·) matmuls
        x = x_can if not c.orthogonal else x_can @ self.phi.to(device, dt).T     # x = Φ x̃ per point
        y = y_can.contiguous() if not c.orthogonal else y_can @ self.psi.to(device, dt).T
        if c.noise_std > 0:
            # same stream convention as the linear-regression task: eval/fixed use index 2
            gn = generator(seed, "noise", step, device) if stream == "train" else generator(seed, stream, 2, device)
            eps = torch.randn(batch_size, T, c.n_tasks, generator=gn, device=device, dtype=dt)
            eps[:, -1] = 0                                  # the query's target is noiseless
            y = y + c.noise_std * eps
        # G = Σ_i Φ_i β_i ψ_iᵀ (B, d, I): canonical block-diagonal β, then the bases
        G = torch.zeros(batch_size, c.n_tasks, c.d0, c.n_tasks, device=device, dtype=dt)
        G[:, torch.arange(c.n_tasks), :, torch.arange(c.n_tasks)] = beta.transpose(0, 1)
        G = G.reshape(batch_size, c.d, c.n_tasks)
        if c.orthogonal:
            G = self.phi.to(device, dt) @ G @ self.psi.to(device, dt).T
        return x, y, beta, G

    def sample(self, seeds: Sequence[int], step: int, batch_size: int, *, n_points: int | None = None,
               device="cpu", stream: str = "train") -> Batch:
        """x (E, B, L+1, d), y (E, B, L+1, I), extras 'beta' (E, B, I, d₀), 'G' (E, B, d, I)."""
        T = (n_points or self.config.n_points) + 1
        parts = [self._one(s, step, batch_size, T, stream, device) for s in seeds]
        x, y, beta, G = (torch.stack(p) for p in zip(*parts))
        return Batch(x, y, {"beta": beta, "G": G})

    def eval_batch(self, n_prompts: int, eval_seed: int, *, n_points: int | None = None, device="cpu") -> Batch:
        return self.sample([eval_seed], 0, n_prompts, n_points=n_points or self.config.test_points,
                           device=device, stream="eval")
