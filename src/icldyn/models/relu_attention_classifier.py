"""One softmax-attention layer and a ReLU MLP for in-context binary classification (Li et al. 2024).

F(Ψ; P) = aᵀ ReLU(W_O Σ_{s≤l} W_V p_s · softmax_s((W_K p_s)ᵀ W_Q p_query)), prediction sign(F),
with p_s = (x_s; y_s·q), q = 1 ∈ R¹, and the query column p_query = (x_query; 0). W_Q, W_K, W_V
(E, D, D), D = d + 1, start at `init_scale`·I; W_O (E, m, D) Gaussian with std `wo_std`; a
(E, m) = ±1/m (the first half +, the rest −), fixed unless `train_a`. Training loss: the hinge
max(0, 1 − z·F), z the query's ±1 label, averaged over prompts.

Built as ReluAttentionClassifier(config, task, seeds, dtype); d is the task's `d`.
Hook points: `blocks.0.attn.hook_scores` (E, B, l) the logits of the context columns,
`blocks.0.attn.hook_pattern` (E, B, l) the attention on them, `hook_hidden` (E, B, m) the
ReLU layer's activations, `hook_pred` (E, B, 1) F.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from icldyn.config import Strict
from icldyn.models.base import EnsembleModel, HookPoint, attention_hooks, seeded_normal, task_config


class ReluAttentionClassifierConfig(Strict):
    name: Literal["relu-attention-classifier"] = "relu-attention-classifier"
    width: int = Field(default=64, gt=1, description="m: ReLU neurons (rows of W_O)")
    init_scale: float = Field(default=0.3, ge=0, description="W_Q, W_K, W_V start at init_scale·I")
    wo_std: float = Field(default=0.02, gt=0, description="std of W_O's Gaussian init")
    train_a: bool = Field(default=False, description="train the read-out a too (the theory fixes it)")


def embed(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Columns p_s = (x_s; y_s) for the context and (x_query; 0) for the query: (E', B, T, d+1)."""
    labels = torch.cat([y[..., :-1], torch.zeros_like(y[..., -1:])], -1)
    return torch.cat([x, labels[..., None]], -1)


class ReluAttentionClassifier(EnsembleModel):
    prefix_outputs = False

    def __init__(self, config: ReluAttentionClassifierConfig, task, seeds, dtype=torch.float32):
        super().__init__(len(seeds))
        d = task_config(task).d
        self.config, self.d = config, d
        E, D, m = len(seeds), d + 1, config.width
        eye = torch.eye(D, dtype=dtype).expand(E, D, D)
        self.w_q = nn.Parameter(config.init_scale * eye.clone())
        self.w_k = nn.Parameter(config.init_scale * eye.clone())
        self.w_v = nn.Parameter(config.init_scale * eye.clone())
        self.w_o = nn.Parameter(seeded_normal(seeds, (m, D), config.wo_std, 11, dtype))
        a = torch.cat([torch.ones(m - m // 2), -torch.ones(m // 2)]).to(dtype) / m
        a = a.expand(E, m).clone()
        if config.train_a:
            self.a = nn.Parameter(a)
        else:
            self.register_buffer("a", a)
        self.blocks = nn.ModuleList([attention_hooks("hook_scores", "hook_pattern")])
        self.hook_hidden, self.hook_pred = HookPoint(), HookPoint()
        self.setup_hooks()

    def forward(self, batch) -> torch.Tensor:
        """F for every prompt's query: (E, B, 1)."""
        p = embed(batch.x, batch.y)                                        # (E', B, T, D)
        ctx, query = p[:, :, :-1], p[:, :, -1]
        keys = torch.einsum("ebsi,eji->ebsj", ctx, self.w_k)               # (E, B, l, D)
        q = torch.einsum("ebi,eji->ebj", query, self.w_q)                  # (E, B, D)
        attn = self.blocks[0].attn
        scores = attn.hook_scores(torch.einsum("ebsj,ebj->ebs", keys, q))
        pattern = attn.hook_pattern(torch.softmax(scores, -1))           # (E, B, l)
        mixed = torch.einsum("ebs,ebsi->ebi", pattern, ctx.expand(self.n_seeds, *ctx.shape[1:]))
        value = torch.einsum("ebi,eji->ebj", mixed, self.w_v)              # W_V Σ_s attn_s p_s
        hidden = self.hook_hidden(torch.relu(torch.einsum("ebj,emj->ebm", value, self.w_o)))
        return self.hook_pred(torch.einsum("ebm,em->eb", hidden, self.a)[..., None])

    def loss(self, pred: torch.Tensor, batch) -> torch.Tensor:
        """Per-seed hinge loss (E,): mean over prompts of max(0, 1 − z·F)."""
        return torch.relu(1 - batch.y[..., -1:] * pred).flatten(1).mean(1)

    def row_products(self) -> torch.Tensor:
        """W_O·W_V: (E, m, D), each row's feature part [..., :d] and label part [..., d]."""
        return torch.einsum("emj,eji->emi", self.w_o, self.w_v)
