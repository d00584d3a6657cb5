"""Induction heads on n-gram Markov chains: task, models, theory (Ĩ, S*) and the n-gram estimators."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from icldyn.errors import UsageError
from icldyn.estimators.ngram import NGRAM_ESTIMATORS, history_match
from icldyn.models.induction import (InductionFull, InductionFullConfig, InductionSimplified,
                                     InductionSimplifiedConfig, token_loss)
from icldyn.tasks.base import Batch
from icldyn.tasks.ngram_markov import NgramMarkovConfig, NgramMarkovTask
from icldyn.theory import induction as th

F64 = torch.float64


def task(**kw) -> NgramMarkovTask:
    return NgramMarkovTask(NgramMarkovConfig(**kw), dtype=F64)


# -- task ------------------------------------------------------------------------------------------

def test_sampling_is_a_pure_function_of_seed_and_step():
    t = task(n_points=20)
    a, b = t.sample([0, 1], 3, 50), t.sample([0, 1], 3, 50)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and torch.equal(a.extras["pi"], b.extras["pi"])
    assert a.x.shape == (2, 50, 20) and a.y.shape == (2, 50) and a.x.dtype == torch.long
    assert a.extras["pi"].shape == (2, 50, 9, 3)
    assert not torch.equal(a.x[0], a.x[1])                       # seeds differ
    assert not torch.equal(a.x, t.sample([0, 1], 4, 50).x)       # steps differ
    one = t.sample([1], 3, 50)                                   # a seed's batch does not depend on its company
    assert torch.equal(one.x[0], a.x[1])
    ev = t.eval_batch(30, 7, n_points=40, alpha=0.5)
    assert ev.x.shape == (1, 30, 40) and ev.extras["alpha"] == 0.5
    assert torch.equal(ev.x, t.eval_batch(30, 7, n_points=40, alpha=0.5).x)
    assert int(a.x.max()) <= 2 and int(a.x.min()) >= 0


def transition_statistic(batch, parents, S) -> tuple[float, float]:
    """(R, z) of a per-(sequence, context-row) test of the transitions against that sequence's π.

    Row z of π is indexed as the task documents, written out here independently of the sampler:
    z = Σ_k x_{t−parents[k]}·S^k, parents sorted. For sequence b, row z and token s,
    M = n_{bzs} − N_{bz}·π_b(s|z) (n the transitions z → s, N the visits of z) is a martingale
    with E[M²] = π(1−π)·E[N], so Q_b = Σ_{z,s} M²/π_b(s|z) has E[Q_b] = (S−1)·E[Σ_z N_{bz}] = E[D_b].
    R = Σ_b Q_b / Σ_b D_b is ≈ 1 for the right sampler; z is (R − 1) over the standard error of
    the ratio, pooled over independent sequences. Transitions drawn from the wrong row of π leave
    M of order N and blow R up."""
    seq = torch.cat([batch.x, batch.y[..., None]], -1)[0]               # (B, L+1)
    pi = batch.extras["pi"][0].double()                                 # (B, S^k, S)
    B, T = seq.shape
    m = max(parents)
    ts = torch.arange(m, T)
    z = sum(seq[:, ts - p] * S**k for k, p in enumerate(sorted(parents)))  # (B, T−m)
    rows = torch.nn.functional.one_hot(z, S ** len(parents)).double()   # (B, T−m, S^k)
    hits = torch.nn.functional.one_hot(seq[:, ts], S).double()          # (B, T−m, S)
    n = torch.einsum("btz,bts->bzs", rows, hits)                        # transitions z → s
    N = rows.sum(1)                                                     # visits of z
    M = n - N[..., None] * pi
    Q = (M.pow(2) / pi.clamp_min(1e-300)).sum((1, 2))                   # (B,)
    D = (S - 1) * N.sum(1)
    R = float(Q.sum() / D.sum())
    se = float((Q - R * D).pow(2).sum().sqrt() / D.sum())
    return R, (R - 1) / se


def test_sampler_transitions_follow_each_sequences_pi():
    t = task(parents=[1, 3], n_points=60, alpha=0.5)
    b = t.sample([0], 0, 3000)
    R, z = transition_statistic(b, [1, 3], 3)
    assert abs(z) < 4 and abs(R - 1) < 0.1, (R, z)
    # the first max(parents) tokens are uniform
    seq = torch.cat([b.x, b.y[..., None]], -1)[0]
    freq = torch.nn.functional.one_hot(seq[:, :3], 3).to(F64).mean((0, 1))
    assert torch.allclose(freq, torch.full((3,), 1 / 3, dtype=F64), atol=0.02)


@pytest.mark.parametrize("wrong", ["swapped digits", "parents {1, 2}"])
def test_transition_statistic_rejects_a_sampler_reading_the_wrong_row(monkeypatch, wrong):
    """Negative control: the sampler indexes π with the parent digits swapped (z = 3·x_{t−1} + x_{t−3})
    or reads offsets {1, 2} instead of {1, 3}; the test statistic must reject both."""
    from icldyn.tasks import ngram_markov

    right = ngram_markov.config_index

    def swapped(x, t, parents, S):
        return right(x, t, list(reversed(parents)), S)

    def near(x, t, parents, S):
        return right(x, t, [1, 2], S)

    monkeypatch.setattr(ngram_markov, "config_index", swapped if wrong == "swapped digits" else near)
    b = task(parents=[1, 3], n_points=60, alpha=0.5).sample([0], 0, 3000)
    R, z = transition_statistic(b, [1, 3], 3)
    assert R > 100, (R, z)                 # the right sampler gives R ≈ 1 (|R − 1| < 0.1 above)


def test_dirichlet_rows_have_the_prior_moments():
    alpha, S = 0.1, 3
    pi = task(alpha=alpha).sample([0], 0, 4000).extras["pi"].reshape(-1, S)
    assert torch.allclose(pi.sum(-1), torch.ones(len(pi), dtype=F64))
    var = (1 / S) * (1 - 1 / S) / (S * alpha + 1)                 # Var π_s under Dirichlet(α·1)
    assert torch.allclose(pi.mean(0), torch.full((S,), 1 / S, dtype=F64), atol=5 * math.sqrt(var / len(pi)))
    assert abs(pi.var(0).mean().item() - var) < 0.05 * var


def test_task_config_errors_name_the_field():
    with pytest.raises(ValueError, match="task.parents"):
        NgramMarkovConfig(parents=[0, 1])
    with pytest.raises(UsageError, match="n_points"):
        task(parents=[5]).sample([0], 0, 2, n_points=3)


# -- theory ----------------------------------------------------------------------------------------

def test_information_of_a_symmetric_binary_chain_by_hand():
    # S = 2, x_t flips x_{t−1} with probability p: μ uniform, Ĩ({1}) = (1−2p)²/2, I_χ²({1}) = (1−2p)²
    p = 0.2
    pi = torch.tensor([[[1 - p, p], [p, 1 - p]]], dtype=F64)
    assert th.information(pi, [1], [1]).item() == pytest.approx((1 - 2 * p) ** 2 / 2, abs=1e-12)
    assert th.information(pi, [1], [1], "chi2").item() == pytest.approx((1 - 2 * p) ** 2, abs=1e-12)
    # two steps back the flip happened twice: 1 − 2p₂ = (1 − 2p)²
    assert th.information(pi, [1], [2]).item() == pytest.approx((1 - 2 * p) ** 4 / 2, abs=1e-12)


def test_irrelevant_offsets_carry_no_information():
    # parents {2}: the even and odd sub-chains are independent, so offsets 1 and 3 tell nothing
    # about x_t, and adding offset 1 to {2} only multiplies Ĩ by Σ_z μ(z)² < 1
    pi = th.sample_prior(3, [2], 0.3, 200, seed=1)
    for subset in ([1], [3], [1, 3]):
        assert th.information(pi, [2], subset).abs().max() < 1e-12
        assert th.information(pi, [2], subset, "chi2").abs().max() < 1e-12
    i2 = th.information(pi, [2], [2])
    assert (i2 > 0).all()
    mu = th.stationary(th.transition_matrix(pi, [2]))                      # states (x_{t−1}, x_{t−2})
    mu1 = mu.view(-1, 3, 3).sum(1)                                          # law of one token
    assert torch.allclose(th.information(pi, [2], [1, 2]), mu1.pow(2).sum(-1) * i2, atol=1e-12)
    # a chain that ignores its past: nothing is informative
    row = torch.softmax(torch.randn(50, 1, 3, generator=torch.Generator().manual_seed(0), dtype=F64), -1)
    flat = row.expand(50, 9, 3).contiguous()
    for subset in th.offset_subsets(3, 2):
        assert th.information(flat, [1, 2], subset).abs().max() < 1e-12


@pytest.mark.parametrize("alpha", [1.0, 0.01])
def test_stationary_law_is_invariant(alpha):
    pi = th.sample_prior(3, [1, 3], alpha, 100, seed=0)
    P = th.transition_matrix(pi, [1, 3])
    assert torch.allclose(P.sum(-1), torch.ones(100, 27, dtype=F64))
    mu = th.stationary(P)
    assert (mu >= 0).all()
    assert torch.allclose((mu[:, None] @ P)[:, 0], mu, atol=1e-10)


def test_default_setting_selects_the_parents():
    draws = th.information_draws(n_draws=1500, seed=0)
    best, table = th.best_subset(n_draws=1500, seed=0)
    assert best == (1, 2)
    # paired over the same draws of π, the margin over the runner-up is many standard errors
    runner = max((n for n in draws if n != "1+2"), key=lambda n: table[n][0])
    diff = draws["1+2"] - draws[runner]
    assert diff.mean() > 4 * diff.std() / math.sqrt(len(diff))
    chi2 = th.information_table(n_draws=300, kind="chi2")
    assert max(chi2, key=lambda n: chi2[n][0]) == "1+2"


# -- estimators ------------------------------------------------------------------------------------

def token_batch(seqs, S=3, pi=None, alpha=0.1) -> Batch:
    t = torch.tensor(seqs)
    extras = {"alpha": alpha} if pi is None else {"pi": pi, "alpha": alpha}
    return Batch(t[None, :, :-1], t[None, :, -1], extras)


def test_ngram_estimator_on_a_hand_written_sequence():
    # query x_9 has parent history (x_8, x_7); positions with the same history and their next token:
    #   seq 0 (1, 0): i = 3 → 2, i = 6 → 2          seq 1 (2, 2): i = 3 → 1, i = 6 → 0
    b = token_batch([[0, 1, 2, 0, 1, 2, 0, 1, 2], [2, 2, 1, 2, 2, 0, 2, 2, 0]])
    est = NGRAM_ESTIMATORS["ngram_bayes"](task())
    got = est(b)[0]
    want = torch.tensor([[0.1, 0.1, 2.1], [1.1, 1.1, 0.1]], dtype=torch.float64) / 2.3
    assert torch.allclose(got.double(), want, atol=1e-6)
    gih = NGRAM_ESTIMATORS["gih"](task())(b)[0]
    assert torch.allclose(gih.double(), torch.tensor([[0, 0, 1.0], [0.5, 0.5, 0]], dtype=F64))
    uni = NGRAM_ESTIMATORS["unigram"](task())(b)[0]
    assert torch.allclose(uni.double(), torch.tensor([[3, 3, 2], [1, 1, 6]], dtype=F64) / 8)


def direct_counts(seq, offsets, S):
    """Next-token counts over positions whose history on `offsets` matches the query's (loops)."""
    L = len(seq) - 1                                            # seq[L] is the target
    c = [0] * S
    for i in range(L):
        if all(i - s >= 0 and seq[i - s] == seq[L - s] for s in offsets):
            c[seq[i]] += 1
    return c


