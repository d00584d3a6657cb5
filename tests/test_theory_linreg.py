"""Closed forms of theory/linear_regression.py against Monte-Carlo, autograd and direct GD.

The Monte-Carlo here samples prompts itself (Cholesky of Σ, float64, chunked); it never calls
a formula. The task-side closed form (`LinearRegressionTask.population_risk`) is checked
against prompts drawn by the task's own sampler, so both implementations are validated.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from icldyn.models.lsa import LSA, LSAConfig
from icldyn.tasks.base import Batch
from icldyn.tasks.linear_regression import LinearRegressionConfig, LinearRegressionTask
from icldyn.theory import linear_regression as th

P = 200_000  # Monte-Carlo prompts
CHUNK = 50_000
F64 = torch.float64


def _rotation(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    return q * torch.sign(torch.diagonal(r))


SIGMAS = {
    "isotropic": torch.eye(3, dtype=F64),
    "anisotropic": torch.diag(torch.tensor([1.5, 0.5, 0.2], dtype=F64)),
    "rotated": _rotation(3, 7) @ torch.diag(torch.tensor([1.0, 0.4, 0.1], dtype=F64)) @ _rotation(3, 7).T,
}


def sample_prompts(sigma, n, noise_std, *, inputs="gaussian", a=1.0, prompts=P, seed=0):
    """h (P, d), x_q (P, d), y_q (P,) of prompts with n examples, drawn directly, in chunks.

    Gaussian inputs x ~ N(0, sigma); uniform inputs U(−a, a)^d ignore sigma except for d."""
    d = sigma.shape[0]
    g = torch.Generator().manual_seed(seed)
    chol = torch.linalg.cholesky(sigma)
    hs, xqs, yqs = [], [], []
    for start in range(0, prompts, CHUNK):
        b = min(CHUNK, prompts - start)
        if inputs == "gaussian":
            x = torch.randn(b, n + 1, d, generator=g, dtype=F64) @ chol.T
        else:
            x = (torch.rand(b, n + 1, d, generator=g, dtype=F64) * 2 - 1) * a
        w = torch.randn(b, d, generator=g, dtype=F64)
        y = (x * w[:, None, :]).sum(-1) + noise_std * torch.randn(b, n + 1, generator=g, dtype=F64)
        hs.append((y[:, :n, None] * x[:, :n]).mean(1))
        xqs.append(x[:, n])
        yqs.append(y[:, n])
    return torch.cat(hs), torch.cat(xqs), torch.cat(yqs)


def mc_risk(B, h, xq, yq):
    """Mean and standard error of (hᵀ B x_q − y_q)² over the sampled prompts."""
    sq = (torch.einsum("pi,ij,pj->p", h, B, xq) - yq) ** 2
    return sq.mean().item(), sq.std().item() / math.sqrt(len(sq))


def _random_B(d, seed=3):
    g = torch.Generator().manual_seed(seed)
    return 0.6 * torch.randn(d, d, generator=g, dtype=F64)


# ---------------------------------------------------------------- risk against Monte-Carlo --
@pytest.mark.parametrize("noise_std", [0.0, 1.0])
@pytest.mark.parametrize("kind", list(SIGMAS))
def test_risk_matches_monte_carlo(kind, noise_std):
    sigma, n = SIGMAS[kind], 8
    h, xq, yq = sample_prompts(sigma, n, noise_std, seed=list(SIGMAS).index(kind) * 10 + int(noise_std > 0))
    for B in (_random_B(3), th.optimal_matrix(sigma, n), th.optimal_matrix(sigma, n, noise_std)):
        mean, se = mc_risk(B, h, xq, yq)
        formula = th.risk(B, sigma, n, noise_std).item()
        assert abs(formula / mean - 1) < 0.02, (kind, noise_std, formula, mean, se)


@pytest.mark.parametrize("noise_std", [0.0, 1.0])
def test_risk_at_a_different_test_length(noise_std):
    """A matrix trained for N = 5 used on prompts of M = 20: the formula needs Γ_M, not Γ_N."""
    sigma, n_train, m = SIGMAS["anisotropic"], 5, 20
    B = th.optimal_matrix(sigma, n_train)
    h, xq, yq = sample_prompts(sigma, m, noise_std, seed=11)
    mean, _ = mc_risk(B, h, xq, yq)
    assert abs(th.risk(B, sigma, n_train, noise_std, n_test=m).item() / mean - 1) < 0.02
    # the same B at the training length is a detectably different number (the check has teeth)
    assert abs(th.risk(B, sigma, n_train, noise_std).item() / mean - 1) > 0.1


def test_risk_accepts_eigenvalues_and_batches_of_matrices():
    lam = torch.tensor([1.5, 0.5, 0.2], dtype=F64)
    Bs = torch.stack([_random_B(3, s) for s in range(4)])
    batched = th.risk(Bs, lam, 8)
    assert batched.shape == (4,)
    for k in range(4):
        assert torch.allclose(batched[k], th.risk(Bs[k], torch.diag(lam), 8), rtol=1e-13)


@pytest.mark.parametrize("noise_std", [0.0, 1.0])
@pytest.mark.parametrize("kind", ["isotropic", "anisotropic", "rotated"])
def test_task_side_population_risk_matches_its_own_sampler(kind, noise_std):
    """The closed form used for exact-gradient training, against the task's own prompts."""
    cfg = LinearRegressionConfig(d=3, n_points=6, covariance=kind, noise_std=noise_std,
                                 eigenvalues=None if kind == "isotropic" else [1.2, 0.5, 0.15])
    task = LinearRegressionTask(cfg, dtype=F64)
    Bs = [_random_B(3, 5), th.optimal_matrix(task.covariance, 6)]
    batch = task.eval_batch(P, eval_seed=4)
    x, y = batch.x[0], batch.y[0]
    h = (y[:, :-1, None] * x[:, :-1]).mean(1)
    for B in Bs:
        mean, _ = mc_risk(B, h, x[:, -1], y[:, -1])
        assert abs(task.population_risk(B).item() / mean - 1) < 0.02, (kind, noise_std)


