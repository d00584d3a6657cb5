"""Linear self-attention (LSA) on the ZFB embedding, one or more layers, E seeds at once.

Embedding Z ∈ R^{(d+1)×(n+1)}: column i = (x_i; y_i), last column (x_q; 0). One layer:
Z ← Z + W^{PV} Z M (Zᵀ W^{KQ} Z) / n, with M = I (ZFB: the query column is a key/value too) or
M = diag(1..1, 0) (Ahn et al.'s mask). The prediction is the y-entry of the query column.

Built as LSA(config, task, seeds, dtype); d is the task's `d`. The effective matrix B = vU is
the method `effective_matrix()`. Hook points (K keys: n, or n+1 with the query a key too;
scores s = z_kᵀ W^KQ z_q, pattern = s/n, zero on a masked key):
  blocks.{i}.attn.hook_scores, blocks.{i}.attn.hook_pattern   (E, B, n+1, K) [query, key] in the
      layers before the last; (E, B, K) in the last (only the query column is read out), where the
      one-layer model gives (E, B, n+1) with the query's own entry 0 in the pattern when masked;
  hook_pred   (E, B, 1).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from icldyn.config import Strict
from icldyn.errors import UsageError
from icldyn.models.base import EnsembleModel, HookPoint, attention_hooks, seeded_normal, task_config


class LSAConfig(Strict):
    name: Literal["lsa"] = "lsa"
    n_layers: int = Field(default=1, gt=0)
    mask_query: bool = Field(default=False, description="Ahn mask: the query column is not a key/value")
    # zfb: W^PV = σ₀[[0,0],[0,1]], W^KQ = σ₀[[ΘΘᵀ,0],[0,0]] with ΘΘᵀ = I/√d (commutes with Λ);
    # zfb_random: the same with a random Θ (‖ΘΘᵀ‖_F = 1); gaussian: every entry N(0, σ₀²).
    init: Literal["zfb", "zfb_random", "gaussian"] = "zfb"
    init_scale: float = Field(default=0.1, gt=0, description="σ₀")


def embed(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """ZFB embedding. x (E, B, n+1, d), y (E, B, n+1) → Z (E, B, d+1, n+1) with the query's y zeroed."""
    y = torch.cat([y[..., :-1], torch.zeros_like(y[..., -1:])], dim=-1)
    return torch.cat([x, y[..., None]], dim=-1).transpose(-1, -2)


