"""The code-faithful induction models (`model.fidelity: code`) against the authors' formulas.

The formulas of the authors' code (gszfwsb/Unveiling-Induction-Heads, RPE/model.py), written out
here by hand, not taken from their code:
  layer 1  an (L+1) × H matrix W; head h (0-based) puts W[h+j, h] on the diagonal −(h+j+1), j < H,
           of an (L+1) × (L+1) logit matrix (−inf elsewhere), softmaxes each row over its finite
           entries (a row with none is zero), multiplies by X̃ (X with a zero token appended) and
           normalises each row: v / (‖v‖ + 1e-7); the features of a position are (X̃, v̄_0, …, v̄_{H−1});
  layer 2  for every 0/1 degree vector d over those H+1 components with Σd ≤ D, the feature of key i
           is exp Σ_c d_c log(⟨q_c, k_c⟩ + 1e-24) (q the last position); K(i) = Σ_d c_d² f_d(i)
           / ‖c‖² / ‖c‖²; ŷ = Σ_{i<L} softmax_i(a·K(i)) x_i.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from icldyn.models.induction import (InductionFull, InductionFullConfig, InductionSimplified,
                                     InductionSimplifiedConfig, token_loss)
from icldyn.tasks.ngram_markov import NgramMarkovConfig, NgramMarkovTask

F64 = torch.float64


def task(**kw) -> NgramMarkovTask:
    return NgramMarkovTask(NgramMarkovConfig(**kw), dtype=F64)


# -- a case small enough to compute on paper ------------------------------------------------------

def test_hand_computed_case_of_the_authors_formulas():
    """S = 2, L = 3, x = (0, 1, 0), H = 1 head over offset 1 (M = 1), D = 1.

    v̄_i = x_{i−1} (zero at i = 0), so the head's similarity with the query v̄_3 = x_2 = e0 is
    (0, 1, 0) over keys i = 0, 1, 2; the own-token similarity is 0 (the query is the zero token).
    Subsets (∅, {own}, {head}) with c = (1, 1, 2): Σc² = 6, so
    K = (1·1 + 4·sim)/36 = (1, 5, 1)/36. With a = 9·ln 3, a·K differs by ln 3 between key 1 and the
    others: attention (1, 3, 1)/5 and ŷ = (2/5, 3/5).
    """
    m = InductionSimplified(InductionSimplifiedConfig(fidelity="code", n_heads=1, window=1, max_degree=1),
                            NgramMarkovConfig(n_states=2), [0], F64)
    assert m.subset_names == ["none", "0", "1"]
    with torch.no_grad():
        m.c.copy_(torch.tensor([[1.0, 1.0, 2.0]], dtype=F64))
        m.a.fill_(9 * math.log(3))
    x = torch.tensor([[[0, 1, 0]]])
    want = torch.tensor([[[0.4, 0.6]]], dtype=F64)
    for impl in ("direct", "counts"):
        got = m.forward_direct(x) if impl == "direct" else m.forward_counts(x)
        assert torch.allclose(got, want, atol=1e-12), impl
    # negative control: the paper's model (one normalisation, no ∅ subset) is another function here
    p = InductionSimplified(InductionSimplifiedConfig(n_heads=1, window=1, max_degree=1),
                            NgramMarkovConfig(n_states=2), [0], F64)
    with torch.no_grad():
        p.c.fill_(2.0)
        p.a.fill_(9 * math.log(3))
        assert not torch.allclose(p.forward_direct(x), want, atol=1e-3)


def test_per_head_windows_and_init_by_hand():
    """H = 2, M = 2: head 0 covers offsets 1, 2 and head 1 offsets 2, 3 (W[1,1] = w+ on offset 2)."""
    m = InductionSimplified(InductionSimplifiedConfig(fidelity="code", n_heads=2, window=2, w_plus=3.0,
                                                      w_minus=0.1), NgramMarkovConfig(n_states=3), [0], F64)
    mass = m.rpe_mass()[0]
    hi = math.exp(3.0) / (math.exp(3.0) + math.exp(0.1))
    want = torch.tensor([[hi, 1 - hi, 0.0], [0.0, hi, 1 - hi]], dtype=F64)
    assert torch.allclose(mass, want, atol=1e-12)
    # head 1's output at position 3 of x = (2, 0, 1, 1): mass hi on x_1 = 0, 1 − hi on x_0 = 2
    onehot = torch.eye(3, dtype=F64)[torch.tensor([2, 0, 1, 1])]
    win = torch.stack([onehot[3 - j] for j in (1, 2, 3)])[None, None]           # (1, 1, span, S)
    v = m.copier(onehot[3][None, None], win)[0, 0, 1]
    raw = torch.tensor([hi, 0.0, 1 - hi], dtype=F64)
    assert torch.allclose(v, raw / (raw.norm() + 1e-7), atol=1e-15)


# -- the formulas written out, on random parameters ------------------------------------------------

def authors_forward(m: InductionSimplified, x: torch.Tensor) -> torch.Tensor:
    """The module doc's formulas with loops. x (1, B, L) long → ŷ (1, B, S); E = 1."""
    S, H, D = m.S, m.config.n_heads, m.config.max_degree
    full = isinstance(m, InductionFull)
    B, L = x.shape[1:]
    W = torch.zeros(L + H, H, dtype=F64)                    # the authors' W: W[h + j, h] = our w[h, j]
    for h in range(H):
        for j in range(m.config.window):
            W[h + j, h] = m.w[0, h, j]
    degrees = [d for d in itertools.product((0, 1), repeat=H + 1) if sum(d) <= D]
    c2 = {d: None for d in degrees}
    for k, sub in enumerate(m.subsets):                     # our subsets ↔ their degree vectors
        c2[tuple(int(c in sub) for c in range(H + 1))] = m.c[0, k] ** 2
    norm = sum(c2.values())
    out = torch.zeros(1, B, S, dtype=F64)
    for b in range(B):
        X = torch.eye(S, dtype=F64)[x[0, b]]
        Xt = torch.cat([X, torch.zeros(1, S, dtype=F64)])
        feats = [Xt]
        for h in range(H):
            rows = []
            for i in range(L + 1):
                offs = [(h + j + 1, W[h + j, h]) for j in range(m.config.window) if i - (h + j + 1) >= 0]
                if not offs:
                    rows.append(torch.zeros(S, dtype=F64))
                    continue
                logits = torch.stack([w + (Xt[i] @ m.q_proj[0, h] @ m.k_proj[0, h].T @ Xt[i - o] if full else 0)
                                      for o, w in offs])
                p = torch.softmax(logits, 0)
                v = sum(p[k] * Xt[i - o] for k, (o, _) in enumerate(offs))
                v = v @ m.ov[0, h] if full else v
                rows.append(v / (v.norm() + 1e-7))
            feats.append(torch.stack(rows))
        K = torch.zeros(L, dtype=F64)
        for i in range(L):
            for d in degrees:
                logf = sum(dc * math.log(max(float(feats[c][L] @ feats[c][i]), 0.0) + 1e-24)
                           for c, dc in enumerate(d))
                K[i] += c2[d] * math.exp(logf)
        K = K / norm / norm
        out[0, b] = torch.softmax(m.a[0] * K, 0) @ X
    return out