# ----------------------------------------------------------------------------- optimum --
def _spd(d, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=F64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=F64)


@settings(deadline=None, max_examples=25)
@given(d=st.integers(1, 5), n=st.integers(1, 40), seed=st.integers(0, 10_000),
       noise_std=st.sampled_from([0.0, 0.3, 1.0]))
def test_optimal_matrix_is_the_minimiser(d, n, seed, noise_std):
    sigma = _spd(d, seed)
    B = th.optimal_matrix(sigma, n, noise_std).clone().requires_grad_(True)
    r = th.risk(B, sigma, n, noise_std)
    (grad,) = torch.autograd.grad(r, B)
    scale = torch.linalg.matrix_norm(sigma @ sigma)
    assert torch.linalg.matrix_norm(grad) < 1e-10 * scale
    assert torch.allclose(r.detach(), th.optimal_risk(sigma, n, noise_std), rtol=1e-10, atol=1e-12)
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(3):
        delta = 1e-2 * torch.randn(d, d, generator=g, dtype=F64)
        assert th.risk(B.detach() + delta, sigma, n, noise_std) > r.detach()


@pytest.mark.parametrize("d,n", [(1, 1), (3, 10), (5, 20), (8, 3)])
def test_isotropic_optimal_risk(d, n):
    expected = d * (d + 1) / (n + d + 1)
    assert th.optimal_risk(torch.eye(d, dtype=F64), n).item() == pytest.approx(expected, rel=1e-12)


def test_optimal_risk_matches_monte_carlo_isotropic():
    """The ZFB value d(d+1)/(N+d+1) reached by the sampled Γ⁻¹ predictor."""
    d, n = 4, 10
    h, xq, yq = sample_prompts(torch.eye(d, dtype=F64), n, 0.0, seed=21)
    mean, _ = mc_risk(th.optimal_matrix(torch.eye(d), n), h, xq, yq)
    assert abs(mean / (d * (d + 1) / (n + d + 1)) - 1) < 0.02


def test_zfb_limit_is_balanced_and_a_stationary_point():
    sigma, n = SIGMAS["rotated"], 7
    v, U = th.zfb_limit(sigma, n)
    gamma_inv = torch.linalg.inv((1 + 1 / n) * sigma + torch.trace(sigma) / n * torch.eye(3, dtype=F64))
    assert torch.allclose(v * U, gamma_inv, rtol=1e-12, atol=1e-14)
    assert v.item() == pytest.approx(torch.linalg.matrix_norm(U).item(), rel=1e-12)
    v, U = v.clone().requires_grad_(True), U.clone().requires_grad_(True)
    gv, gU = torch.autograd.grad(th.risk(v * U, sigma, n), (v, U))
    assert gv.abs() < 1e-12 and torch.linalg.matrix_norm(gU) < 1e-12


# --------------------------------------------------------------------- von Oswald --
def _gd_step_prediction(x, y, eta):
    """One explicit GD step of size η on (1/2n) Σ (w·x_i − y_i)² from w = 0, via autograd."""
    n = x.shape[-2] - 1
    w = torch.zeros(*x.shape[:-2], x.shape[-1], dtype=x.dtype, requires_grad=True)
    loss = 0.5 * ((torch.einsum("...nd,...d->...n", x[..., :n, :], w) - y[..., :n]) ** 2).mean(-1).sum()
    (grad,) = torch.autograd.grad(loss, w)
    return ((w - eta * grad) * x[..., n, :]).sum(-1)