@settings(deadline=None, max_examples=20)
@given(st.lists(st.integers(0, 2), min_size=6, max_size=30), st.sampled_from([[1], [1, 2], [2, 3], [1, 3]]),
       st.sampled_from([0.0, 0.7, 3.0, math.inf]))
def test_estimators_against_direct_counts(seq, offsets, a):
    S, alpha = 3, 0.1
    b = token_batch([seq])
    c = torch.tensor(direct_counts(seq, offsets, S), dtype=F64)
    bayes = NGRAM_ESTIMATORS["ngram_bayes"](task(parents=offsets))(b)[0, 0].double()
    assert torch.allclose(bayes, (c + alpha) / (c.sum() + S * alpha), atol=1e-6)
    # GIH with a finite a: the softmax over positions written out
    L = len(seq) - 1
    match = torch.tensor([all(i - s >= 0 and seq[i - s] == seq[L - s] for s in offsets) for i in range(L)])
    if math.isinf(a):
        logits = torch.where(match, 0.0, -math.inf) if match.any() else torch.zeros(L)
    else:
        logits = a * match.double()
    want = torch.softmax(logits.double(), 0) @ torch.nn.functional.one_hot(torch.tensor(seq[:L]), S).double()
    gih = NGRAM_ESTIMATORS["gih"](task(), subset=offsets, a=a)(b)[0, 0].double()
    assert torch.allclose(gih, want, atol=1e-6)


