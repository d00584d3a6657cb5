"""GPT-style decoder for in-context regression (Garg et al. 2022, nanoGPT layout), E seeds at once.

Tokens interleave the prompt: x_1, y_1, x_2, y_2, …, x_T, where a y-token is (y, 0, …, 0) ∈ R^d
(Garg's padding). The last y-token is dropped: no prediction can see it, so S = 2T − 1 tokens.
Read-in linear d → width (+ a learned positional embedding), L pre-LN blocks (attention, then
a GELU MLP), a final LayerNorm, read-out width → 1 at the x-tokens: output t predicts y_t from
the t points before it and x_t, every prefix in one causal pass.

Attention kinds, all on scores QKᵀ/√dh over the keys s ≤ t (causal):
  softmax  softmax over the visible keys (SDPA kernel; explicit only when caching patterns);
  linear   scores as they are, averaged over the t+1 visible keys: (QKᵀ/√dh ⊙ M) V / (t+1);
  relu     ReLU(scores), averaged the same way.
The 1/(t+1) average is the LSA's 1/n: it keeps the update O(1) as prompts grow.

All activations run as (E, B·S, width) so every projection is one `baddbmm` over the seed
axis; attention folds the seeds into the batch axis, (E·B, heads, S, dh).

Built as GPT(config, task, seeds, dtype): d is the task's `d`, and the positional table holds
max(n_points, test_points) + 1 points of the task's config.

Hook points (S = 2T − 1 tokens; activations as (E, B, S, ...), every token kept while any hook
is attached — without hooks the last block works on the x-tokens only, and softmax attention
runs the fused SDPA kernel, which is why a hook on the scores or pattern switches to the
explicit form):
  hook_embed                           (E, B, S, width) read-in + positions
  blocks.{i}.attn.hook_scores          (E, B, H, S, S) QKᵀ/√dh [query, key], before the causal mask
  blocks.{i}.attn.hook_pattern         (E, B, H, S, S) the weights on the values (zero above the diagonal)
  blocks.{i}.attn.hook_out             (E, B, S, width) the attention's output (after the out-projection)
  blocks.{i}.hook_resid_mid            (E, B, S, width) after attention
  blocks.{i}.hook_resid_post           (E, B, S, width) after the MLP
  hook_pred                            (E, B, T)

Token switch (`tokens=True`, for token tasks: modular arithmetic, n-gram sequences): batch.x holds
token ids (E', B, S) of the task's vocabulary V (its config's `vocab_size`, else `n_states`),
embedded by a learned table `embed` (E, V, width) plus positions (the task's `seq_len`, else
`n_points`), every block sees every token, and the read-out gives logits over V — at the last
position only (`readout="last"`: (E, B, V) against batch.y (E', B)) or at every position
(`readout="all"`: (E, B, S, V) against batch.y (E', B, S)) — trained by cross-entropy. With
`mlp=False, layernorm=False` it is an attention-only transformer; `activation="relu"` is the
grokking setting (Nanda et al. 2023). `spectral_matrices()` gives every block's W_Q, W_K, W_V
(width × width) and per-head QK = W_Q,h W_K,hᵀ and OV = W_V,h W_O,h (width × width, rank ≤ dh)
for the spectral probes.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field, model_serializer, model_validator
from torch import nn

from icldyn.config import Strict
from icldyn.errors import UsageError
from icldyn.models.base import EnsembleModel, HookPoint, seeded_normal, task_config
from icldyn.models.ensemble_layers import EnsembleLayerNorm, EnsembleLinear

SIZES = {"tiny": (3, 2, 64), "small": (6, 4, 128), "standard": (12, 8, 256)}  # layers, heads, width
_SIZED = ("n_layers", "n_heads", "width")


class GPTConfig(Strict):
    # options added after runs were stored enter the config hash only when they leave their default
    unhashed_at_default: ClassVar[tuple[str, ...]] = ("activation", "tokens", "readout")

    name: Literal["gpt"] = "gpt"
    size: Optional[Literal["tiny", "small", "standard"]] = Field(
        default=None, description="shortcut fixing n_layers/n_heads/width: tiny 3/2/64, small 6/4/128, "
                                   "standard 12/8/256")
    n_layers: int = Field(default=3, gt=0)
    n_heads: int = Field(default=2, gt=0)
    width: int = Field(default=64, gt=0)
    mlp_ratio: int = Field(default=4, gt=0, description="MLP hidden width = mlp_ratio · width")
    attention: Literal["softmax", "linear", "relu"] = "softmax"
    mlp: bool = True
    layernorm: bool = True
    positional: bool = Field(default=True, description="learned positional embedding")
    init_std: float = Field(default=0.02, gt=0)
    activation: Literal["gelu", "relu"] = Field(default="gelu", description="the MLP's non-linearity")
    tokens: bool = Field(default=False, description="token ids in, logits over the task's vocabulary out")
    readout: Literal["all", "last"] = Field(default="all", description="with tokens: logits at every "
                                                                       "position, or at the last only")

    @model_validator(mode="before")
    @classmethod
    def _apply_size(cls, data):
        if not isinstance(data, dict) or data.get("size") is None:
            return data
        if data["size"] not in SIZES:
            return data  # the Literal check reports it, naming the allowed sizes
        data = dict(data)
        for key, value in zip(_SIZED, SIZES[data["size"]]):
            given = data.get(key)
            if given is not None and given != value:
                raise ValueError(
                    f"{key}={given!r} disagrees with size={data['size']!r} ({key}={value}); "
                    f"drop {key} or set size to null")
            data[key] = value
        return data

    @model_validator(mode="after")
    def _heads_divide_width(self):
        if self.width % self.n_heads:
            raise ValueError(f"width={self.width} must be divisible by n_heads={self.n_heads}")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        # With a size set, the sized fields follow from it: leaving them out keeps
        # `--set model.size=...` on a dumped config from clashing with the old size's values.
        data = handler(self)
        if self.size is not None:
            for key in _SIZED:
                data.pop(key, None)
        return data


def x_tokens(h: torch.Tensor, n_prompts: int) -> torch.Tensor:
    """The x-token rows (even positions) of a flat activation: (E, B·S, w) → (E, B·T, w)."""
    E, N, w = h.shape
    return h.view(E, n_prompts, N // n_prompts, w)[:, :, 0::2].reshape(E, -1, w)


def keep_rows(h: torch.Tensor, n_prompts: int, x_only) -> torch.Tensor:
    """The rows a block keeps: the x-tokens when `x_only` is True, the positions `x_only` picks
    when it is a slice (token mode: the last one), all of them otherwise. (E, B·S, w) → (E, B·S', w)."""
    if isinstance(x_only, slice):
        E, N, w = h.shape
        return h.view(E, n_prompts, N // n_prompts, w)[:, :, x_only].reshape(E, -1, w)
    return x_tokens(h, n_prompts) if x_only else h


def hook_flat(hook: HookPoint, h: torch.Tensor, n_prompts: int) -> torch.Tensor:
    """A hook point on a flat activation (E, B·S, ...): the hook sees (and may replace) it as
    (E, B, S, ...). Idle, it returns `h` untouched, so training pays nothing for it."""
    if not hook.active:
        return h
    return hook(h.view(h.shape[0], n_prompts, -1, *h.shape[2:])).reshape(h.shape)


class Attention(nn.Module):
    def __init__(self, config: GPTConfig, seeds, salt: int, dtype):
        super().__init__()
        w, L, std = config.width, config.n_layers, config.init_std
        self.kind, self.n_heads = config.attention, config.n_heads
        self.qkv = EnsembleLinear(seeds, w, 3 * w, std, salt, dtype)                  # fused Q, K, V
        self.out = EnsembleLinear(seeds, w, w, std / math.sqrt(2 * L), salt + 1, dtype)  # GPT-2 residual scaling
        self.hook_scores, self.hook_pattern, self.hook_out = HookPoint(), HookPoint(), HookPoint()

    def forward(self, h: torch.Tensor, norm, n_prompts: int, x_only: bool = False) -> torch.Tensor:
        """Attention on norm(h): h (E, B·S, width) → (E, B·S, width), or (E, B·T, width) at the
        x-tokens only when `x_only`."""
        E, N, w = h.shape
        B, S, H = n_prompts, N // n_prompts, self.n_heads
        # (E, B·S, 3w) → 3 × (E·B, H, S, dh): seeds fold into SDPA's batch axis.
        q, k, v = self.qkv(h, norm).view(E * B, S, 3, H, w // H).permute(2, 0, 3, 1, 4).unbind(0)
        if self.kind == "softmax" and not (self.hook_scores.active or self.hook_pattern.active):
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            scores = q @ k.transpose(-1, -2) / math.sqrt(w // H)                      # (E·B, H, S, S)
            if self.hook_scores.active:
                scores = self.hook_scores(scores.view(E, B, H, S, S)).reshape(E * B, H, S, S)
            causal = torch.ones(S, S, dtype=torch.bool, device=h.device).tril()
            if self.kind == "softmax":
                pattern = scores.masked_fill(~causal, float("-inf")).softmax(-1)
            else:
                if self.kind == "relu":
                    scores = scores.relu()
                n_visible = torch.arange(1, S + 1, dtype=h.dtype, device=h.device)[:, None]
                pattern = scores.masked_fill(~causal, 0.0) / n_visible
            if self.hook_pattern.active:
                pattern = self.hook_pattern(pattern.view(E, B, H, S, S)).reshape(E * B, H, S, S)
            z = pattern @ v
        z = z.transpose(1, 2)                                                 # (E·B, S, H, dh)
        z = z[:, x_only] if isinstance(x_only, slice) else (z[:, 0::2] if x_only else z)
        return self.out(z.reshape(E, -1, w))                                  # heads back to width


class MLP(nn.Module):
    def __init__(self, config: GPTConfig, seeds, salt: int, dtype):
        super().__init__()
        w, hidden, std = config.width, config.mlp_ratio * config.width, config.init_std
        self.fc = EnsembleLinear(seeds, w, hidden, std, salt, dtype)
        self.proj = EnsembleLinear(seeds, hidden, w, std / math.sqrt(2 * config.n_layers), salt + 1, dtype)
        self.act = F.relu if config.activation == "relu" else F.gelu

    def forward(self, h: torch.Tensor, norm) -> torch.Tensor:
        """MLP on norm(h): (E, N, width) → (E, N, width)."""
        return self.proj(self.act(self.fc(h, norm)))


class Block(nn.Module):
    """Pre-LN block: h + attn(ln1(h)), then + mlp(ln2(h))."""

    def __init__(self, config: GPTConfig, seeds, index: int, dtype):
        super().__init__()
        E, w, salt = len(seeds), config.width, 10 + 10 * index   # distinct init stream per tensor
        # The norms hold parameters only: each is applied by the linear layer it feeds (see
        # EnsembleLinear), so None means no LayerNorm.
        self.ln1 = EnsembleLayerNorm(E, w, dtype) if config.layernorm else None
        self.ln2 = EnsembleLayerNorm(E, w, dtype) if config.layernorm and config.mlp else None
        self.attn = Attention(config, seeds, salt, dtype)
        self.mlp = MLP(config, seeds, salt + 2, dtype) if config.mlp else None
        self.hook_resid_mid, self.hook_resid_post = HookPoint(), HookPoint()

    def forward(self, h: torch.Tensor, n_prompts: int, x_only: bool = False) -> torch.Tensor:
        """(E, B·S, width) → (E, B·S, width), or (E, B·T, width) when `x_only`: in the last block
        only the x-tokens are read out, so the out-projection and MLP skip the y-tokens."""
        attn_out = hook_flat(self.attn.hook_out, self.attn(h, self.ln1, n_prompts, x_only), n_prompts)
        h = hook_flat(self.hook_resid_mid, keep_rows(h, n_prompts, x_only) + attn_out, n_prompts)
        if self.mlp is not None:
            h = h + self.mlp(h, self.ln2)
        return hook_flat(self.hook_resid_post, h, n_prompts)


def token_shape(tc) -> tuple[int, int]:
    """(vocabulary, sequence length) of a token task's config: `vocab_size` / `seq_len`, else
    `n_states` / `n_points`."""
    vocab = getattr(tc, "vocab_size", None) or getattr(tc, "n_states", None)
    length = getattr(tc, "seq_len", None) or getattr(tc, "n_points", None)
    if not vocab or not length:
        raise UsageError(f"model.tokens=true needs a token task (with a vocabulary and a sequence length); "
                         f"task {getattr(tc, 'name', '?')!r} has none; allowed: tasks with vocab_size/n_states")
    return int(vocab), int(length)


class GPT(EnsembleModel):
    prefix_outputs = True

    def __init__(self, config: GPTConfig, task, seeds, dtype=torch.float32):
        super().__init__(len(seeds))
        tc = task_config(task)
        if config.tokens:
            self._init_tokens(config, tc, seeds, dtype)
            return
        d = tc.d
        max_points = max(tc.n_points, getattr(tc, "test_points", tc.n_points)) + 1
        if d < 1:
            raise UsageError(f"the GPT model needs input dimension d ≥ 1, got d={d}")
        if max_points < 1:
            raise UsageError(f"the GPT model needs max_points ≥ 1, got max_points={max_points}")
        self.config, self.d, self.max_points = config, d, max_points
        E, w, std = len(seeds), config.width, config.init_std
        self.read_in = EnsembleLinear(seeds, d, w, std, 0, dtype)
        self.pos = (nn.Parameter(seeded_normal(seeds, (2 * max_points - 1, w), std, 1, dtype))
                    if config.positional else None)
        self.blocks = nn.ModuleList(Block(config, seeds, i, dtype) for i in range(config.n_layers))
        self.ln_f = EnsembleLayerNorm(E, w, dtype) if config.layernorm else None
        self.read_out = EnsembleLinear(seeds, w, 1, std, 2, dtype)
        self.hook_embed, self.hook_pred = HookPoint(), HookPoint()
        self.setup_hooks()

    def _init_tokens(self, config: GPTConfig, tc, seeds, dtype) -> None:
        V, S = token_shape(tc)
        self.config, self.vocab, self.max_points = config, V, S
        self.prefix_outputs = config.readout == "all"
        E, w, std = len(seeds), config.width, config.init_std
        self.embed = nn.Parameter(seeded_normal(seeds, (V, w), std, 0, dtype))
        self.pos = nn.Parameter(seeded_normal(seeds, (S, w), std, 1, dtype)) if config.positional else None
        self.blocks = nn.ModuleList(Block(config, seeds, i, dtype) for i in range(config.n_layers))
        self.ln_f = EnsembleLayerNorm(E, w, dtype) if config.layernorm else None
        self.read_out = EnsembleLinear(seeds, w, V, std, 2, dtype)
        self.hook_embed, self.hook_pred = HookPoint(), HookPoint()
        self.setup_hooks()

    def forward_tokens(self, batch) -> torch.Tensor:
        """Logits from token ids batch.x (E' ∈ {1, E}, B, S): (E, B, V) at the last position
        (`readout="last"`) or (E, B, S, V) at every position (`readout="all"`)."""
        x = batch.x
        E, (Ex, B, S) = self.n_seeds, x.shape
        if x.dim() != 3 or Ex not in (1, E) or S > self.max_points:
            raise UsageError(f"batch.x has shape {tuple(x.shape)}; the token GPT takes token ids "
                             f"(1 or {E}, B, S ≤ {self.max_points})")
        ids = x.expand(E, B, S)
        h = self.embed[torch.arange(E, device=x.device)[:, None, None], ids]          # (E, B, S, w)
        if self.pos is not None:
            h = h + self.pos[:, None, :S]
        h = hook_flat(self.hook_embed, h.reshape(E, B * S, -1), B)
        # read out at the last position only: the last block works on it alone after its attention
        # (without hooks; with hooks attached every hook keeps all tokens)
        last = len(self.blocks) - 1
        trim = self.config.readout == "last" and not self.hooks_active
        for i, block in enumerate(self.blocks):
            h = block(h, B, x_only=slice(S - 1, S) if trim and i == last else False)
        if self.config.readout == "last":
            logits = self.read_out(h.view(E, B, -1, h.shape[-1])[:, :, -1], self.ln_f)  # (E, B, V)
        else:
            logits = self.read_out(h, self.ln_f).view(E, B, S, -1)
        return self.hook_pred(logits)

    def loss(self, pred: torch.Tensor, batch) -> torch.Tensor:
        """Per-seed loss (E,): cross-entropy of the logits in token mode, else ½·MSE (the base's)."""
        if not self.config.tokens:
            return super().loss(pred, batch)
        E, V = pred.shape[0], pred.shape[-1]
        y = batch.y.expand(E, *batch.y.shape[1:])
        ce = F.cross_entropy(pred.reshape(-1, V), y.reshape(-1), reduction="none")
        return ce.view(E, -1).mean(1)

    @torch.no_grad()
    def spectral_matrices(self) -> dict[str, torch.Tensor]:
        """Every block's W_Q, W_K, W_V (E, w, w) and per head h QK_h = W_Q,h W_K,hᵀ and
        OV_h = W_V,h W_O,h (E, w, w), as `blocks.{i}.attn.{w_q,w_k,w_v,qk.{h},ov.{h}}`."""
        out = {}
        w, H = self.config.width, self.config.n_heads
        dh = w // H
        for i, block in enumerate(self.blocks):
            W, Wo = block.attn.qkv.weight.detach(), block.attn.out.weight.detach()
            Wq, Wk, Wv = W[..., :w], W[..., w:2 * w], W[..., 2 * w:]
            name = f"blocks.{i}.attn"
            out.update({f"{name}.w_q": Wq, f"{name}.w_k": Wk, f"{name}.w_v": Wv})
            for h in range(H):
                cols = slice(h * dh, (h + 1) * dh)
                out[f"{name}.qk.{h}"] = Wq[..., cols] @ Wk[..., cols].transpose(-1, -2)
                out[f"{name}.ov.{h}"] = Wv[..., cols] @ Wo[..., cols, :]
        return out

    def tokens(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x (E', B, T, d), y (E', B, T) → interleaved tokens (E', B, 2T−1, d), y-tokens (y, 0, …, 0)."""
        y_tokens = F.pad(y[..., None], (0, self.d - 1))
        T = x.shape[2]
        return torch.stack([x, y_tokens], dim=3).flatten(2, 3)[:, :, : 2 * T - 1]

    def forward(self, batch) -> torch.Tensor:
        """Predictions of every y_t from the points before it and x_t: (E, B, T); token mode:
        `forward_tokens`."""
        if self.config.tokens:
            return self.forward_tokens(batch)
        x, y = batch.x, batch.y
        Ex, B, T, d = x.shape
        E = self.n_seeds
        if d != self.d or Ex not in (1, E):
            raise UsageError(f"batch.x has shape {tuple(x.shape)}; this model takes (1 or {E}, B, T, d={self.d})")
        if T > self.max_points:
            raise UsageError(f"batch has {T} points per prompt but the GPT model's positional table "
                             f"holds max_points={self.max_points}")
        S = 2 * T - 1
        # Held-out batches (E' = 1) are shared by all seeds: expand before the read-in (d is small).
        tok = self.tokens(x, y).expand(E, B, S, d).reshape(E, B * S, d)
        h = self.read_in(tok)
        if self.pos is not None:
            h = (h.view(E, B, S, -1) + self.pos[:, None, :S]).view(E, B * S, -1)
        h = hook_flat(self.hook_embed, h, B)
        # Only the x-tokens are read out, so the last block works on them alone after its
        # attention (~10% of a 4-layer model's work). With hooks attached every hook keeps all tokens.
        all_tokens = self.hooks_active
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            h = block(h, B, x_only=i == last and not all_tokens)
        h_x = x_tokens(h, B) if all_tokens else h
        pred = self.read_out(h_x, self.ln_f).view(E, B, T)
        return self.hook_pred(pred)