@pytest.mark.parametrize("mask_query", [False, True])
@pytest.mark.parametrize("d,n,eta", [(1, 1, 0.3), (3, 9, 0.7), (6, 4, 2.5)])
def test_von_oswald_lsa_is_one_gd_step(d, n, eta, mask_query):
    model = LSA(LSAConfig(mask_query=mask_query), LinearRegressionConfig(d=d), seeds=[0], dtype=F64)
    w_pv, w_kq = th.von_oswald_weights(d, eta)
    with torch.no_grad():
        model.w_pv[0].data[0] = w_pv
        model.w_kq[0].data[0] = w_kq
    g = torch.Generator().manual_seed(d * 100 + n)
    x = torch.randn(1, 64, n + 1, d, generator=g, dtype=F64)
    y = torch.randn(1, 64, n + 1, generator=g, dtype=F64)  # any labels, linear or not
    with torch.no_grad():
        pred = model(Batch(x, y))[..., 0]
    gd = _gd_step_prediction(x, y, eta)
    assert torch.allclose(pred, gd, rtol=1e-12, atol=1e-12 * gd.abs().max().item())


def test_von_oswald_sign_flipped_original_reads_out_the_same():
    """Their layer (W_V = [[0,0],[0,−I]], W_K = W_Q = [[I,0],[0,0]], η/n) written literally:
    the query's y-slot holds −ŷ; flipping it back gives our LSA's prediction."""
    d, n, eta = 4, 7, 0.9
    g = torch.Generator().manual_seed(5)
    x = torch.randn(32, n + 1, d, generator=g, dtype=F64)
    y = torch.randn(32, n + 1, generator=g, dtype=F64)
    e = torch.cat([x, y[..., None]], -1)
    e[:, n, d] = 0.0
    W_K = torch.zeros(d + 1, d + 1, dtype=F64)
    W_K[:d, :d] = torch.eye(d, dtype=F64)
    W_V = torch.zeros(d + 1, d + 1, dtype=F64)
    W_V[d, d] = -1.0
    keys = e[:, :n] @ W_K.T
    values = e[:, :n] @ W_V.T
    query = e[:, n] @ W_K.T
    update = eta / n * torch.einsum("bid,bi->bd", values, torch.einsum("bid,bd->bi", keys, query))
    theirs = -(e[:, n] + update)[:, d]
    w_pv, w_kq = th.von_oswald_weights(d, eta)
    Z = e.transpose(-1, -2)                                  # (B, d+1, n+1)
    ours = (Z[..., -1:] + w_pv @ (Z @ Z.transpose(-1, -2) / n) @ w_kq @ Z[..., -1:])[:, d, 0]
    assert torch.allclose(theirs, ours, rtol=1e-12, atol=1e-13)


# ------------------------------------------------------------ optimal one-step rate --
def _mc_best_eta(h, xq, yq):
    """The MC risk of ŷ = η hᵀx_q is exactly the parabola η² E p² − 2η E[p y] + E y²: its vertex."""
    p = (h * xq).sum(-1)
    return ((p * yq).mean() / (p * p).mean()).item()


def test_optimal_one_step_lr_gaussian_by_monte_carlo():
    d, n = 6, 4                                  # η* = 4/11: far from the naive η = 1
    h, xq, yq = sample_prompts(torch.eye(d, dtype=F64), n, 0.0, seed=31)
    formula = th.optimal_one_step_lr_gaussian(n, d)
    best = _mc_best_eta(h, xq, yq)
    assert abs(best / formula - 1) < 0.03
    assert abs(best / (n / (n + d)) - 1) > 0.06  # a neighbouring formula is excluded


def test_optimal_one_step_lr_uniform_by_monte_carlo():
    d, n, a = 3, 3, 0.5                          # von Oswald's U(−r/2, r/2) with r = 1
    h, xq, yq = sample_prompts(torch.eye(d, dtype=F64), n, 0.0, inputs="uniform", a=a, seed=41)
    formula = th.optimal_one_step_lr_uniform(n, d, a)
    best = _mc_best_eta(h, xq, yq)
    assert abs(best / formula - 1) < 0.03
    # the Gaussian-moment formula with the same variance a²/3 is 20 % off and must be excluded
    gaussian_like = 3 * n / (a**2 * (n + d + 1))
    assert abs(best / gaussian_like - 1) > 0.1


def test_one_step_gaussian_rate_matches_the_optimal_matrix():
    d, n = 5, 12
    assert torch.allclose(th.optimal_matrix(torch.eye(d), n),
                          th.optimal_one_step_lr_gaussian(n, d) * torch.eye(d, dtype=F64), rtol=1e-13)


def test_bad_arguments_fail_clearly():
    with pytest.raises(ValueError, match="n must be"):
        th.gamma(torch.eye(2), 0)
    with pytest.raises(ValueError, match="sigma"):
        th.risk(torch.eye(2), torch.ones(2, 3), 4)
    with pytest.raises(ValueError, match="a must"):
        th.optimal_one_step_lr_uniform(3, 2, 0.0)