def test_oracle_reads_the_true_row_and_gih_has_no_match_fallback():
    t = task(n_points=12)
    b = t.sample([0, 1], 0, 40)
    oracle = NGRAM_ESTIMATORS["oracle"](t)(b)
    seq = b.x
    z = seq[..., -1] + 3 * seq[..., -2]                            # (x_L, x_{L−1}) → row
    want = b.extras["pi"][torch.arange(2)[:, None], torch.arange(40), z]
    assert torch.equal(oracle, want)
    # no position shares the query's history: a → ∞ attends uniformly, i.e. the unigram
    nomatch = token_batch([[0, 0, 0, 0, 1, 2, 1]])
    assert not history_match(nomatch.x, [1, 2]).any()
    assert torch.allclose(NGRAM_ESTIMATORS["gih"](task())(nomatch), NGRAM_ESTIMATORS["unigram"](task())(nomatch))


# -- models ----------------------------------------------------------------------------------------

def naive_forward(model, x):
    """The model written out with loops over seeds, sequences, positions and heads. x (1, B, L)."""
    E, S, H, M = model.n_seeds, model.S, model.config.n_heads, model.config.window
    full = isinstance(model, InductionFull)
    out = torch.zeros(E, x.shape[1], S, dtype=F64)
    eye = torch.eye(S, dtype=F64)
    for e in range(E):
        p = torch.softmax(model.w[e], -1)
        c2 = model.c[e] ** 2
        for b in range(x.shape[1]):
            toks = x[0, b].tolist()
            L = len(toks)
            onehot = [eye[t] for t in toks] + [torch.zeros(S, dtype=F64)]      # zero token at L+1

            def head(i, h):
                keys = [onehot[i - j] if i - j >= 0 else torch.zeros(S, dtype=F64) for j in range(1, M + 1)]
                if not full:
                    v = sum(p[h, j] * keys[j] for j in range(M))
                    n = v.norm()
                    return v / n if n > 0 else v
                qk = model.q_proj[e, h] @ model.k_proj[e, h].T
                logits = torch.stack([onehot[i] @ qk @ keys[j] + model.w[e, h, j] for j in range(M)])
                att = torch.softmax(logits, 0)
                v = sum(att[j] * keys[j] for j in range(M)) @ model.ov[e, h]
                if model.config.norm == "l2":
                    return v / v.norm() if v.norm() > 0 else v
                v = (v - v.mean()) / torch.sqrt(v.var(unbiased=False) + 1e-5)
                return v * model.ln_weight[e] + model.ln_bias[e]

            query = [head(L, h) for h in range(H)]
            K = []
            for i in range(L):
                sims = [float(head(i, h) @ query[h]) for h in range(H)]
                sims = [max(s, 0.0) for s in sims] if full else sims
                feats = [math.prod(sims[h] for h in sub) for sub in model.subsets]
                K.append(sum(float(c2[k]) * f for k, f in enumerate(feats)) / float(c2.sum()))
            attn = torch.softmax(model.a[e] * torch.tensor(K, dtype=F64), 0)
            out[e, b] = sum(attn[i] * onehot[i] for i in range(L))
    return out