@pytest.mark.parametrize("cls,cfg", [
    (InductionSimplified, InductionSimplifiedConfig(fidelity="code")),
    (InductionSimplified, InductionSimplifiedConfig(fidelity="code", n_heads=2, window=3)),
    (InductionFull, InductionFullConfig(fidelity="code", norm="l2")),
])
def test_code_faithful_forward_equals_the_authors_formulas(cls, cfg):
    t = task(n_points=8)
    b = t.sample([0], 0, 5)
    m = cls(cfg, t, [0], F64)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g, dtype=F64))
        m.a.fill_(3.0)
        want = authors_forward(m, b.x)
        assert torch.allclose(m.forward_direct(b.x), want, atol=1e-9)
        if cls is InductionSimplified:
            assert torch.allclose(m.forward_counts(b.x), want, atol=1e-9)


def test_code_option_leaves_the_paper_model_and_gradients_reach_every_parameter():
    t = task(n_points=20)
    b = t.sample([0], 0, 16)
    m = InductionSimplified(InductionSimplifiedConfig(fidelity="code", loss="code"), t, [0], F64)
    assert m.subset_names == ["none", "0", "1", "2", "3", "0+1", "0+2", "0+3", "1+2", "1+3", "2+3"]
    assert m.rpe_mass().shape == (1, 3, 5)
    token_loss(m(b), b.y, "code").sum().backward()
    for name, p in m.named_parameters():
        assert torch.isfinite(p.grad).all(), name
    assert m.w.grad.abs().sum() > 0 and m.a.grad.abs().sum() > 0 and m.c.grad.abs().sum() > 0
    paper = InductionSimplifiedConfig()
    assert paper.fidelity == "paper" and "fidelity" not in str(paper.model_dump(exclude_defaults=True))


