"""What every in-context estimator shares: one call, every prefix at once.

An estimator maps a batch with x (..., T, d) and y (..., T) to predictions (..., T): the
prediction at position t uses the t examples (x_i, y_i), i < t, and the query x_t — the same
teacher-forcing convention as the causal models (`tasks/base.py`). With no examples (t = 0)
the prediction is 0. Leading axes (seeds E, prompts B, ...) are flattened to one prompt axis P
and restored, so subclasses implement `predict(x (P, T, d), y (P, T)) -> (P, T)`.
Work happens in the batch's dtype and on its device.
"""

from __future__ import annotations

import torch

from icldyn.errors import UsageError


class Estimator:
    """Base class. Subclasses implement `predict`; registry factories set `name`."""

    name: str = "estimator"
    # prompts per chunk = chunk_elements // (T (T + d)): bounds the (P, T, T) and (P, T, d)
    # temporaries (≈ 128 MB each in float64) when scoring 10⁵ held-out prompts
    chunk_elements: int = 2**24

    def __init__(self, task, **params):
        if params:
            raise UsageError(f"estimator {self.name!r} takes no parameters; got {', '.join(sorted(params))}")
        self.task = task

    def __call__(self, batch) -> torch.Tensor:
        """Predictions (..., T) for `batch.x` (..., T, d), `batch.y` (..., T)."""
        x, y = batch.x, batch.y
        if x.dim() < 2 or x.shape[:-1] != y.shape:
            raise UsageError(f"estimator {self.name!r} needs x (..., T, d) and y (..., T); "
                             f"got x {tuple(x.shape)} and y {tuple(y.shape)}")
        T, d = x.shape[-2:]
        x, flat_y = x.reshape(-1, T, d), y.reshape(-1, T).to(x.dtype)
        step = max(1, self.chunk_elements // (T * (T + d)))
        pred = torch.cat([self.predict(x[i:i + step], flat_y[i:i + step]) for i in range(0, x.shape[0], step)])
        return pred.reshape(y.shape)

    def predict(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x (P, T, d), y (P, T) → predictions (P, T)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<estimator {self.name}>"


def exclusive_cumsum(v: torch.Tensor, dim: int) -> torch.Tensor:
    """out[t] = Σ_{i<t} v[i] along `dim` (a zero first slice, not cumsum − v, to avoid cancellation)."""
    c = torch.cumsum(v, dim)
    zero = torch.zeros_like(c.narrow(dim, 0, 1))
    return torch.cat([zero, c.narrow(dim, 0, c.shape[dim] - 1)], dim)


def prefix_counts(T: int, like: torch.Tensor) -> torch.Tensor:
    """t = 0..T−1, the number of examples before each position, in `like`'s dtype/device. (T,)"""
    return torch.arange(T, dtype=like.dtype, device=like.device)


def prefix_mean_moment(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """h_t = (1/t) Σ_{i<t} y_i x_i for every prefix (0 at t = 0).  x (P, T, d), y (P, T) → (P, T, d)."""
    t = prefix_counts(x.shape[-2], x).clamp(min=1)
    return exclusive_cumsum(y[..., None] * x, dim=-2) / t[:, None]


def strictly_before(T: int, like: torch.Tensor) -> torch.Tensor:
    """mask[t, i] = 1 when example i precedes position t (i < t). (T, T) in `like`'s dtype."""
    return torch.ones(T, T, dtype=like.dtype, device=like.device).tril(-1)
