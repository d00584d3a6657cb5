"""Shifts of in-context linear regression prompts (Garg et al. 2022's out-of-distribution suite, plus
outliers and orthogonal queries).

Prompts are drawn once at the longest length (the task's own eval-stream sampler: x, w and label
noise), a shift transforms the draw (`Draw`, batched over prompts), and the prompt with m examples
is its first m points and the query (common random numbers across m). Labels y = ⟨w, x⟩ + ε are
formed after the shift, so a shift of x moves y with it.

    none              the task's prompts
    skewed=p          x ~ N(0, diag λ), λ_i ∝ i^(−p) scaled to tr Σ of the task (Garg: skewed covariance)
    scale_x=c         x → c·x (covariance c²Σ)
    scale_y=c         w → c·w (task scale; the labels scale by c)
    noise=σ           extra N(0, σ²) noise on every label
    outliers=p        each context label (not the query's) gets, with probability p, an extra
                      N(0, (10·√tr Σ)²) corruption
    half_subspace=k   every point projected on a random k-dim subspace (per prompt; default d/2)
    orthogonal_query=k  context projected on a random k-dim subspace, the query on its orthogonal
                      complement (Garg's orthogonal train/test; default k = d/2)
    query_in_context  the query is one of the prompt's context points, picked uniformly
    length=M          prompts of up to M examples (test length M ≠ N)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator, Sequence

import zlib

import torch

from icldyn.errors import UsageError
from icldyn.seeding import generator
from icldyn.shifts import Family, Param, Shift
from icldyn.tasks.base import Batch

OUTLIER_SCALE = 10.0  # outlier corruption std, in units of √tr Σ (the typical label size)
MAX_LENGTH = 100_000


@dataclass
class Draw:
    """One evaluation draw: x (B, T, d) with the query last, w (B, d), label noise (B, T), and
    `pick` (B,) ∈ [0, 1) when the query is the context point ⌊pick·m⌋ (else None)."""

    x: torch.Tensor
    w: torch.Tensor
    noise: torch.Tensor
    pick: torch.Tensor | None = None


def _half(task) -> int:
    return max(1, task.config.d // 2)


def random_projections(B: int, d: int, k: int, g: torch.Generator, dtype) -> torch.Tensor:
    """Orthogonal projections on B uniformly random k-dim subspaces of R^d: (B, d, d)."""
    q, _ = torch.linalg.qr(torch.randn(B, d, k, generator=g, dtype=torch.float64))
    return (q @ q.transpose(1, 2)).to(dtype)


def skewed_eigenvalues(task, p: float) -> torch.Tensor:
    """λ_i ∝ (i + 1)^(−p), i < d, scaled so that Σ λ = tr Σ of the task.  (d,) float64"""
    lam = torch.arange(1, task.config.d + 1, dtype=torch.float64) ** (-p)
    return lam * float(torch.trace(task.covariance)) / lam.sum()


def _skewed(task, draw: Draw, p, g) -> Draw:
    lam = skewed_eigenvalues(task, p).to(draw.x.dtype)
    return replace(draw, x=torch.randn(draw.x.shape, generator=g, dtype=draw.x.dtype) * lam.sqrt())


def _scale_x(task, draw, c, g):
    return replace(draw, x=draw.x * c)


def _scale_y(task, draw, c, g):
    return replace(draw, w=draw.w * c)


def _noise(task, draw, sigma, g):
    return replace(draw, noise=draw.noise + sigma * torch.randn(draw.noise.shape, generator=g, dtype=draw.noise.dtype))


def _outliers(task, draw, p, g):
    B, T = draw.noise.shape
    hit = torch.rand(B, T, generator=g, dtype=torch.float64) < p
    hit[:, -1] = False                       # the query's label stays clean: only the context is corrupted
    scale = OUTLIER_SCALE * float(torch.trace(task.covariance)) ** 0.5
    corruption = scale * torch.randn(B, T, generator=g, dtype=draw.noise.dtype)
    return replace(draw, noise=draw.noise + hit.to(draw.noise.dtype) * corruption)


def _half_subspace(task, draw, k, g):
    P = random_projections(draw.x.shape[0], task.config.d, k, g, draw.x.dtype)
    return replace(draw, x=draw.x @ P)


def _orthogonal_query(task, draw, k, g):
    P = random_projections(draw.x.shape[0], task.config.d, k, g, draw.x.dtype)   # (B, d, d)
    ctx = draw.x[:, :-1] @ P
    query = draw.x[:, -1:] @ (torch.eye(task.config.d, dtype=P.dtype) - P)
    return replace(draw, x=torch.cat([ctx, query], 1))


def _query_in_context(task, draw, _, g):
    return replace(draw, pick=torch.rand(draw.x.shape[0], generator=g, dtype=torch.float64))


def _dim_param(field: str, spare: int) -> Param:
    """k ≥ 1 and ≤ d − spare (the orthogonal query needs a non-empty complement)."""
    return Param(field, int, low=1, high=lambda task: task.config.d - spare, default=_half)


SHIFTS = (
    Shift("skewed", "x ~ N(0, diag λ), λ_i ∝ i^(−p), tr λ = tr Σ", _skewed, Param("p", float, 0, 20, default=2.0)),
    Shift("scale_x", "x → c·x", _scale_x, Param("c", float, 0, 1e3, low_open=True, default=2.0)),
    Shift("scale_y", "w → c·w (task scale)", _scale_y, Param("c", float, 0, 1e3, low_open=True, default=2.0)),
    Shift("noise", "extra N(0, σ²) label noise", _noise, Param("sigma", float, 0, 1e3, default=0.5)),
    Shift("outliers", "a fraction p of context labels corrupted by N(0, (10√tr Σ)²)", _outliers,
          Param("p", float, 0, 1, default=0.1)),
    Shift("half_subspace", "all points on a random k-dim subspace", _half_subspace, _dim_param("k", 0)),
    Shift("orthogonal_query", "context on a random k-dim subspace, query orthogonal to it", _orthogonal_query,
          _dim_param("k", 1)),
    Shift("query_in_context", "the query is one of the context points", _query_in_context),
    Shift("length", "prompts of up to M examples (M ≠ N)", None, Param("M", int, 1, MAX_LENGTH)),
)


class LinearRegressionShifts(Family):
    task = "linear-regression"
    metric = "mse"
    family_shifts = SHIFTS

    def grid(self, trained, shift: Shift, value) -> list[int]:
        """1, 2, 3, 5, 8, 12, N/2, N, 3N/2, 2N (as the experiments' error curves), up to M for
        `length=M`; capped by a model's positional table (an error when `length` exceeds it)."""
        N = trained.config.task.n_points
        top = value if shift.name == "length" else 2 * N
        cap = getattr(trained.model, "max_points", None)
        if cap is not None and top > cap - 1:
            if shift.name == "length":
                raise UsageError(f"shift 'length': M must be ≤ {cap - 1} for this model (its positional table "
                                 f"holds {cap} points); got {value}")
            top = cap - 1
        marks = {1, 2, 3, 5, 8, 12, N // 2, N, 3 * N // 2, 2 * N, top // 2, top}
        return sorted(m for m in marks if 1 <= m <= top)

    def prompts(self, task, shift: Shift, value, grid: Sequence[int], n_prompts: int, seed: int,
                device="cpu") -> Iterator[tuple[int, Batch]]:
        base = task.sample([seed], 0, n_prompts, n_points=max(grid), device="cpu", stream="eval")
        x, y, w = base.x[0], base.y[0], base.extras["w"][0]
        draw = Draw(x, w, y - torch.einsum("btd,bd->bt", x, w))
        if shift.apply is not None:
            # the shift's own stream (step = a stable hash of its name): its draws never move the prompts'
            draw = shift.apply(task, draw, value, generator(seed, "shift", zlib.crc32(shift.name.encode())))
        for m in grid:
            yield m, cut(draw, m).to(device)

    def score(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Squared error at the query: pred (E, B, T) or (E, B, 1) → (E, B)."""
        return (pred[..., -1].double() - batch.y[..., -1].double()).pow(2)


def cut(draw: Draw, m: int) -> Batch:
    """The prompt of the first m context points and the query (or, with `pick`, the context
    point ⌊pick·m⌋ as the query), labels formed now: x (1, B, m+1, d), y (1, B, m+1)."""
    x = draw.x[:, :m]
    if draw.pick is None:
        query = draw.x[:, -1]
    else:
        idx = (draw.pick * m).long().clamp(max=m - 1)
        query = x[torch.arange(x.shape[0]), idx]
    x = torch.cat([x, query[:, None]], 1)
    noise = torch.cat([draw.noise[:, :m], draw.noise[:, -1:]], 1)
    y = torch.einsum("btd,bd->bt", x, draw.w) + noise
    return Batch(x[None], y[None], {"w": draw.w[None]})
