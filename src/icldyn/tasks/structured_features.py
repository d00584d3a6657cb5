"""In-context regression on K orthonormal features (Huang, Cheng & Liang 2023).

Features v_0..v_{K−1} ∈ R^d are the first K columns of a fixed random rotation (or of the
identity, `rotate=false`). Every prompt token and the query is x = v_k with probability p_k,
iid: balanced p_k = 1/K, or imbalanced with feature 0 dominant, p_0 = `p_dominant` and
p_k = (1 − p_0)/(K − 1) otherwise. w ~ N(0, I_d), y = ⟨w, x⟩, no label noise.

Batch: x (E, B, N+1, d), y (E, B, N+1), the last point the query (see `tasks/base.py`);
extras `feature` (E, B, N+1) long (the index k of every token, query last) and `w` (E, B, d).
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from pydantic import Field, model_validator

from icldyn.config import Strict
from icldyn.seeding import generator
from icldyn.tasks.base import Batch, Task


class StructuredFeaturesConfig(Strict):
    name: Literal["structured-features"] = "structured-features"
    d: int = Field(default=5, gt=0)
    K: int = Field(default=5, gt=0, description="number of orthonormal features (K ≤ d)")
    n_points: int = Field(default=100, ge=1, description="N: in-context examples in a prompt")
    balance: Literal["balanced", "imbalanced"] = "imbalanced"
    p_dominant: float = Field(default=0.6, gt=0, lt=1, description="p_0 in the imbalanced case")
    rotate: bool = Field(default=True, description="features = columns of a random rotation (else e_0..e_{K−1})")
    rotation_seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _check_sizes(self):
        if self.K > self.d:
            raise ValueError(f"task.K is {self.K} but must be at most task.d = {self.d} (orthonormal features)")
        if self.balance == "imbalanced" and self.K < 2:
            raise ValueError("task.balance=imbalanced needs task.K ≥ 2 (a dominant feature and the rest)")
        return self

    def probabilities(self) -> list[float]:
        """p (length K): how often each feature is drawn."""
        if self.balance == "balanced":
            return [1.0 / self.K] * self.K
        rest = (1.0 - self.p_dominant) / (self.K - 1)
        return [self.p_dominant] + [rest] * (self.K - 1)


class StructuredFeaturesTask(Task):
    name = "structured-features"
    estimators = ("zero", "averaging", "ols", "ridge")

    def __init__(self, config: StructuredFeaturesConfig, dtype: torch.dtype = torch.float32):
        super().__init__(config, dtype)
        c = config
        if c.rotate:
            g = generator(c.rotation_seed, "task", 0)
            q, r = torch.linalg.qr(torch.randn(c.d, c.d, generator=g, dtype=torch.float64))
            rotation = q * torch.sign(torch.diagonal(r))  # Haar: fix the QR sign ambiguity
        else:
            rotation = torch.eye(c.d, dtype=torch.float64)
        self.features = rotation[:, : c.K].T.contiguous()        # V (K, d) float64, rows v_k
        self.p = torch.tensor(c.probabilities(), dtype=torch.float64)  # (K,)
        self._cdf = torch.cumsum(self.p, 0)

    # -- sampling -----------------------------------------------------------------------------
    def _one(self, seed: int, step: int, batch_size: int, T: int, stream: str, device) -> tuple:
        c, dt = self.config, self.dtype
        if stream in ("eval", "fixed"):
            # one set of prompts per seed, the same at every step
            gx, gw = (generator(seed, stream, k, device) for k in range(2))
        else:
            gx, gw = (generator(seed, s, step, device) for s in ("data", "task"))
        uniform = torch.rand(batch_size, T, generator=gx, device=device, dtype=torch.float64)
        # inverse-CDF draw: the number of cdf entries ≤ u among the first K − 1 (searchsorted(right=True)
        # clamped to K − 1, which guards against the last entry rounding below 1), as K − 1 compares,
        # which beat a binary search at these K (2× at K = 5)
        feature = (uniform.unsqueeze(-1) >= self._cdf[:-1].to(device)).sum(-1)
        x = torch.nn.functional.embedding(feature, self.features.to(device, dt))  # (B, T, d), rows v_k
        w = torch.randn(batch_size, c.d, generator=gw, device=device, dtype=dt)
        y = torch.einsum("btd,bd->bt", x, w)
        return x, y, w, feature

    def sample(self, seeds: Sequence[int], step: int, batch_size: int, *, n_points: int | None = None,
               device="cpu", stream: str = "train") -> Batch:
        """x (E, B, N+1, d), y (E, B, N+1); extras `feature` (E, B, N+1) long, `w` (E, B, d).

        stream "train": fresh prompts per step; "fixed" (a fixed training set) and "eval": the
        same prompts at every step.
        """
        T = (n_points or self.config.n_points) + 1
        parts = [self._one(s, step, batch_size, T, stream, device) for s in seeds]
        x, y, w, feature = (torch.stack(p) for p in zip(*parts))
        return Batch(x, y, {"feature": feature, "w": w})

    # -- what the theory needs to know about the task ------------------------------------------
    def error_floor(self, k: int | None = None, n_points: int | None = None):
        """½(1 − p_k)^N: the loss of queries of feature k on prompts with no token of feature k
        (nothing in the prompt carries ⟨w, v_k⟩, and E⟨w, v_k⟩² = 1). It is the Bayes risk of a
        feature-k query (min-norm least squares attains it: exact when v_k was seen, 0 otherwise),
        so a lower bound on ℓ_k for every predictor; softmax attention sits above it, since on
        such prompts its weights (summing to 1) also add the other features' variance.
        A float for one k, a (K,) float64 tensor when k is None."""
        n = n_points or self.config.n_points
        floor = 0.5 * (1 - self.p) ** n
        return floor if k is None else float(floor[k])


def mean_by_query_feature(values: torch.Tensor, feature: torch.Tensor, K: int) -> torch.Tensor:
    """Average of per-prompt `values` (E, B) over the prompts whose query has feature k → (E, K).

    `feature` (E', B, T) from the batch extras (E' = E or 1); NaN where no query has feature k.
    """
    query = feature[..., -1].expand(values.shape[0], -1)                  # (E, B)
    sums = torch.zeros(values.shape[0], K, dtype=values.dtype, device=values.device)
    counts = torch.zeros_like(sums)
    sums.scatter_add_(1, query, values)
    counts.scatter_add_(1, query, torch.ones_like(values))
    return sums / counts  # 0/0 = NaN marks an absent feature

