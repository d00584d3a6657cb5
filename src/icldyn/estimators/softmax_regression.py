"""Softmax-regression estimators on (A, b) tasks: one GD step from 0 with a tuned step, and the optimum.

Both fit x on the n context words of each task and predict the m query words by softmax over
them of a_qᵀx. Batched over every leading axis (seeds, tasks); the fits run in float64.
  OneStepGD(eta)   x₁ = (η/n) Aᵀ(b − 1/n) (closed form)
  tune_step        η minimising the query loss over training tasks: a log grid, then a finer one
  optimum          argmin_x ½‖softmax(Ax) − b‖² by Newton steps from 0 (on the cross-entropy; a floor)
A predictor is called on a Batch of the softmax-regression layout and returns (E, B, m).
"""

from __future__ import annotations

import math

import torch



def one_step_direction(A: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x₁(η = 1) = (1/n) Aᵀ(b − 1/n), one GD step from 0 on ½‖softmax(Ax) − b‖² (x₁ is linear in η;
    the closed form is `theory.softmax_regression.one_step`, written here again on purpose: the
    estimators sit beside theory, not on it, and a test holds the two together). (.., d)"""
    n = A.shape[-2]
    return (A.transpose(-1, -2) @ (b - 1.0 / n)[..., None]).squeeze(-1) / n


def _split(batch, m: int):
    x, y = batch.x, batch.y
    return x[..., :-m, :], y[..., :-m], x[..., -m:, :]


def query_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """½·mean squared error over the query words (..): the models' training convention."""
    return 0.5 * (pred - target).pow(2).mean(-1)


class OneStepGD:
    """One GD step from 0 with step η (a float or (E,) per seed): predictions (E, B, m)."""

    def __init__(self, eta, n_queries: int):
        self.eta, self.m = eta, n_queries

    def __call__(self, batch) -> torch.Tensor:
        A, b, queries = _split(batch, self.m)
        eta = torch.as_tensor(self.eta, dtype=torch.float64, device=A.device)
        eta = eta.reshape(-1, *([1] * (A.dim() - 3))) if eta.dim() else eta    # (E, 1..) per seed
        x1 = eta[..., None] * one_step_direction(A.double(), b.double())         # (E, B, d)
        logits = (queries @ x1.to(queries.dtype)[..., None]).squeeze(-1)          # differentiable in a_q
        return torch.softmax(logits, dim=-1)


def tune_step(batch, m: int, lo: float = 1e-1, hi: float = 1e5, points: int = 121, refine: int = 2) -> torch.Tensor:
    """η per seed (E,) minimising the mean query loss of one GD step over the tasks of `batch`.

    x₁ is linear in η, so the query logits are η·a_qᵀx₁(1): every η of a log grid is scored at
    once (η × seeds × tasks, batched), then a finer grid around each seed's best, `refine` times."""
    A, b, queries = (t.double() for t in _split(batch, m))
    target = batch.y[..., -m:].double()
    base = (queries @ one_step_direction(A, b)[..., None]).squeeze(-1)         # (E, B, m)
    grid = torch.logspace(math.log10(lo), math.log10(hi), points, dtype=torch.float64)[:, None]
    grid = grid.expand(points, base.shape[0])                                    # (G, E)
    for r in range(refine + 1):
        logits = grid[:, :, None, None] * base                                   # (G, E, B, m)
        risk = query_loss(torch.softmax(logits, -1), target).mean(-1)            # (G, E)
        best = grid.gather(0, risk.argmin(0)[None])[0]                           # (E,)
        if r == refine:
            return best
        width = torch.log(grid[1] / grid[0])                                     # (E,)
        grid = best * torch.exp(torch.linspace(-1, 1, 41, dtype=torch.float64)[:, None] * width)
    return best


def optimum(A: torch.Tensor, b: torch.Tensor, steps: int = 60) -> torch.Tensor:
    """argmin_x ½‖softmax(Ax) − b‖² for realisable b, batched: A (.., n, d), b (.., n) → (.., d).

    Damped Newton (Levenberg–Marquardt) from 0 on the convex cross-entropy −Σ b_i log f_i(x):
    gradient Aᵀ(f − b), Hessian Aᵀ(diag f − ffᵀ)A. For b = softmax(Ax*) its minimisers are where
    f = b, i.e. L = 0, the minimum of L (plain Newton, or Gauss-Newton on L, diverges on these
    flat softmaxes). Per task, a step that lowers the cross-entropy is taken and the damping μ
    shrinks; otherwise it is refused and μ grows. For d ≥ n, μ keeps the solution small-norm."""
    A, b = A.double(), b.double()
    d = A.shape[-1]
    x = torch.zeros(*A.shape[:-2], d, dtype=torch.float64, device=A.device)
    eye = torch.eye(d, dtype=torch.float64, device=A.device)
    mu = torch.ones(A.shape[:-2], dtype=torch.float64, device=A.device)

    def ce(z):
        return -(b * torch.log_softmax((A @ z[..., None]).squeeze(-1), -1)).sum(-1)

    current = ce(x)
    for _ in range(steps):
        f = torch.softmax((A @ x[..., None]).squeeze(-1), dim=-1)
        grad = (A.transpose(-1, -2) @ (f - b)[..., None]).squeeze(-1)
        JA = f[..., None] * A - f[..., None] * (f[..., None, :] @ A)          # (diag f − ffᵀ) A
        H = A.transpose(-1, -2) @ JA
        trial = x - torch.linalg.solve(H + mu[..., None, None] * eye, grad[..., None]).squeeze(-1)
        value = ce(trial)
        better = value < current
        x = torch.where(better[..., None], trial, x)
        current = torch.where(better, value, current)
        mu = torch.where(better, mu / 3, mu * 4).clamp(1e-12, 1e12)
    return x


class Optimum:
    """The softmax-regression optimum fitted on the context, applied to the queries: (E, B, m)."""

    def __init__(self, n_queries: int, steps: int = 60):
        self.m, self.steps = n_queries, steps

    def __call__(self, batch) -> torch.Tensor:
        A, b, queries = _split(batch, self.m)
        x = optimum(A, b, self.steps).to(queries.dtype)
        return torch.softmax((queries @ x[..., None]).squeeze(-1), dim=-1)
