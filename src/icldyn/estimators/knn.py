"""k nearest neighbours in context: the mean label of the k previous inputs closest to the query."""

from __future__ import annotations

import torch

from icldyn.errors import UsageError
from icldyn.estimators.base import Estimator


class KNN(Estimator):
    """ŷ_t = mean of y_i over the k examples i < t nearest (Euclidean) to x_t; fewer when t < k; 0 at t = 0."""

    name = "knn"

    def __init__(self, task, k: int = 3):
        super().__init__(task)
        if not (isinstance(k, int) and k >= 1):
            raise UsageError(f"knn k must be an integer ≥ 1; got {k!r}")
        self.k = k

    def predict(self, x, y):
        P, T, _ = x.shape
        dist = torch.cdist(x, x)  # (P, T, T): row t = query, column i = example
        later = torch.ones(T, T, dtype=torch.bool, device=x.device).triu()  # i ≥ t: not yet seen
        dist = dist.masked_fill(later, float("inf"))
        k = min(self.k, T)
        nearest, idx = dist.topk(k, dim=-1, largest=False)  # (P, T, k)
        seen = torch.isfinite(nearest).to(y.dtype)  # fewer than k examples before t
        labels = torch.gather(y[:, None, :].expand(P, T, T), -1, idx)
        return (labels * seen).sum(-1) / seen.sum(-1).clamp(min=1)
