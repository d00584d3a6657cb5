"""The exact-dynamics paper's linear layer with per-mode factors, E seeds at once.

f(Z) = Z + W_P (Z Zᵀ/N) W_Q Z with tokens (x_i; y_i) ∈ ℝ²ᵈ and the query (x_q; 0); the value
block from y and the key-query block on x are the only ones kept (the others stay at zero in
expectation, spec Part A), written in Σ's eigenbasis U as p₂ = U diag(p) Uᵀ and q₁ = U diag(q) Uᵀ.
The query column's y-block is then

    ŷ = p₂ (Σ_{i≤N} y_i x_iᵀ / N) q₁ x_q        (the query's own y is 0, so it adds nothing),

computed batched from the prompt (never from the task's W). Parameters: `p` (E, d), `q` (E, d),
mode α in the task's eigenvalue order. Loss: ½·E‖ŷ − y_q‖² (summed over the d outputs, mean over
prompts), so that on the clock t = Σ lr mode α moves on τ_α = 1/(c_α s_α²) (theory/vector_modes.py).

Hook points: blocks.0.attn.hook_scores (E, B, N) = x_iᵀ q₁ x_q, the linear attention's scores on
the context; hook_pred (E, B, d).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from icldyn.config import Strict
from icldyn.errors import UsageError
from icldyn.models.base import EnsembleModel, HookPoint, attention_hooks


class ModeLSAConfig(Strict):
    name: Literal["mode-lsa"] = "mode-lsa"
    init_scale: float = Field(default=0.03, gt=0, description="σ₀: p_α q_α = σ₀² at init (a₀)")
    init_ratio: float = Field(default=1.0, gt=0, description="p_α = σ₀·r, q_α = σ₀/r (1: balanced)")


class ModeLSA(EnsembleModel):
    prefix_outputs = False

    def __init__(self, config: ModeLSAConfig, task, seeds, dtype=torch.float32):
        super().__init__(len(seeds))
        if not hasattr(task, "basis"):
            raise UsageError("model.name=mode-lsa needs task.name=vector-regression (a task with an eigenbasis)")
        d, E = task.config.d, len(seeds)
        self.config, self.d = config, d
        self.register_buffer("basis", task.basis.to(dtype))                       # U (d, d)
        r, s0 = config.init_ratio, config.init_scale
        self.p = nn.Parameter(torch.full((E, d), s0 * r, dtype=dtype))
        self.q = nn.Parameter(torch.full((E, d), s0 / r, dtype=dtype))
        self.blocks = nn.ModuleList([attention_hooks("hook_scores")])
        self.hook_pred = HookPoint()
        self.setup_hooks()

    def forward(self, batch) -> torch.Tensor:
        """ŷ for the query of each prompt: (E, B, d). x, y (E', B, N+1, d), E' = E or 1."""
        U = self.basis
        x, y = batch.x @ U, batch.y[..., :-1, :] @ U                  # eigen-coordinates
        n = x.shape[-2] - 1
        key_q = self.q[:, None, :] * x[..., -1, :]                     # q₁ x_q in U's basis (E, B, d)
        scores = self.blocks[0].attn.hook_scores(torch.einsum("ebnd,ebd->ebn", x[..., :n, :], key_q))
        mixed = torch.einsum("ebn,ebnd->ebd", scores, y) / n           # (Σ y_i x_iᵀ/N) q₁ x_q
        return self.hook_pred((self.p[:, None, :] * mixed) @ U.T)

    def loss(self, pred: torch.Tensor, batch) -> torch.Tensor:
        """½·mean over prompts of ‖ŷ − y_q‖² (E,)."""
        return 0.5 * (pred - batch.y[..., -1, :]).pow(2).sum(-1).mean(-1)

    def population_loss(self, task) -> torch.Tensor:
        """The exact expected loss (E,) over x ~ N(0, Σ) and the task pool (Wishart moments; the
        formula and its derivation are theory/vector_modes.py's LayerSystem, recoded here so that
        training never imports theory; tests check it against Monte-Carlo)."""
        s = task.eigenvalues.to(self.p.dtype)
        c = task.mode_moments.to(self.p.dtype)
        k = task.inverse_n
        p, q = self.p, self.q
        K = (q.pow(2) * s.pow(2)).sum(-1, keepdim=True)
        per_mode = c * (p.pow(2) * s * (s.pow(2) * q.pow(2) * (1 + k) + K * k) - 2 * p * q * s.pow(2) + s)
        return 0.5 * per_mode.sum(-1)
