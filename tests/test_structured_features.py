"""Structured-features task, softmax-attention model and their reduced score dynamics.

The theory (tilted-multinomial quadrature) is checked against brute-force enumeration of the
token counts and autograd; the model's actual loss and training are checked against the theory
by Monte-Carlo and by training on sampled prompts.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from icldyn.models import MODELS
from icldyn.models.softmax_attention import SoftmaxAttention, SoftmaxAttentionConfig
from icldyn.tasks import TASKS
from icldyn.tasks.structured_features import (StructuredFeaturesConfig, StructuredFeaturesTask,
                                              mean_by_query_feature)
from icldyn.theory import structured_features as theory

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # these tensors are small: on a shared 2-core machine threading only adds contention
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_task(**kw) -> StructuredFeaturesTask:
    return StructuredFeaturesTask(StructuredFeaturesConfig(**kw), F64)


def model_with_scores(s: torch.Tensor, V: torch.Tensor, **kw) -> SoftmaxAttention:
    """The "q" model with Q = Σ_{k,n} s_{k,n} v_n v_kᵀ (so v_nᵀ Q v_k = s_{k,n})."""
    E = s.shape[0] if s.dim() == 3 else 1
    m = SoftmaxAttention(SoftmaxAttentionConfig(**kw), StructuredFeaturesConfig(d=V.shape[1], K=2), list(range(E)), F64)
    with torch.no_grad():
        m.q.copy_(torch.einsum("ekn,nd,kf->edf", s.reshape(E, *s.shape[-2:]), V, V))
    return m


def per_feature_mean_and_stderr(values, batch, K):
    mean = mean_by_query_feature(values, batch.extras["feature"], K)[0]
    second = mean_by_query_feature(values**2, batch.extras["feature"], K)[0]
    count = torch.bincount(batch.extras["feature"][0, :, -1], minlength=K)
    return mean, ((second - mean**2) / count).sqrt()


# -- brute-force reference for the multinomial expectation (independent of the quadrature) ----------
def compositions(n: int, K: int):
    if K == 1:
        yield (n,)
        return
    for first in range(n + 1):
        for rest in compositions(n - first, K - 1):
            yield (first,) + rest


def enumerated(s: torch.Tensor, p: torch.Tensor, n: int):
    """ℓ_k (K,) and E[a_{k,n}] (K, K) by summing over every count vector c ~ Multinomial(n, p)."""
    K = p.shape[0]
    c = torch.tensor(list(compositions(n, K)), dtype=F64)                     # (M, K)
    log_pmf = math.lgamma(n + 1) - torch.lgamma(c + 1).sum(-1) + torch.special.xlogy(c, p).sum(-1)
    weight = c[:, None, :] * torch.exp(s)[None]                               # (M, K, K)
    a = weight / weight.sum(-1, keepdim=True)
    a_same = torch.diagonal(a, dim1=1, dim2=2)
    off = 1 - torch.eye(K, dtype=F64)
    per_prompt = 0.5 * ((1 - a_same) ** 2 + (a * a * off).sum(-1))           # (M, K)
    pmf = log_pmf.exp()
    return pmf @ per_prompt, torch.einsum("m,mkn->kn", pmf, a)


# -- task ------------------------------------------------------------------------------------------
def test_config_validation_and_registry():
    with pytest.raises(ValidationError, match="task.K"):
        StructuredFeaturesConfig(d=3, K=4)
    with pytest.raises(ValidationError, match="imbalanced"):
        StructuredFeaturesConfig(K=1, d=3, balance="imbalanced")
    with pytest.raises(ValidationError):
        StructuredFeaturesConfig(p_dominant=1.0)
    p = StructuredFeaturesConfig(K=5, p_dominant=0.6).probabilities()
    assert p[0] == 0.6 and all(abs(q - 0.1) < 1e-15 for q in p[1:]) and abs(sum(p) - 1) < 1e-12
    assert StructuredFeaturesConfig(K=4, balance="balanced").probabilities() == [0.25] * 4
    assert TASKS["structured-features"][1] is StructuredFeaturesTask
    assert MODELS["softmax-attention"][1] is SoftmaxAttention


def test_features_are_orthonormal_and_rotated():
    V = make_task(d=7, K=4).features
    assert V.shape == (4, 7)
    assert torch.allclose(V @ V.T, torch.eye(4, dtype=F64), atol=1e-12)
    assert (V.abs() > 1e-3).sum() > 8                  # rotated: not the standard basis
    assert not torch.allclose(V, make_task(d=7, K=4, rotation_seed=1).features)
    assert torch.equal(make_task(d=7, K=4, rotate=False).features, torch.eye(7, dtype=F64)[:4])


def test_sampler_frequencies_match_p_and_labels_are_linear():
    task = make_task(d=6, K=5, n_points=12)                # imbalanced: p = (0.6, 0.1, ..., 0.1)
    b = task.sample([0], step=3, batch_size=20_000)
    feat = b.extras["feature"][0]                          # (B, T)
    freq = torch.bincount(feat.flatten(), minlength=5).to(F64) / feat.numel()
    sd = (task.p * (1 - task.p) / feat.numel()).sqrt()
    assert ((freq - task.p).abs() < 4 * sd).all(), (freq, task.p)
    q_freq = torch.bincount(feat[:, -1], minlength=5).to(F64) / feat.shape[0]
    assert ((q_freq - task.p).abs() < 4 * (task.p * (1 - task.p) / feat.shape[0]).sqrt()).all()
    # tokens are iid: a prompt misses feature k with probability (1 − p_k)^N
    counts = torch.nn.functional.one_hot(feat[:, :-1], 5).sum(1)              # (B, K)
    miss = (counts == 0).to(F64).mean(0)
    expect = (1 - task.p) ** 12
    assert ((miss - expect).abs() < 4 * (expect * (1 - expect) / feat.shape[0]).sqrt()).all()
    assert torch.equal(b.x[0], task.features[feat])
    assert torch.allclose(b.y, torch.einsum("ebtd,ebd->ebt", b.x, b.extras["w"]))
    assert b.x.shape == (1, 20_000, 13, 6) and b.extras["w"].shape == (1, 20_000, 6)


def test_sampler_is_a_pure_function_of_seed_and_step():
    task = make_task(n_points=8)
    a, b = task.sample([0, 1], 5, 16), task.sample([0, 1], 5, 16)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x[0], a.x[1])                                   # seeds differ
    assert not torch.equal(task.sample([0], 6, 16).y, a.y[:1])               # steps differ
    f1, f2 = task.sample([0], 1, 16, stream="fixed"), task.sample([0], 99, 16, stream="fixed")
    assert torch.equal(f1.x, f2.x) and torch.equal(f1.y, f2.y)               # a fixed training set
    ev = task.eval_batch(16, eval_seed=123)
    assert ev.x.shape[0] == 1 and not torch.equal(ev.y, f1.y)


def test_mean_by_query_feature_matches_masked_means():
    task = make_task(K=3, d=3, n_points=4)
    b = task.sample([0], 0, 500)
    values = torch.randn(2, 500, dtype=F64)
    got = mean_by_query_feature(values, b.extras["feature"], 3)
    query = b.extras["feature"][0, :, -1]
    for k in range(3):
        assert torch.allclose(got[:, k], values[:, query == k].mean(1))
    one = mean_by_query_feature(values[:, :1], b.extras["feature"][:, :1], 3)   # one prompt: two features absent
    assert torch.isnan(one).sum(-1).tolist() == [2, 2]


# -- model -----------------------------------------------------------------------------------------
def test_zero_init_attends_uniformly():
    task = make_task(d=4, K=3, n_points=9)
    b = task.sample([0], 0, 32)
    m = SoftmaxAttention(SoftmaxAttentionConfig(), StructuredFeaturesConfig(d=4, K=2), [0, 1], F64)
    pred, cache = m.run_with_cache(b)
    assert pred.shape == (2, 32, 1) and cache["blocks.0.attn.hook_pattern"].shape == (2, 32, 9)
    assert torch.allclose(pred[..., 0], b.y[..., :-1].mean(-1).expand(2, -1))
    m_q = SoftmaxAttention(SoftmaxAttentionConfig(query_in_softmax=True), StructuredFeaturesConfig(d=4, K=2), [0], F64)
    assert torch.allclose(m_q(b)[..., 0], b.y[..., :-1].sum(-1) / 10)        # the query's label counts as 0
    assert torch.allclose(m_q.attention(b).sum(-1), torch.full((1, 32), 0.9, dtype=F64))


@pytest.mark.parametrize("query_in_softmax", [False, True])
def test_full_parametrisation_contains_the_q_model(query_in_softmax):
    task = make_task(d=4, K=4, n_points=6)
    b = task.sample([0], 0, 64)
    s = torch.randn(2, 4, 4, dtype=F64, generator=torch.Generator().manual_seed(0))
    q_model = model_with_scores(s, task.features, query_in_softmax=query_in_softmax)
    full = SoftmaxAttention(SoftmaxAttentionConfig(train="full", query_in_softmax=query_in_softmax), StructuredFeaturesConfig(d=4, K=2), [0, 1], F64)
    fresh_q = SoftmaxAttention(SoftmaxAttentionConfig(query_in_softmax=query_in_softmax), StructuredFeaturesConfig(d=4, K=2), [0, 1], F64)
    assert torch.allclose(full(b), fresh_q(b))                               # same init: uniform attention
    with torch.no_grad():
        full.w_kq[:, :4, :4] = q_model.q
    assert torch.allclose(full(b), q_model(b))
    assert torch.allclose(full.scores(task.features), s)


def test_scores_and_feature_attention():
    task = make_task(d=5, K=3, n_points=20)
    s = torch.randn(3, 3, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    m = model_with_scores(s, task.features)
    assert torch.allclose(m.scores(task.features), s)
    b = task.eval_batch(256, eval_seed=5)
    mass = m.feature_attention(b, 3)                                         # (E, B, K)
    assert mass.shape == (3, 256, 3) and torch.allclose(mass.sum(-1), torch.ones(3, 256, dtype=F64))
    query = b.extras["feature"][0, :, -1]
    assert torch.allclose(mass[:, torch.arange(256), query], m.same_feature_attention(b))
    # each seed of the ensemble is its own model
    alone = model_with_scores(s[1], task.features)
    assert torch.allclose(m(b)[1], alone(b)[0])
    # a token's attention is e^{s_{k,f}} / Σ_i e^{s_{k,f_i}}, from the scores alone
    feat = b.extras["feature"][0]
    logits = s[:, query[:, None], feat[:, :-1]]                              # (E, B, N)
    assert torch.allclose(m.attention(b), torch.softmax(logits, -1))


# -- theory against enumeration and autograd ------------------------------------------------------
@settings(deadline=None, max_examples=20)
@given(K=st.integers(2, 4), n=st.integers(1, 10), seed=st.integers(0, 10_000),
       scale=st.sampled_from([0.3, 2.0, 8.0]))
def test_multinomial_expectation_matches_enumeration(K, n, seed, scale):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(K, generator=g, dtype=F64) + 0.05
    p = p / p.sum()
    s = (scale * torch.randn(K, K, generator=g, dtype=F64)).requires_grad_(True)
    loss_ref, attn_ref = enumerated(s, p, n)
    grad_ref = torch.stack([torch.autograd.grad(loss_ref[k], s, retain_graph=True)[0][k] for k in range(K)])
    stats = theory.score_stats(s.detach(), p, n)
    assert torch.allclose(stats.loss, loss_ref, atol=1e-11, rtol=1e-9)
    assert torch.allclose(stats.attention, attn_ref, atol=1e-11)
    assert torch.allclose(stats.grad, grad_ref, atol=1e-11)


@pytest.mark.parametrize("expectation", ["multinomial", "large_n"])
def test_score_gradient_matches_autograd(expectation):
    p = torch.tensor([0.55, 0.2, 0.15, 0.1], dtype=F64)
    s = (1.5 * torch.randn(4, 4, dtype=F64, generator=torch.Generator().manual_seed(2))).requires_grad_(True)
    (auto,) = torch.autograd.grad(theory.loss(s, p, 40, expectation), s)
    analytic = theory.score_gradient(s.detach(), p, 40, expectation)
    assert torch.allclose(analytic, auto, atol=1e-12, rtol=1e-9)
    # adding a constant to a row of scores leaves the softmax alone
    assert torch.allclose(analytic.sum(-1), torch.zeros(4, dtype=F64), atol=1e-14)
    assert analytic.abs().max() > 1e-3


def test_large_n_is_the_limit_of_the_multinomial():
    p = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
    s = torch.tensor([[1.0, -0.5, 0.3], [0.2, 2.0, -1.0], [-0.7, 0.4, 1.5]], dtype=F64)
    limit = theory.score_stats(s, p, 1, "large_n")
    gaps = [(theory.score_stats(s, p, n).grad - limit.grad).abs().max().item() for n in (50, 500, 5000)]
    assert gaps[0] > 3 * gaps[1] > 9 * gaps[2] and gaps[2] < 1e-3           # O(1/N)


def test_reduced_loss_equals_monte_carlo_of_the_model():
    """ℓ_k at a state = ½E(ŷ − y)² of the model with Q built from it, over sampled w and prompts."""
    K, N = 4, 10                                    # N small: many prompts miss a feature
    task = make_task(d=5, K=K, n_points=N)
    s = 1.5 * torch.randn(K, K, generator=torch.Generator().manual_seed(3), dtype=F64)
    m = model_with_scores(s, task.features)
    b = task.eval_batch(40_000, eval_seed=7)
    with torch.no_grad():
        err = 0.5 * (m(b)[..., 0] - b.y[..., -1]) ** 2
    mean, se = per_feature_mean_and_stderr(err, b, K)
    z = (mean - theory.feature_loss(s, task.p, N)) / se
    assert z.abs().max() < 3, z
    total = theory.loss(s, task.p, N)
    assert abs(err.mean() - total) < min(3 * err.std() / 200, 0.03 * total)
    # negative control: the large-N limit ignores count fluctuations and is rejected
    z_large = (mean - theory.feature_loss(s, task.p, N, "large_n")) / se
    assert z_large.abs().max() > 6


def test_error_floor_is_what_a_concentrated_attention_leaves():
    """Q = λI (λ large): attention sits on same-feature tokens; only prompts without one err."""
    K, N, lam = 4, 10, 30.0
    task = make_task(d=5, K=K, n_points=N, balance="balanced")
    m = model_with_scores(lam * torch.eye(K, dtype=F64), task.features)
    b = task.eval_batch(40_000, eval_seed=11)
    with torch.no_grad():
        err = 0.5 * (m(b)[..., 0] - b.y[..., -1]) ** 2
    feat = b.extras["feature"][0]
    missing = ~(feat[:, :-1] == feat[:, -1:]).any(-1)                        # (B,) no same-feature token
    assert err[0, ~missing].max() < 1e-9
    # the floor is the label variance of the prompts that miss their feature
    unanswerable = 0.5 * b.y[..., -1] ** 2 * missing
    mean_u, se_u = per_feature_mean_and_stderr(unanswerable, b, K)
    floor = torch.tensor([task.error_floor(k) for k in range(K)], dtype=F64)
    assert ((mean_u - floor).abs() < 3 * se_u).all(), (mean_u, floor)
    # on top of it the uniform attention over the other features adds E[Σ_n a_n² | c_k = 0]:
    # with c_{-k} ~ Multinomial(N, 1/(K−1)) that is q + (1 − q)/N, q = 1/(K − 1)
    q = 1 / (K - 1)
    closed_form = floor * (1 + q + (1 - q) / N)
    reduced = theory.feature_loss(lam * torch.eye(K), task.p, N)
    assert torch.allclose(reduced, closed_form, rtol=1e-9)
    mean, se = per_feature_mean_and_stderr(err, b, K)
    assert ((mean - closed_form).abs() < 3 * se).all() and (mean > floor).all()
    assert torch.allclose(theory.error_floor(task.p, N), floor)


# -- dynamics --------------------------------------------------------------------------------------
def test_reduced_dynamics_match_training_on_sampled_prompts():
    """SGD on fresh prompts (batch 2048, the model's own ½·MSE) vs population GD on the scores,
    same lr and steps; a_k from the model's attention on held-out prompts."""
    d, K, N, lr, steps = 4, 3, 20, 2.0, 50
    task = make_task(d=d, K=K, n_points=N)                                   # p = (0.6, 0.2, 0.2)
    V = task.features
    record = [0, 5, 10, 20, 30, 40, 50]
    reduced = theory.gradient_descent(task.p, N, lr, steps, record_steps=record)
    held_out = task.eval_batch(20_000, eval_seed=3)
    m = SoftmaxAttention(SoftmaxAttentionConfig(), StructuredFeaturesConfig(d=d, K=2), [0], F64)
    opt = torch.optim.SGD(m.parameters(), lr=lr)
    scores, same, losses, stderrs = [], [], [], []
    for step in range(steps + 1):
        if step in record:
            scores.append(m.scores(V)[0].detach())
            same.append(mean_by_query_feature(m.same_feature_attention(held_out), held_out.extras["feature"], K)[0])
            with torch.no_grad():
                err = 0.5 * (m(held_out)[..., 0] - held_out.y[..., -1]) ** 2
            mean, se = per_feature_mean_and_stderr(err, held_out, K)
            losses.append(mean)
            stderrs.append(se)
        if step < steps:
            b = task.sample([0], step, 2048)
            opt.zero_grad()
            m.loss(m(b), b).sum().backward()
            opt.step()
    scores, same, losses, stderrs = (torch.stack(v) for v in (scores, same, losses, stderrs))
    assert same[-1].min() > 0.8                                             # it did learn
    dev_a = (same - reduced.same_feature_attention).abs().max()
    assert dev_a < 0.02, dev_a
    assert (scores - reduced.scores).abs().max() < 0.1
    # ℓ_k(t) on held-out prompts: within the held-out sampling error (a few % of ℓ_k)
    assert ((losses - reduced.feature_loss).abs() / stderrs).max() < 4
    # negative control: the large-N dynamics run visibly faster for the minor features at N = 20
    large = theory.gradient_descent(task.p, N, lr, steps, record_steps=record, expectation="large_n")
    assert (same - large.same_feature_attention).abs().max() > 2 * dev_a
    # the gradient lives in span(V) ⊗ span(V): the rest of Q stays at its initial 0
    outside = torch.eye(d, dtype=F64) - V.T @ V
    assert (outside @ m.q[0]).abs().max() < 1e-12 and (m.q[0] @ outside).abs().max() < 1e-12


def test_gradient_descent_approaches_the_flow_and_decreases_the_loss():
    p = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=F64)
    times = [0.0, 20.0, 60.0, 120.0]
    flow = theory.gradient_flow(p, 30, times)
    coarse = theory.gradient_descent(p, 30, 2.0, 60, record_steps=[0, 10, 30, 60])
    fine = theory.gradient_descent(p, 30, 0.5, 240, record_steps=[0, 40, 120, 240])
    assert torch.allclose(fine.time, torch.tensor(times, dtype=F64))
    gap_coarse = (coarse.same_feature_attention - flow.same_feature_attention).abs().max()
    gap_fine = (fine.same_feature_attention - flow.same_feature_attention).abs().max()
    assert gap_fine < 0.01 and gap_fine < 0.5 * gap_coarse                  # first-order in lr
    assert (fine.loss[1:] < fine.loss[:-1]).all()
    # from s = 0 each row keeps summing to 0: the gradient never moves a row's mean (shift invariance)
    assert fine.scores.sum(-1).abs().max() < 1e-12
    with pytest.raises(ValueError, match="record_steps"):
        theory.gradient_descent(p, 30, 1.0, 5, record_steps=[9])


