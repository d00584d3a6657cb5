"""One softmax attention head reading the query's label (Huang, Cheng & Liang 2023), E seeds at once.

train="q" (the paper's model): ŷ = Σ_{i≤N} attn_i y_i, attn_i = softmax_i(x_iᵀ Q x_q), i.e. the
ZFB embedding with W^{PV} = [[0,0],[0,1]] fixed and W^{KQ} = [[Q,0],[0,0]]; only Q (E, d, d)
is trained, from Q(0) = 0 (uniform attention).
train="full" (for comparison): W^{KQ}, W^{PV} ∈ R^{(d+1)×(d+1)} both trained on the ZFB tokens
z_i = (x_i; y_i), z_q = (x_q; 0): ŷ = Σ_i attn_i (W^{PV} z_i)_d, attn_i = softmax_i(z_iᵀ W^{KQ} z_q),
from W^{KQ} = 0, W^{PV} = [[0,0],[0,1]].
`query_in_softmax`: the query token z_q = (x_q; 0) is one more key (score x_qᵀ Q x_q), whose
value is 0 in the "q" model (its label is unknown).
Several query tokens (for tasks with `n_queries` m > 1, e.g. softmax regression; train="full"):
the batch ends with m query points z_q = (a_q; 0); each attends over the context tokens only and
gets the scalar z_q = Σ_i attn_i (W^{PV} z_i)_d; `readout="softmax"` predicts softmax over the m
queries of these logits (one distribution per prompt), "value" the logits themselves. The loss
is taken on the m query positions; the query labels are never read.
Built as SoftmaxAttention(config, task, seeds, dtype); d (and m, default 1) are the task's.
Hook points: `blocks.0.attn.hook_scores` (E, B, N), the logits of the N context tokens;
`blocks.0.attn.hook_pattern` (E, B, N), the attention on them (with `query_in_softmax` the
query's own share stays out of it); `hook_pred` (E, B, 1). With m > 1 queries: (E, B, m, N),
(E, B, m, N) and (E, B, m).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from icldyn.config import Strict
from icldyn.errors import UsageError
from icldyn.models.base import EnsembleModel, HookPoint, attention_hooks, task_config


class SoftmaxAttentionConfig(Strict):
    name: Literal["softmax-attention"] = "softmax-attention"
    train: Literal["q", "full"] = Field(default="q", description="q: only Q; full: W^KQ and W^PV")
    query_in_softmax: bool = Field(default=False, description="the query token is also a key")
    label_value_init: float = Field(default=1.0, description="W^PV[d, d] at init (train='full'): the label's value weight")
    readout: Literal["value", "softmax"] = Field(
        default="value", description="value: the attention output; softmax: softmax over the m queries of it")
    # added for softmax-regression: at their defaults they stay out of the config hash (feature-convergence's
    # run names are unchanged)
    unhashed_at_default: ClassVar[tuple[str, ...]] = ("label_value_init", "readout")


class SoftmaxAttention(EnsembleModel):
    prefix_outputs = False

    def __init__(self, config: SoftmaxAttentionConfig, task, seeds, dtype=torch.float32):
        super().__init__(len(seeds))
        d = task_config(task).d
        self.config, self.d = config, d
        self.n_queries = getattr(task_config(task), "n_queries", 1)
        if (self.n_queries > 1 or config.readout != "value") and config.train != "full":
            raise UsageError(f"model.train: {self.n_queries} query word(s) with readout={config.readout!r} need "
                             f"train='full' (got {config.train!r}); allowed: full")
        E, D = len(seeds), d + 1
        if config.train == "q":
            self.q = nn.Parameter(torch.zeros(E, d, d, dtype=dtype))
        else:
            self.w_kq = nn.Parameter(torch.zeros(E, D, D, dtype=dtype))
            w_pv = torch.zeros(E, D, D, dtype=dtype)
            w_pv[:, d, d] = config.label_value_init
            self.w_pv = nn.Parameter(w_pv)
        self.blocks = nn.ModuleList([attention_hooks("hook_scores", "hook_pattern")])
        self.hook_pred = HookPoint()
        self.setup_hooks()

    def forward(self, batch) -> torch.Tensor:
        """Prediction for the query of each prompt: (E, B, 1); (E, B, m) with m query tokens."""
        if self.n_queries > 1 or self.config.readout != "value":
            return self._forward_queries(batch)
        x, y = batch.x, batch.y
        x_ctx, y_ctx, x_q = x[..., :-1, :], y[..., :-1], x[..., -1, :]     # (E', B, N, d), (E', B, N), (E', B, d)
        if self.config.train == "q":
            query = (self.q[:, None] @ x_q[..., None]).squeeze(-1)          # Q x_q (E, B, d)
            logits = (x_ctx @ query[..., None]).squeeze(-1)                # (E, B, N)
            values = y_ctx
            q_logit = (x_q * query).sum(-1, keepdim=True)                  # x_qᵀ Q x_q (E, B, 1)
            q_value = torch.zeros_like(q_logit)
        else:
            d = self.d
            z_ctx = torch.cat([x_ctx, y_ctx[..., None]], dim=-1)           # (E', B, N, d+1)
            # the query's label entry is 0, so only the first d columns of W^KQ act on it
            query = (self.w_kq[:, None, :, :d] @ x_q[..., None]).squeeze(-1)  # (E, B, d+1)
            logits = (z_ctx @ query[..., None]).squeeze(-1)                # (E, B, N)
            readout = self.w_pv[:, d]                                      # label row of W^PV (E, d+1)
            values = (z_ctx @ readout[:, None, :, None]).squeeze(-1)       # (E, B, N)
            q_logit = (x_q * query[..., :d]).sum(-1, keepdim=True)
            q_value = (x_q * readout[:, None, :d]).sum(-1, keepdim=True)
        hooks = self.blocks[0].attn
        logits = hooks.hook_scores(logits)
        if self.config.query_in_softmax:
            attn = torch.softmax(torch.cat([logits, q_logit], dim=-1), dim=-1)
            pred = (hooks.hook_pattern(attn[..., :-1]) * values).sum(-1, keepdim=True) + attn[..., -1:] * q_value
        else:
            attn = hooks.hook_pattern(torch.softmax(logits, dim=-1))
            pred = (attn * values).sum(-1, keepdim=True)
        return self.hook_pred(pred)

    def _forward_queries(self, batch) -> torch.Tensor:
        """m query tokens z_q = (a_q; 0) at the end of each prompt, train="full": (E, B, m)."""
        m, d = self.n_queries, self.d
        x, y = batch.x, batch.y
        z_ctx = torch.cat([x[..., :-m, :], y[..., :-m, None]], dim=-1)         # (E', B, N, d+1)
        x_q = x[..., -m:, :]                                                   # (E', B, m, d)
        query = x_q @ self.w_kq[:, None, :, :d].transpose(-1, -2)              # W^KQ z_q (E, B, m, d+1)
        logits = query @ z_ctx.transpose(-1, -2)                               # (E, B, m, N)
        readout = self.w_pv[:, d]                                              # (E, d+1)
        values = (z_ctx @ readout[:, None, :, None]).squeeze(-1)               # (E, B, N)
        hooks = self.blocks[0].attn
        logits = hooks.hook_scores(logits)
        if self.config.query_in_softmax:
            q_logit = (x_q * query[..., :d]).sum(-1, keepdim=True)             # (E, B, m, 1)
            q_value = (x_q * readout[:, None, None, :d]).sum(-1)               # (E, B, m)
            attn = torch.softmax(torch.cat([logits, q_logit], dim=-1), dim=-1)
            out = (hooks.hook_pattern(attn[..., :-1]) @ values[..., None]).squeeze(-1) + attn[..., -1] * q_value
        else:
            attn = hooks.hook_pattern(torch.softmax(logits, dim=-1))
            out = (attn @ values[..., None]).squeeze(-1)                       # (E, B, m)
        if self.config.readout == "softmax":
            out = torch.softmax(out, dim=-1)
        return self.hook_pred(out)

    def loss(self, pred: torch.Tensor, batch) -> torch.Tensor:
        """½·mean squared error over the m query positions (E,)."""
        if self.n_queries == 1:
            return super().loss(pred, batch)
        return 0.5 * (pred - batch.y[..., -self.n_queries:]).pow(2).flatten(1).mean(1)

    # -- quantities of interest ----------------------------------------------------------------
    def key_query_matrix(self) -> torch.Tensor:
        """Q (E, d, d): the block of W^{KQ} that scores an input against the query input."""
        return self.q if self.config.train == "q" else self.w_kq[:, : self.d, : self.d]

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """s (E, K, K), s[e, k, n] = v_nᵀ Q v_k: the score of a feature-n token for a query of
        feature k. `features` V (K, d), rows orthonormal."""
        V = features.to(self.key_query_matrix())
        return torch.einsum("nd,edf,kf->ekn", V, self.key_query_matrix(), V)

    def attention(self, batch) -> torch.Tensor:
        """Attention on the context tokens (E, B, N), without tracking gradients."""
        with torch.no_grad():
            _, cache = self.run_with_cache(batch, "blocks.0.attn.hook_pattern")
        return cache["blocks.0.attn.hook_pattern"]

    def feature_attention(self, batch, K: int) -> torch.Tensor:
        """Attention mass on the tokens of each feature (E, B, K), from batch.extras['feature']."""
        attn = self.attention(batch)
        feature = batch.extras["feature"][..., :-1].expand_as(attn)
        mass = torch.zeros(*attn.shape[:2], K, dtype=attn.dtype, device=attn.device)
        return mass.scatter_add_(-1, feature, attn)

    def same_feature_attention(self, batch) -> torch.Tensor:
        """a (E, B): attention mass on the context tokens of the query's own feature."""
        attn = self.attention(batch)
        feature = batch.extras["feature"]
        same = feature[..., :-1] == feature[..., -1:]                     # (E', B, N)
        return (attn * same).sum(-1)