@pytest.mark.parametrize("cls,cfg", [
    (InductionSimplified, InductionSimplifiedConfig(fidelity="code")),
    (InductionFull, InductionFullConfig(fidelity="code", norm="l2")),
    (InductionFull, InductionFullConfig()),
])
def test_both_counts_paths_equal_the_direct_forward_and_its_gradients(cls, cfg):
    """The whole (W, C) table of K and the visited (cell, window) pairs only: the same ŷ and gradients."""
    t = task(n_points=12)
    b = t.sample([0, 1], 0, 7)
    m = cls(cfg, t, [0, 1], F64)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=F64))
        m.a.fill_(4.0)
    grads = {}
    for path in ("direct", "table", "pairs"):
        m.zero_grad()
        pred = m.forward_direct(b.x) if path == "direct" else m.forward_counts(b.x, path=path)
        token_loss(pred, b.y, "code").sum().backward()
        grads[path] = (pred.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
    for path in ("table", "pairs"):
        assert torch.allclose(grads[path][0], grads["direct"][0], atol=1e-10), path
        for name, gr in grads["direct"][1].items():
            assert torch.allclose(grads[path][1][name], gr, atol=1e-9, rtol=1e-7), (path, name)


def test_code_parts_switch_single_ingredients_and_keep_the_hash():
    """All parts = fidelity code; no parts = fidelity paper; one part changes only its own piece."""
    t = task(n_points=10)
    b = t.sample([0], 0, 4)
    cfgs = {"code": InductionFullConfig(fidelity="code", norm="l2"),
            "all": InductionFullConfig(code_parts=["window", "selector", "double_norm", "init"], norm="l2"),
            "paper": InductionFullConfig(norm="l2"), "none": InductionFullConfig(fidelity="code", code_parts=[], norm="l2")}
    out = {k: InductionFull(c, t, [0], F64)(b) for k, c in cfgs.items()}
    assert torch.allclose(out["code"], out["all"], atol=1e-14)
    assert torch.allclose(out["paper"], out["none"], atol=1e-14)
    assert not torch.allclose(out["code"], out["paper"], atol=1e-6)
    sel = InductionFull(InductionFullConfig(code_parts=["selector"]), t, [0], F64)
    assert sel.span == 3 and sel.subset_names[0] == "none" and not sel.double_norm
    init = InductionFull(InductionFullConfig(code_parts=["init"]), t, [0], F64)
    assert torch.allclose(init.ov[0, 0], 0.01 * torch.eye(3, dtype=F64)) and init.subset_names[0] == "1"
    assert "code_parts" not in str(InductionFullConfig().model_dump(exclude_defaults=True))