def perturbed(model, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
        model.a.abs_().add_(2.0)
    return model


@pytest.mark.parametrize("cls,cfg", [(InductionSimplified, InductionSimplifiedConfig()),
                                     (InductionSimplified, InductionSimplifiedConfig(n_heads=2, window=4)),
                                     (InductionFull, InductionFullConfig()),
                                     (InductionFull, InductionFullConfig(window=4, max_degree=3))])
def test_both_implementations_equal_the_model_written_out(cls, cfg):
    t = task(n_points=9)
    b = t.sample([0], 0, 6)
    model = perturbed(cls(cfg, t, [0, 1], F64))
    with torch.no_grad():
        want = naive_forward(model, b.x)
        direct = model.forward_direct(b.x)
        counts = model.forward_counts(b.x)
    assert torch.allclose(direct, want, atol=1e-10)
    assert torch.allclose(counts, want, atol=1e-10)
    assert torch.allclose(counts.sum(-1), torch.ones(2, 6, dtype=F64))


def test_gradients_agree_between_implementations_and_reach_every_parameter():
    t = task(n_points=30)
    b = t.sample([0, 1], 0, 64)
    grads = {}
    for impl in ("direct", "counts"):
        m = perturbed(InductionFull(InductionFullConfig(impl=impl), t, [0, 1], F64), 0.3)
        for kind in ("paper", "code"):
            m.zero_grad()
            token_loss(m(b), b.y, kind).sum().backward()
            grads[impl, kind] = {n: p.grad.clone() for n, p in m.named_parameters()}
    for kind in ("paper", "code"):
        for name, g in grads["direct", kind].items():
            assert torch.isfinite(g).all() and g.abs().sum() > 0, name
            assert torch.allclose(grads["counts", kind][name], g, atol=1e-9, rtol=1e-7), name
    simple = InductionSimplified(InductionSimplifiedConfig(), t, [0, 1])
    simple.loss(simple(b), b).sum().backward()
    assert {n for n, _ in simple.named_parameters()} == {"w", "c", "a"}
    for p in simple.parameters():
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_full_model_reduces_to_the_simplified_model():
    t = task(n_points=25)
    b = t.sample([0], 0, 20)
    simple = perturbed(InductionSimplified(InductionSimplifiedConfig(), t, [0], F64))
    full = InductionFull(InductionFullConfig(norm="l2", qk_init=0.0), t, [0], F64)
    full.load_state_dict({**full.state_dict(), **simple.state_dict()})
    with torch.no_grad():
        assert torch.allclose(full(b), simple(b), atol=1e-12)


def test_loss_switch_on_a_known_prediction():
    probs = torch.tensor([[[0.5, 0.3, 0.2], [0.0, 0.0, 1.0]]], dtype=F64)
    y = torch.tensor([[0, 1]])
    paper = -(math.log(0.5 + 1e-8) + math.log(1e-8)) / 2           # a zero probability costs −log ε
    z = math.log(math.exp(0.5) + math.exp(0.3) + math.exp(0.2))
    code = ((z - 0.5) + (math.log(2 + math.e) - 0.0)) / 2
    assert token_loss(probs, y, "paper").item() == pytest.approx(paper, rel=1e-12)
    assert token_loss(probs, y, "code").item() == pytest.approx(code, rel=1e-12)
    m = InductionSimplified(InductionSimplifiedConfig(loss="code"), NgramMarkovConfig(n_states=3), [0])
    assert m.loss(probs, Batch(torch.zeros(1, 2, 4, dtype=torch.long), y)).item() == pytest.approx(code)


def test_init_probes_and_ensemble_broadcast():
    t = task(n_points=15)
    m = InductionSimplified(InductionSimplifiedConfig(), t, [0, 1, 2])
    assert m.subset_names == ["1", "2", "3", "1+2", "1+3", "2+3"]
    assert torch.allclose(m.subset_weights(), torch.full((3, 6), 1 / 6))
    mass = m.rpe_mass()
    assert mass.shape == (3, 3, 3) and (mass.argmax(-1) == torch.arange(3)).all()
    b = t.eval_batch(10, 0)                                       # E = 1 prompts shared by 3 seeds
    with torch.no_grad():
        m.a[1] = 4.0
        out = m(b)
        assert out.shape == (3, 10, 3)
        assert torch.allclose(out[0], out[2]) and not torch.allclose(out[0], out[1])
        m.config.impl = "direct"
        assert torch.allclose(m(b), out, atol=1e-6)


def test_counts_cache_follows_the_input():
    t = task(n_points=15)
    m = perturbed(InductionSimplified(InductionSimplifiedConfig(), t, [0], F64))
    b = t.sample([0], 0, 8)
    first = m(b)
    b.x[0, 0] = (b.x[0, 0] + 1) % 3                               # in place: the cache must notice
    with torch.no_grad():
        assert torch.allclose(m(b), m.forward_direct(b.x), atol=1e-12)
    assert not torch.allclose(m(b)[0, 0], first[0, 0])


def test_model_config_errors():
    with pytest.raises(ValueError, match="n_heads"):
        InductionSimplifiedConfig(n_heads=4, window=3)
    with pytest.raises(UsageError, match="tokens"):
        InductionSimplified(InductionSimplifiedConfig(), NgramMarkovConfig(n_states=3), [0])(Batch(torch.zeros(1, 2, 3, 1), torch.zeros(1, 2)))

