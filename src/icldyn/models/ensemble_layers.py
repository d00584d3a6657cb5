"""Layers whose parameters carry a leading seed axis E, applied to inputs of shape (E, N, ...).

Each seed's slice is its own layer: one batched matmul (`baddbmm`) runs all E seeds at once,
so an ensemble costs one kernel call per layer, not E.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from icldyn.models.base import seeded_normal


class EnsembleLinear(nn.Module):
    """y = x W + b per seed. weight (E, in, out) — stored input-major so `baddbmm` needs no
    transpose — and bias (E, out), zero at init."""

    def __init__(self, seeds: Sequence[int], n_in: int, n_out: int, std: float, salt: int,
                 dtype=torch.float32):
        super().__init__()
        self.weight = nn.Parameter(seeded_normal(seeds, (n_in, n_out), std, salt, dtype))
        self.bias = nn.Parameter(torch.zeros(len(seeds), n_out, dtype=dtype))

    def forward(self, x: torch.Tensor, norm: "EnsembleLayerNorm | None" = None) -> torch.Tensor:
        """x (E, N, in) → (E, N, out); with `norm`, the layer applied to norm(x).

        The norm's per-seed gain and shift fold into this layer's weight and bias,
        (n·g + s) W + b = n (g ⊙ W) + (s W + b), so they cost weight-sized work instead of
        two activation-sized elementwise passes forward and three backward.
        """
        if norm is None:
            return torch.baddbmm(self.bias[:, None], x, self.weight)
        weight = norm.weight[:, :, None] * self.weight                         # (E, in, out)
        bias = torch.baddbmm(self.bias[:, None], norm.bias[:, None], self.weight)  # (E, 1, out)
        return torch.baddbmm(bias, norm.normalize(x), weight)


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over the last axis with a per-seed gain and shift, each (E, width)."""

    def __init__(self, n_seeds: int, width: int, dtype=torch.float32, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n_seeds, width, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(n_seeds, width, dtype=dtype))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Zero mean, unit variance over the last axis, before the per-seed affine."""
        return F.layer_norm(x, x.shape[-1:], eps=self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (E, N, width) → (E, N, width). (A norm feeding an `EnsembleLinear` is cheaper
        passed to it as `norm=`.)"""
        # F.layer_norm's affine takes one (width,) vector; the per-seed affine is a fused addcmul.
        return torch.addcmul(self.bias[:, None], self.normalize(x), self.weight[:, None])
