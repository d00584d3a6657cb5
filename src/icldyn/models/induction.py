"""The two-attention-layer induction-head transformers of Chen, Sheen, Wang & Yang (2024).

Input: tokens x (E or 1, B, L) long over [S] (the `ngram-markov` batch); a zero token is
appended at position L+1, the query. Output: ŷ (E, B, S), a probability vector for x_{L+1}.

Simplified model (`induction-simplified`, the paper's main model):
  copier   H heads of relative-position attention over the window of offsets j = 1..M:
           v_i^(h) = Σ_j softmax(w^(h))_j x_{i−j}   (x_{≤0} = 0: zero padding), v̄ = v/‖v‖;
  selector K(i) = Σ_S c_S² Π_{h∈S} ⟨v̄_i^(h), v̄_{L+1}^(h)⟩ / Σ_S c_S² over the non-empty subsets
           S of heads with |S| ≤ D;
  classifier ŷ = Σ_{i≤L} softmax_i(a·K(i)) x_i.
  Trainable: `w` (E, H, M) RPE logits, `c` (E, n_subsets), `a` (E,). Init: head h has logit
  w_plus on offset h and w_minus elsewhere, c_S = c_init, a = a_init (no randomness: seeds of
  an ensemble differ by their data only). A subset is named by the offsets its heads prefer at
  init, joined by `+` (`1`, `2`, `1+2`, …).

Full model (`induction-full`, the paper's appendix; our reconstruction of the authors' code):
  each copier head also has a content query-key term and an output-value matrix,
    logit_ij^(h) = x_iᵀ Q_h K_hᵀ x_{i−j} + w_j^(h),  v_i^(h) = (Σ_j attn_ij^(h) x_{i−j}) O_h,
  Q_h = K_h = qk_init·I and O_h = I at init, and LayerNorm over the S coordinates of each head
  output (gain and shift shared by the heads, as in the authors' code); ⟨·,·⟩ in the selector is
  clipped at 0 (after LayerNorm inner products can be negative; the authors apply a ReLU too).
  Differences from the authors' code, kept on purpose: the window is offsets 1..M for every head
  (theirs shifts it per head and adds offset 0), and the selector has no empty-subset or
  raw-token features (the spec's non-empty subsets of heads). With Q = K = 0, O = I and
  `norm: l2` it is exactly the simplified model (a test checks it).

Code-faithful option (`fidelity: code`; default `paper` is everything above). It follows the
authors' code (gszfwsb/Unveiling-Induction-Heads, RPE/) where it differs from the paper's text:
  window    head h (from 0) covers offsets h+1 … h+M (theirs: M = H), logits w^(h) over its own
            window, so the copier spans offsets 1 … H−1+M (`span`); head h's logit on offset h+1
            (the first of its window) is w_plus at init, the others w_minus (their W[h, h] = w+).
            Their softmax runs over the offsets inside the sequence only; ours pads with zero
            tokens — the same head output after the normalisation below (scale only).
  normalise v̄ = v / (‖v‖ + 1e-7) (theirs) instead of v / max(‖v‖, 1e-12).
  selector  components (own token x_i, head 1 … head H), named by offset (own token `0`, head h
            `h+1`); every subset of components with |S| ≤ D, the empty one (`none`, feature 1)
            and those with the own token included (their terms are ≈ 0: the query's own token is
            the zero token); feature Π_{c∈S} (⟨v̄_i^c, v̄_q^c⟩ + 1e-24) (theirs: exp Σ log(· + 1e-24));
            K(i) = Σ_S c_S² f_S(i) / (Σ_S c_S²)²  — theirs divides by ‖c‖² twice, so the effective
            classifier scale is a / Σ c².
  full      Q_h = K_h = O_h = proj_init·I at init (their `proj_init` = 0.01, "small identity"); set
            `norm: l2` for their normalisation. Not established from the code readable here (their
            full-model layer-1 file was not in the stored versions): the LayerNorm placement, the
            1/√d logit scale and whether a head sees its own position — we keep ours.
  loss, data: `loss: code` is a separate switch; data quirks are listed in the experiment doc.
  parts     `code_parts` switches these ingredients one by one (ablations; default: all under `code`,
            none under `paper`): window (per-head windows, their w+ position, the norm eps),
            selector (own-token and empty subsets, feature eps), double_norm, init (full model).

Two implementations of the same function (a test checks they agree):
  direct  the copier as a convolution over the M offsets at every position, (E, B, L+1, H, S);
  counts  K(i) depends only on cell(i) = (x_i, x_{i−1..i−M}) and on the query's window, so
          ŷ = Σ_c N_bc e^{a K(c, q_b)} e_{tok(c)} / Σ_c N_bc e^{a K(c, q_b)} with N_bc the number
          of positions of sequence b in cell c: a (C, W) table of K from the parameters, then
          (E, B, K) work per batch, K ≤ L the most cells a sequence visits (C = S·(S+1)^M cells
          in all, 192 at S = M = 3). The counts are cached per training input tensor, so
          full-batch training computes them once. `impl: auto` picks counts while C ≤ 4096. Past
          65,536 table entries (the code-faithful span 5: W = 1024, C = 3072) K is computed only
          at the (cell, window) pairs the batch visits (`k_pairs`, (E, B, K) work).
Built as Model(config, task, seeds, dtype); the vocabulary S is the task's `n_states`.

Hook points, on the shared scheme (layer 0 the copier, layer 1 the selector + classifier):
  blocks.0.attn.hook_pattern     the copier's attention over the offsets 1..M: simplified model
                                 softmax(w) (E, H, M) (formerly `copier.hook_rpe`); full model the
                                 per-token attention (E, N, H, M) — N the B·(L+1) positions on the
                                 direct path, the table's windows then cells on the counts path
  blocks.1.hook_selector_weights the normalised c_S² (E, n_subsets) (formerly `selector.hook_weights`)
  blocks.1.attn.hook_pattern     the classifier's attention over the positions (E, B, L), direct
                                 path only (formerly `classifier.hook_pattern`)
  hook_pred                      ŷ (E, B, S)
(the counts path has no per-position pattern: set `impl: direct` to read or patch it).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from icldyn.config import Strict
from icldyn.errors import UsageError
from icldyn.models.base import EnsembleModel, HookGroup, HookPoint, task_config
from icldyn.models.induction_parts import (_Cells, cell_table, code_subset_name, code_subsets,  # noqa: F401
                                          copier_span, subset_name, subsets, token_loss, windows)

COUNTS_MAX_CELLS = 4096  # `impl: auto` uses counts while C = S·(S+1)^M stays this small
COUNTS_MAX_TABLE = 65536  # … with the whole (W, C) table of K while it is this small, else `k_pairs`
CODE_NORM_EPS = 1e-7      # the authors' v / (‖v‖ + eps)
CODE_FEATURE_EPS = 1e-24  # the authors' exp Σ log(⟨·,·⟩ + eps)
CODE_PARTS = ("window", "selector", "double_norm", "init")  # `fidelity: code` = all of them


class InductionSimplifiedConfig(Strict):
    name: Literal["induction-simplified"] = "induction-simplified"
    n_heads: int = Field(default=3, gt=0, description="H: copier heads")
    window: int = Field(default=3, gt=0, description="M: RPE window of offsets 1..M")
    max_degree: int = Field(default=2, gt=0, description="D: largest subset of heads in the selector")
    w_plus: float = Field(default=3.0, description="init RPE logit of head h on offset h")
    w_minus: float = Field(default=0.1, description="init RPE logit on the other offsets")
    c_init: float = Field(default=0.01, description="init c_S of every subset")
    a_init: float = Field(default=0.01, description="init classifier scale a")
    loss: Literal["paper", "code"] = Field(
        default="paper", description="paper: −log(ŷ_target + eps); code: softmax cross-entropy of ŷ "
                                     "taken as logits (the authors' code)")
    loss_eps: float = Field(default=1e-8, gt=0, description="eps of the paper loss (a floor at −log eps)")
    impl: Literal["auto", "direct", "counts"] = "auto"
    fidelity: Literal["paper", "code"] = Field(
        default="paper", description="paper: the paper's model; code: the authors' code where it differs "
                                     "(per-head windows, selector with empty/own-token subsets and a double "
                                     "normalisation, their init; module doc)")
    code_parts: list[Literal["window", "selector", "double_norm", "init"]] | None = Field(
        default=None, description="the code-faithful ingredients switched on, one by one (ablations): window "
                                  "(per-head windows, their init position and norm eps), selector (own-token and "
                                  "empty subsets, feature eps), double_norm (K / (Σc²)²), init (full model: "
                                  "Q = K = O = proj_init·I); default: all under fidelity code, none under paper")
    unhashed_at_default: ClassVar[tuple[str, ...]] = ("fidelity", "proj_init", "code_parts")

    def parts(self) -> frozenset[str]:
        """The code-faithful ingredients in force (`code_parts`, or all/none by `fidelity`)."""
        if self.code_parts is not None:
            return frozenset(self.code_parts)
        return frozenset(CODE_PARTS) if self.fidelity == "code" else frozenset()

    @model_validator(mode="after")
    def _check_heads(self):
        if "window" not in self.parts() and self.n_heads > self.window:
            raise ValueError(f"model.n_heads ({self.n_heads}) must be ≤ model.window ({self.window}): "
                             "head h is initialised on offset h")
        if self.max_degree > self.n_heads:
            raise ValueError(f"model.max_degree ({self.max_degree}) must be ≤ model.n_heads ({self.n_heads})")
        return self


class InductionFullConfig(InductionSimplifiedConfig):
    name: Literal["induction-full"] = "induction-full"
    qk_init: float = Field(default=1e-3, description="Q_h = K_h = qk_init·I at init")
    norm: Literal["layernorm", "l2"] = Field(default="layernorm", description="normalisation of head outputs")
    proj_init: float = Field(default=0.01, description="fidelity code: Q_h = K_h = O_h = proj_init·I at init")


class InductionSimplified(EnsembleModel):
    """Shapes and hook points in the module doc. Constructor: (config, task, seeds, dtype), the
    vocabulary S the task's `n_states`."""

    prefix_outputs = False
    reads_own_token = False  # does a copier head's output at i depend on x_i itself?

    def __init__(self, config: InductionSimplifiedConfig, task, seeds, dtype=torch.float32):
        super().__init__(len(seeds))
        self.config = config
        self.S = int(task_config(task).n_states)
        E, H, M = len(seeds), config.n_heads, config.window
        parts = config.parts()
        self.code = "window" in parts          # per-head windows (and the authors' norm eps)
        self.code_selector = "selector" in parts
        self.double_norm = "double_norm" in parts
        self.code_init = "init" in parts
        self.span = copier_span(config)
        w = torch.full((E, H, M), config.w_minus, dtype=dtype)
        # paper: head h prefers offset h+1 (entry h); code: the first offset of its window h+1..h+M
        w[:, torch.arange(H), 0 if self.code else torch.arange(H)] = config.w_plus
        self.w = nn.Parameter(w)
        # entry j of head h's logits sits at offset (index) h + j (code) or j (paper)
        shift = torch.arange(H)[:, None] if self.code else torch.zeros(H, 1, dtype=torch.long)
        self.register_buffer("offset_index", shift + torch.arange(M), persistent=False)
        cs = self.code_selector
        self.subsets = code_subsets(H, config.max_degree) if cs else subsets(H, config.max_degree)
        self.subset_names = [(code_subset_name if cs else subset_name)(s) for s in self.subsets]
        self.c = nn.Parameter(torch.full((E, len(self.subsets)), config.c_init, dtype=dtype))
        self.a = nn.Parameter(torch.full((E,), config.a_init, dtype=dtype))
        # members of each subset, padded with the index of a column of ones to max_degree
        n_comp = H + 1 if cs else H
        idx = torch.full((len(self.subsets), config.max_degree), n_comp, dtype=torch.long)
        for k, s in enumerate(self.subsets):
            idx[k, : len(s)] = torch.tensor(s, dtype=torch.long)
        self.register_buffer("subset_index", idx, persistent=False)
        self._cells: tuple | None = None  # (key, _Cells, x): x is held so its address stays unique
        self.blocks = nn.ModuleList([
            HookGroup(attn=HookGroup(hook_pattern=HookPoint())),
            HookGroup(hook_selector_weights=HookPoint(), attn=HookGroup(hook_pattern=HookPoint())),
        ])
        self.hook_pred = HookPoint()
        self.setup_hooks()

    # -- probes ----------------------------------------------------------------------------------
    def subset_weights(self) -> torch.Tensor:
        """Normalised c_S² (E, n_subsets), in the order of `subset_names`."""
        c2 = self.c.pow(2)
        return c2 / c2.sum(-1, keepdim=True)

    def rpe_logits(self) -> torch.Tensor:
        """Positional logits over the offsets 1..span (E, H, span): −inf outside a head's window."""
        if not self.code:
            return self.w
        out = torch.full((*self.w.shape[:2], self.span), -torch.inf, dtype=self.w.dtype, device=self.w.device)
        return out.scatter(-1, self.offset_index.expand_as(self.w), self.w)

    def rpe_mass(self) -> torch.Tensor:
        """Each head's attention mass on each offset 1..span (E, H, span) (span = M on `paper`).

        In the full model this is the positional part; the content term shifts it per token.
        """
        return torch.softmax(self.rpe_logits(), -1)

    def normalise(self, v: torch.Tensor) -> torch.Tensor:
        """Head outputs to unit length over the last axis (the authors' eps on `code`)."""
        if self.code:
            return v / (v.norm(dim=-1, keepdim=True) + CODE_NORM_EPS)
        return F.normalize(v, dim=-1, eps=1e-12)

    # -- layers ----------------------------------------------------------------------------------
    def copier(self, own: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
        """own (E|1, N, S) own token, win (E|1, N, span, S) → normalised head outputs (E, N, H, S)."""
        p = self.blocks[0].attn.hook_pattern(self.rpe_mass())
        v = torch.einsum("ehm,enms->enhs", p, win.expand(p.shape[0], *win.shape[1:]))
        return self.normalise(v)

    def similarity(self, keys: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Per-head ⟨v̄_i, v̄_q⟩: keys (E, ..., H, S), query broadcastable → (E, ..., H)."""
        return (keys * query).sum(-1)

    def selector(self, G: torch.Tensor, quadratic: bool = False) -> torch.Tensor:
        """G (E, ..., H) per-head similarities → K (E, ...). `quadratic` (D ≤ 2): the same sum as
        a quadratic form in (G, 1), for large inputs (`k_pairs`; the other paths keep the sum as written)."""
        if quadratic and self.config.max_degree <= 2:
            return self._selector_quadratic(G)
        G = G.movedim(-1, 0)                                                  # (H, E, ...)
        if self.code_selector:  # the own-token component: ⟨x_i, x_{L+1}⟩ = 0 (the query is the zero token)
            G = torch.cat([torch.zeros_like(G[:1]), G]) + CODE_FEATURE_EPS     # (H+1, E, ...)
        members = torch.cat([G, torch.ones_like(G[:1])])[self.subset_index]  # (n_subsets, D, E, ...)
        feats = members[:, 0]
        for d in range(1, members.shape[1]):  # explicit products: prod's backward is slow on zeros
            feats = feats * members[:, d]
        weights = self.blocks[1].hook_selector_weights(self.subset_weights())
        K = torch.einsum("ke...,ek->e...", feats, weights)
        if self.double_norm:  # their second division by ‖c‖²
            K = K / self.c.pow(2).sum(-1).reshape(-1, *([1] * (K.dim() - 1)))
        return K

    def _selector_quadratic(self, G: torch.Tensor) -> torch.Tensor:
        """K = g U gᵀ with g = (components, 1) (E, ..., n+1) and U[a, b] the normalised c² of the subset
        {a, b} (b = n: a singleton, a = b = n: the empty subset): the selector for D ≤ 2 without the
        (n_subsets, D, E, ...) member tensor."""
        if self.code_selector:  # the own-token component ⟨x_i, x_{L+1}⟩ = 0, then their eps on every member
            G = torch.cat([torch.zeros_like(G[..., :1]), G], -1) + CODE_FEATURE_EPS
        n = G.shape[-1]
        g = torch.cat([G, torch.ones_like(G[..., :1])], -1)                   # (E, ..., n+1)
        weights = self.blocks[1].hook_selector_weights(self.subset_weights())  # (E, n_subsets)
        i0 = self.subset_index[:, 0]
        i1 = self.subset_index[:, 1] if self.subset_index.shape[1] > 1 else torch.full_like(i0, n)
        U = weights.new_zeros(weights.shape[0], n + 1, n + 1)
        U[:, i0, i1] = weights                                                # subsets are distinct pairs
        lead = (G.shape[0], -1, n + 1)
        K = ((g.reshape(lead) @ U) * g.reshape(lead)).sum(-1).view(G.shape[:-1])
        if self.double_norm:  # their second division by ‖c‖²
            K = K / self.c.pow(2).sum(-1).reshape(-1, *([1] * (K.dim() - 1)))
        return K

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, batch) -> torch.Tensor:
        """ŷ (E, B, S) for the target x_{L+1} of each prompt."""
        impl = self.config.impl
        if impl == "auto":
            impl = "counts" if self.S * (self.S + 1) ** self.span <= COUNTS_MAX_CELLS else "direct"
        x = batch.x
        if x.dim() != 3 or x.dtype != torch.long:
            raise UsageError(f"{type(self).__name__} takes long tokens x (E, B, L); got {tuple(x.shape)} {x.dtype}")
        pred = self.forward_counts(x) if impl == "counts" else self.forward_direct(x)
        return self.hook_pred(pred)

    def forward_direct(self, x: torch.Tensor) -> torch.Tensor:
        """The model as written: x (E|1, B, L) long → ŷ (E, B, S)."""
        E, (Ex, B, L), M = self.n_seeds, x.shape, self.span
        dt = self.w.dtype
        onehot = F.one_hot(x, self.S).to(dt)                                  # (Ex, B, L, S)
        seq = F.pad(onehot, (0, 0, 0, 1))                                     # zero token at L+1
        win = windows(seq, M)                                                 # (Ex, B, L+1, M, S)
        v = self.copier(seq.reshape(Ex, B * (L + 1), self.S), win.reshape(Ex, B * (L + 1), M, self.S))
        v = v.reshape(E, B, L + 1, -1, self.S)
        G = self.similarity(v[:, :, :L], v[:, :, L:])                         # (E, B, L, H)
        K = self.selector(G)                                                  # (E, B, L)
        attn = self.blocks[1].attn.hook_pattern(torch.softmax(self.a[:, None, None] * K, -1))
        return torch.einsum("ebl,ebls->ebs", attn, onehot.expand(E, B, L, self.S))

    def cells(self, x: torch.Tensor) -> _Cells:
        """The counts of `x`, computed once per training input (full-batch training reuses them).

        Under no_grad (evaluation in chunks) they are computed afresh and the cache is left to
        the training batch.
        """
        if not torch.is_grad_enabled():
            return _Cells(x, self.S, self.span, self.w.dtype)
        key = (x.data_ptr(), tuple(x.shape), x.stride(), x._version, x.device, self.w.dtype)
        if self._cells is None or self._cells[0] != key:
            self._cells = (key, _Cells(x, self.S, self.span, self.w.dtype), x)
        return self._cells[1]

    def k_table(self) -> torch.Tensor:
        """K for every (cell, query window) pair: (E, W, C), W = (S+1)^M windows, C = S·W cells."""
        S, M = self.S, self.span
        cell_own, cell_win, win = cell_table(S, M, self.w.dtype, self.w.device)
        query = self.copier(torch.zeros_like(win[None, :, 0]), win[None])     # (E, W, H, S)
        if not self.reads_own_token:  # K depends on the cell's window only: 1/S of the work
            keys = query
        else:
            keys = self.copier(cell_own[None], cell_win[None])                # (E, C, H, S)
        K = self.selector(self.similarity(keys[:, None], query[:, :, None]))  # (E, W, W or C)
        if self.reads_own_token:
            return K
        return K[..., None].expand(*K.shape, S).flatten(-2)                  # cell = window·S + token

    def head_similarity_table(self) -> torch.Tensor:
        """Per-head ⟨v̄_i^(h), v̄_q^(h)⟩ for every (own token, head window) × query head window:
        (E, H, n_own·Wm, Wm), Wm = (S+1)^M codes of the M tokens a head reads, n_own = S when the
        head reads the own token (full model) else 1. A head reads only its own M offsets, so its
        output at a window is its output at that window with every other offset empty."""
        S, M, H, E = self.S, self.config.window, self.config.n_heads, self.n_seeds
        _, _, sub = cell_table(S, M, self.w.dtype, self.w.device)                # (Wm, M, S)
        Wm = sub.shape[0]
        win = sub.new_zeros(H, Wm, self.span, S)
        for h in range(H):  # head h's window placed at its offsets, the rest empty
            win[h, :, self.offset_index[h]] = sub
        n_own = S if self.reads_own_token else 1
        own = torch.eye(S, dtype=sub.dtype, device=sub.device)[:n_own] if n_own > 1 else sub.new_zeros(1, S)
        keys = self.copier(own[:, None, None].expand(n_own, H, Wm, S).reshape(1, -1, S),
                           win.expand(n_own, *win.shape).reshape(1, -1, self.span, S))
        keys = keys.view(E, n_own, H, Wm, H, S).diagonal(dim1=2, dim2=4).movedim(-1, 1)  # (E, H, n_own, Wm, S)
        query = self.copier(sub.new_zeros(1, H * Wm, S), win.reshape(1, -1, self.span, S))
        query = query.view(E, H, Wm, H, S).diagonal(dim1=1, dim2=3).movedim(-1, 1)       # (E, H, Wm, S)
        return self.similarity(keys.reshape(E, H, -1, 1, S), query[:, :, None]).flatten(2)

    def pair_index(self, st: _Cells) -> tuple[torch.Tensor, torch.Tensor]:
        """The distinct (key, query window) pairs a batch visits (key: the cell, or its window when
        heads do not read the own token): (index of each distinct pair into `head_similarity_table`
        per head (H, U), where each of the batch's pairs is among them (Ex, B, K) in 0..U−1).
        Cached on the batch's statistics: it does not depend on the parameters."""
        if getattr(st, "pairs", None) is None:
            S, M = self.S, self.config.window
            n_cells = S * (S + 1) ** self.span
            cell, qcode = st.table_index % n_cells, st.table_index // n_cells       # (Ex, B, K)
            key = cell if self.reads_own_token else cell // S
            code, inverse = torch.unique(qcode * n_cells + key, return_inverse=True)
            cell, qcode = code % n_cells, code // n_cells                           # (U,)
            own, window = (cell % S, cell // S) if self.reads_own_token else (torch.zeros_like(cell), cell)
            shift = (S + 1) ** self.offset_index[:, :1]                             # (H, 1) head h's first digit
            key_sub = window // shift % (S + 1) ** M                                # (H, U)
            q_sub = qcode // shift % (S + 1) ** M
            st.pairs = ((own * (S + 1) ** M + key_sub) * (S + 1) ** M + q_sub, inverse)
        return st.pairs

    def k_pairs(self, st: _Cells) -> torch.Tensor:
        """K only at the distinct (cell, query window) pairs a batch visits → (E, B, K): the values of
        `k_table` at st.table_index, for E·H·U work (U ≤ B·K distinct pairs) instead of E·W·C — the
        path for long copier spans (the code-faithful span 5 has W = 1024 windows, C = 3072 cells)."""
        E = self.n_seeds
        table = self.head_similarity_table()                                      # (E, H, ·)
        index, inverse = self.pair_index(st)
        G = table.gather(2, index.expand(E, -1, -1)).movedim(1, -1)               # (E, U, H)
        K = self.selector(G, quadratic=True)                                      # (E, U)
        return K.gather(1, inverse.expand(E, *inverse.shape[1:]).reshape(E, -1)).view(E, *inverse.shape[1:])

    def forward_counts(self, x: torch.Tensor, path: str | None = None) -> torch.Tensor:
        """The same function from the sufficient statistics: x (E|1, B, L) long → ŷ (E, B, S).

        `path`: `table` (K for every cell and window, then a gather), `pairs` (`k_pairs`), or None:
        the table while it has at most COUNTS_MAX_TABLE entries (every paper-fidelity default), else pairs.
        """
        E, B = self.n_seeds, x.shape[1]
        st = self.cells(x)
        index = st.table_index.expand(E, B, -1)
        if path is None:
            W = (self.S + 1) ** self.span
            path = "table" if W * W * (self.S if self.reads_own_token else 1) <= COUNTS_MAX_TABLE else "pairs"
        if path == "table":
            table = self.k_table().reshape(E, -1)                             # (E, W·C)
            Kq = table.gather(1, index.reshape(E, -1)).view(index.shape)      # (E, B, K)
        else:
            Kq = self.k_pairs(st)
        attn = torch.softmax(torch.addcmul(st.log_counts, self.a[:, None, None], Kq), -1)
        out = torch.zeros(E, B, self.S, dtype=attn.dtype, device=attn.device)
        return out.scatter_add(-1, st.token.expand(E, B, -1), attn)

    def loss(self, pred: torch.Tensor, batch) -> torch.Tensor:
        """Per-seed loss (E,): `config.loss` of ŷ for the target batch.y."""
        return token_loss(pred, batch.y, self.config.loss, self.config.loss_eps)


class InductionFull(InductionSimplified):
    """The full model (module doc): content query-key, output-value and LayerNorm in the copier."""

    reads_own_token = True

    def __init__(self, config: InductionFullConfig, task, seeds, dtype=torch.float32):
        super().__init__(config, task, seeds, dtype)
        E, H, S = len(seeds), config.n_heads, self.S
        eye = torch.eye(S, dtype=dtype).expand(E, H, S, S)
        qk, ov = (config.proj_init, config.proj_init) if self.code_init else (config.qk_init, 1.0)
        self.q_proj = nn.Parameter(qk * eye.clone())
        self.k_proj = nn.Parameter(qk * eye.clone())
        self.ov = nn.Parameter(ov * eye.clone())
        self.ln_weight = nn.Parameter(torch.ones(E, S, dtype=dtype))
        self.ln_bias = nn.Parameter(torch.zeros(E, S, dtype=dtype))

    def copier(self, own: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
        E = self.n_seeds
        own, win = own.expand(E, *own.shape[1:]), win.expand(E, *win.shape[1:])
        qk = self.q_proj @ self.k_proj.transpose(-1, -2)                      # (E, H, S, S)
        content = torch.einsum("enht,enmt->enhm", torch.einsum("ens,ehst->enht", own, qk), win)
        logits = content + self.rpe_logits()[:, None]                         # (E, N, H, span)
        attn = self.blocks[0].attn.hook_pattern(torch.softmax(logits, -1))
        v = torch.einsum("enhs,ehst->enht", torch.einsum("enhm,enms->enhs", attn, win), self.ov)
        if self.config.norm == "l2":
            return self.normalise(v)
        v = F.layer_norm(v, (self.S,))
        return v * self.ln_weight[:, None, None] + self.ln_bias[:, None, None]

    def similarity(self, keys: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        return torch.relu((keys * query).sum(-1))  # code: their log(· + 1e-24) needs ≥ 0 too