def test_full_training_moves_the_feature_block():
    task = make_task(d=4, K=3, n_points=20)
    m = SoftmaxAttention(SoftmaxAttentionConfig(train="full"), StructuredFeaturesConfig(d=4, K=2), [0], F64)
    opt = torch.optim.SGD(m.parameters(), lr=2.0)
    held_out = task.eval_batch(4096, eval_seed=1)
    before = m.loss(m(held_out), held_out).item()
    for step in range(20):
        b = task.sample([0], step, 2048)
        opt.zero_grad()
        m.loss(m(b), b).sum().backward()
        opt.step()
    assert m.loss(m(held_out), held_out).item() < 0.7 * before
    assert torch.diagonal(m.scores(task.features)[0]).min() > 0.5           # same-feature scores rise


@pytest.mark.parametrize("balance", ["balanced", "imbalanced"])
def test_sampled_features_are_the_inverse_cdf_of_the_seeds_uniforms(balance):
    """The sampler's feature draws are the inverse CDF (a binary search, clamped to the last feature)
    of the seed's uniforms, the stream drawn before the comparison form replaced the search."""
    from icldyn.seeding import generator

    task = make_task(n_points=30, balance=balance)
    b = task.sample([3], 11, 64)
    u = torch.rand(64, 31, generator=generator(3, "data", 11), dtype=torch.float64)
    want = torch.searchsorted(torch.cumsum(task.p, 0), u, right=True).clamp(max=task.config.K - 1)
    assert torch.equal(b.extras["feature"][0], want)
    assert torch.equal(b.x[0], task.features.to(b.x.dtype)[want])