class LSA(EnsembleModel):
    prefix_outputs = False

    def __init__(self, config: LSAConfig, task, seeds, dtype=torch.float32):
        super().__init__(len(seeds))
        d = task_config(task).d
        self.config, self.d = config, d
        D, s0 = d + 1, config.init_scale
        pv, kq = [], []
        for layer in range(config.n_layers):
            if config.init == "gaussian":
                pv.append(seeded_normal(seeds, (D, D), s0, 2 * layer, dtype))
                kq.append(seeded_normal(seeds, (D, D), s0, 2 * layer + 1, dtype))
                continue
            w_pv = torch.zeros(len(seeds), D, D, dtype=dtype)
            w_pv[:, d, d] = s0
            if config.init == "zfb":
                theta = torch.eye(d, dtype=dtype).expand(len(seeds), d, d) / d**0.5
            else:
                th = seeded_normal(seeds, (d, d), 1.0, 2 * layer + 1, dtype)
                theta = th @ th.transpose(-1, -2)
                theta = theta / torch.linalg.matrix_norm(theta)[:, None, None]
            w_kq = torch.zeros(len(seeds), D, D, dtype=dtype)
            w_kq[:, :d, :d] = s0 * theta
            pv.append(w_pv)
            kq.append(w_kq)
        self.w_pv = nn.ParameterList([nn.Parameter(p) for p in pv])
        self.w_kq = nn.ParameterList([nn.Parameter(k) for k in kq])
        self.blocks = nn.ModuleList(attention_hooks("hook_scores", "hook_pattern") for _ in range(config.n_layers))
        self.hook_pred = HookPoint()
        self.setup_hooks()

    def forward(self, batch) -> torch.Tensor:
        """Prediction for the query of each prompt: (E, B, 1)."""
        if self.config.n_layers == 1:
            return self.hook_pred(self._one_layer(batch.x, batch.y))
        Z = embed(batch.x, batch.y)
        n = Z.shape[-1] - 1
        keys = Z[..., :n] if self.config.mask_query else Z
        last = self.config.n_layers - 1
        for layer, (w_pv, w_kq, hooks) in enumerate(zip(self.w_pv, self.w_kq, self.blocks)):
            w_pv, w_kq, hooks = w_pv[:, None], w_kq[:, None], hooks.attn  # (E, 1, D, D) broadcast over prompts
            if layer < last:
                scores = keys.transpose(-1, -2) @ (w_kq @ Z)                 # (E, B, n(+1), n+1) [key, query]
                if hooks.hook_scores.active:
                    scores = hooks.hook_scores(scores.transpose(-1, -2)).transpose(-1, -2)
                if hooks.hook_pattern.active:
                    pattern = hooks.hook_pattern((scores / n).transpose(-1, -2)).transpose(-1, -2)
                    Z = Z + w_pv @ (keys @ pattern)
                else:
                    Z = Z + w_pv @ (keys @ scores) / n
                keys = Z[..., :n] if self.config.mask_query else Z
            else:
                # only the query column is read out: z_q + W^PV K (Kᵀ W^KQ z_q) / n, as
                # matrix-vector products (never the (D, D) Gram of every prompt)
                z_q = Z[..., -1]                                               # (E, B, D)
                key_q = z_q @ w_kq[:, 0].transpose(-1, -2)                     # (E, B, D)
                scores = hooks.hook_scores(torch.einsum("ebdn,ebd->ebn", keys, key_q))  # (E, B, n(+1))
                if hooks.hook_pattern.active:
                    mixed = torch.einsum("ebdn,ebn->ebd", keys, hooks.hook_pattern(scores / n))
                else:
                    mixed = torch.einsum("ebdn,ebn->ebd", keys, scores) / n    # (E, B, D)
                pred = z_q[..., self.d] + (mixed * w_pv[:, 0, self.d][:, None, :]).sum(-1)
                pred = pred[..., None]                                         # (E, B, 1)
        return self.hook_pred(pred)

    def _one_layer(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The one-layer prediction straight from x (E', B, T, d), y (E', B, T), never building Z:

            ŷ = (1/n) Σ_k s_k v_k,   s_k = z_kᵀ W^KQ z_q,   v_k = W^PV_{d,:} z_k,

        with z_k = (x_k; y_k) and z_q = (x_q; 0) (the query's own label entry is 0, so it adds
        only its x-part when it is a key). Both s and v are row vectors times the prompt
        transposed, the layout that CPU bmm runs fastest for such thin products; the prompt is
        read twice forward and twice backward, with no concatenated copy. Returns (E, B, 1).
        """
        E, d, n = self.n_seeds, self.d, x.shape[-2] - 1
        B, T = x.shape[1], n + 1
        w_kq, pv = self.w_kq[0], self.w_pv[0][:, d]                          # (E, D, D), (E, D)
        if x.shape[0] == E:  # each seed its own prompts (training)
            key_q = torch.bmm(x[..., -1, :], w_kq[:, :, :d].transpose(1, 2))   # (E, B, D) = W^KQ z_q
            s = torch.bmm(key_q[..., :d].reshape(E * B, 1, d), x.reshape(E * B, T, d).transpose(1, 2))
            v = torch.bmm(pv[:, None, :d], x.reshape(E, B * T, d).transpose(1, 2))
        else:                # held-out prompts shared by every seed (E' = 1): no copy per seed
            key_q = torch.einsum("bj,eij->ebi", x[0, :, -1], w_kq[:, :, :d])
            s = torch.bmm(key_q[..., :d].transpose(0, 1), x[0].transpose(1, 2)).transpose(0, 1)
            v = pv[:, :d] @ x[0].reshape(B * T, d).T                         # (E, B·T)
        # the label entries, with the query's zeroed as in the embedding (no gradient flows into y)
        y0 = torch.cat([y[..., :n], torch.zeros_like(y[..., n:])], dim=-1)    # (E', B, T)
        hooks = self.blocks[0].attn
        s = hooks.hook_scores(s.reshape(E, B, T) + y0 * key_q[..., d:])
        v = v.reshape(E, B, T) + y0 * pv[:, None, d:]
        if hooks.hook_pattern.active:
            pattern = s / n
            if self.config.mask_query:
                pattern = torch.cat([pattern[..., :n], torch.zeros_like(pattern[..., n:])], dim=-1)
            return (hooks.hook_pattern(pattern) * v).sum(-1)[..., None]
        sv = s * v
        pred = (sv[..., :n] if self.config.mask_query else sv).sum(-1)
        return (pred / n)[..., None]

    # -- the ZFB reduced form ------------------------------------------------------------------
    def effective_matrix(self) -> torch.Tensor:
        """B = v·U (E, d, d) with v = W^PV[d, d] and U = W^KQ[:d, :d] of the (last) layer:
        on the ZFB block structure ŷ = hᵀ B x_q with h = (1/n) Σ y_i x_i."""
        d = self.d
        return self.w_pv[-1][:, d, d, None, None] * self.w_kq[-1][:, :d, :d]

    def off_block_norm(self) -> torch.Tensor:
        """Norm of every entry outside the ZFB blocks (v, U), per seed (E,): ≈ 0 from a ZFB init."""
        d = self.d
        mask = torch.ones(self.d + 1, self.d + 1, dtype=torch.bool)
        mask[d, d] = False
        total = 0
        for w_pv, w_kq in zip(self.w_pv, self.w_kq):
            kq_mask = torch.ones_like(mask)
            kq_mask[:d, :d] = False
            total = total + (w_pv * mask).pow(2).sum((-1, -2)) + (w_kq * kq_mask).pow(2).sum((-1, -2))
        return total.sqrt()

    def population_loss(self, task) -> torch.Tensor:
        """½·R(vU) per seed: exact on the ZFB block structure of a one-layer LSA."""
        if self.config.n_layers != 1 or self.config.init == "gaussian":
            raise UsageError("train.gradient=population needs model.n_layers=1 and a ZFB init "
                             "(model.init=zfb or zfb_random)")
        if self.config.mask_query:
            raise UsageError("train.gradient=population needs model.mask_query=false")
        return 0.5 * task.population_risk(self.effective_matrix())
