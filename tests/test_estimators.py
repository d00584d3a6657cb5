"""In-context estimators: every prefix at once equals an explicit per-prompt, per-prefix loop.

References are written independently in numpy (lstsq, explicit solves, sorted distances).
Float64 throughout except where float32 behaviour is the point.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from icldyn.errors import UsageError
from icldyn.estimators import ESTIMATORS, GD, PreconditionedGD, Ridge, estimator_names, make_estimator
from icldyn.estimators.least_squares import pinv_prefix
from icldyn.tasks.base import Batch
from icldyn.tasks.linear_regression import LinearRegressionConfig, LinearRegressionTask

F64 = torch.float64


def make_task(**kw) -> LinearRegressionTask:
    return LinearRegressionTask(LinearRegressionConfig(**kw), dtype=F64)


def random_batch(E, B, T, d, seed=0, noise=0.3) -> Batch:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(E, B, T, d, generator=g, dtype=F64)
    w = torch.randn(E, B, d, generator=g, dtype=F64)
    y = torch.einsum("ebtd,ebd->ebt", x, w) + noise * torch.randn(E, B, T, generator=g, dtype=F64)
    return Batch(x, y, {"w": w})


def per_prefix(batch: Batch, fit) -> np.ndarray:
    """Reference: for every prompt and t ≥ 1, w = fit(X_{<t}, y_{<t}); prediction x_tᵀ w (0 at t = 0)."""
    x, y = batch.x.numpy(), batch.y.numpy()
    out = np.zeros(y.shape)
    for idx in np.ndindex(*y.shape[:-1]):
        for t in range(1, y.shape[-1]):
            out[idx + (t,)] = x[idx + (t,)] @ fit(x[idx][:t], y[idx][:t])
    return out


def lstsq_fit(X, Y):
    return np.linalg.lstsq(X, Y, rcond=None)[0]


def ridge_fit(lam):
    return lambda X, Y: np.linalg.solve(X.T @ X + lam * np.eye(X.shape[1]), X.T @ Y)


# -- least squares -----------------------------------------------------------------------------

@settings(deadline=None, max_examples=25)
@given(T=st.integers(1, 12), d=st.integers(1, 7), seed=st.integers(0, 10**6))
def test_ols_equals_min_norm_lstsq_per_prefix(T, d, seed):
    """Including t < d (min-norm interpolation), t = d, T ≤ d and T = 1."""
    batch = random_batch(1, 3, T, d, seed)
    pred = make_estimator("ols", make_task(d=d))(batch).numpy()
    np.testing.assert_allclose(pred, per_prefix(batch, lstsq_fit), atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("lam", [1e-3, 0.25, 4.0])
def test_ridge_equals_explicit_solve_per_prefix(lam):
    batch = random_batch(2, 4, 11, 5, seed=1)
    pred = Ridge(make_task(d=5), lam=lam)(batch).numpy()
    np.testing.assert_allclose(pred, per_prefix(batch, ridge_fit(lam)), atol=1e-10, rtol=1e-10)


def test_ridge_default_is_bayes_lambda_sigma_squared():
    batch = random_batch(1, 3, 9, 4, seed=2)
    pred = make_estimator("ridge", make_task(d=4, noise_std=0.7))(batch).numpy()
    np.testing.assert_allclose(pred, per_prefix(batch, ridge_fit(0.49)), atol=1e-10, rtol=1e-10)


def test_ridge_tends_to_ols_as_lambda_vanishes():
    batch = random_batch(1, 4, 10, 4, seed=3)
    ols = per_prefix(batch, lstsq_fit)
    errs = [np.abs(Ridge(make_task(d=4), lam=lam)(batch).numpy() - ols).max() for lam in (1e-2, 1e-4, 1e-6)]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-3
    # σ = 0 means λ = 0: the min-norm solution itself, also before d points
    exact = make_estimator("ridge", make_task(d=4))(batch).numpy()
    np.testing.assert_allclose(exact, ols, atol=1e-9)


def test_degenerate_prompts_still_give_min_norm_solution():
    """Duplicated inputs and inputs confined to a subspace take the pseudo-inverse fallback."""
    batch = random_batch(1, 3, 10, 4, seed=4)
    x = batch.x.clone()
    # pivots that vanish only up to rounding, so the rank test (not a division by zero) must catch them
    x[0, 0, 2] = x[0, 0, 0] + 0.5 * x[0, 0, 1]  # a dependent input among the first d
    x[0, 1] = x[0, 1, :, :3] @ torch.randn(3, 4, dtype=F64)  # inputs of rank 3 < d in a generic subspace
    x[0, 2, 5] = x[0, 2, 1]  # a repeated input after the first d
    batch = Batch(x, batch.y)
    pred = make_estimator("ols", make_task(d=4))(batch).numpy()
    np.testing.assert_allclose(pred, per_prefix(batch, lstsq_fit), atol=1e-8)
    np.testing.assert_allclose(pinv_prefix(x[0], batch.y[0], 0.1).numpy(), per_prefix(batch, ridge_fit(0.1))[0],
                               atol=1e-9)


def test_noiseless_ols_recovers_w_from_d_points_on():
    task = make_task(d=6, n_points=12, covariance="rotated")
    batch = task.sample([0, 1], step=0, batch_size=16)
    pred = make_estimator("ols", task)(batch)
    torch.testing.assert_close(pred[..., 6:], batch.y[..., 6:], atol=1e-9, rtol=1e-9)
    assert (pred[..., 1:6] - batch.y[..., 1:6]).abs().amax() > 1e-2  # not before: under-determined


@pytest.mark.parametrize("name", ["ols", "ridge"])
def test_float32_batches_are_solved_in_float64(name):
    """float32 in and out, but the answer is the float64 one for the same (rounded) data at every
    prefix, including t ≈ d where float32 arithmetic would lose digits to cond(X_d)²."""
    batch = random_batch(1, 64, 30, 8, seed=5)
    x32, y32 = batch.x.float(), batch.y.float()
    task = make_task(d=8, noise_std=0.3)
    single = make_estimator(name, task)(Batch(x32, y32))
    assert single.dtype == torch.float32
    fit = lstsq_fit if name == "ols" else ridge_fit(0.09)
    exact = per_prefix(Batch(x32.double(), y32.double()), fit)
    np.testing.assert_allclose(single.double().numpy(), exact, rtol=1e-6, atol=1e-6)


# -- averaging, GD, preconditioned GD ----------------------------------------------------------

def test_averaging_closed_form():
    batch = random_batch(1, 3, 8, 3, seed=6)
    ref = per_prefix(batch, lambda X, Y: (Y[:, None] * X).mean(0))
    np.testing.assert_allclose(make_estimator("averaging", make_task(d=3))(batch).numpy(), ref, atol=1e-12)


def gd_reference(steps, lr_of_t):
    def fit(X, Y):
        t, w = len(Y), np.zeros(X.shape[1])
        for _ in range(steps):
            w = w - lr_of_t(t) * X.T @ (X @ w - Y) / t
        return w
    return fit


@pytest.mark.parametrize("steps,lr", [(1, 0.3), (3, 0.2), (4, "stable")])
def test_gd_equals_explicit_loop(steps, lr):
    d, task = 4, make_task(d=4)
    batch = random_batch(2, 3, 9, d, seed=7)
    lr_of_t = (lambda t: lr) if isinstance(lr, float) else (lambda t: t / (np.sqrt(t) + np.sqrt(d)) ** 2)
    pred = GD(task, steps=steps, lr=lr)(batch).numpy()
    np.testing.assert_allclose(pred, per_prefix(batch, gd_reference(steps, lr_of_t)), atol=1e-10)


def test_gd_1_uses_isotropic_optimal_step_and_gd_opt_agrees_on_isotropic_gaussians():
    d, task = 5, make_task(d=5)
    batch = random_batch(1, 4, 9, d, seed=8)
    ref = per_prefix(batch, gd_reference(1, lambda t: t / (t + d + 1)))
    np.testing.assert_allclose(make_estimator("gd_1", task)(batch).numpy(), ref, atol=1e-12)
    np.testing.assert_allclose(make_estimator("gd_opt", task)(batch).numpy(), ref, atol=1e-12)


def test_gd_with_many_steps_converges_to_ols_when_over_determined():
    batch = random_batch(1, 4, 20, 3, seed=9)
    pred = GD(make_task(d=3), steps=400, lr="stable")(batch).numpy()
    np.testing.assert_allclose(pred[..., 8:], per_prefix(batch, lstsq_fit)[..., 8:], atol=1e-6)


@pytest.mark.parametrize("cfg", [dict(d=5, n_points=5, inputs="uniform", uniform_a=1.5),
                                 dict(d=4, n_points=6, covariance="anisotropic", noise_std=0.8)])
def test_gd_opt_step_is_the_monte_carlo_optimum(cfg):
    """The best scalar η for ŷ = η h·x_q, fitted by least squares on samples, matches the formula.

    Uniform inputs separate it from the Gaussian formula (t + d − 0.2 vs t + d + 1: 12% at t = 5).
    """
    task = make_task(**cfg)
    batch = task.sample([0], 0, 40000)
    n = task.config.n_points
    feature = make_estimator("averaging", task)(batch)[0, :, n]
    fitted = float((feature * batch.y[0, :, n]).sum() / feature.pow(2).sum())
    formula = float(GD(task, steps=1).step_sizes(n + 1, batch.x)[n])
    assert abs(fitted / formula - 1) < 0.04
    if cfg.get("inputs") == "uniform":
        gaussian = n / (task.config.uniform_a**2 / 3 * (n + task.config.d + 1))
        assert abs(fitted / gaussian - 1) > 0.08


def test_preconditioned_gd_is_gd_1_for_identity_covariance():
    task = make_task(d=4)
    batch = random_batch(2, 3, 10, 4, seed=10)
    torch.testing.assert_close(make_estimator("preconditioned_gd", task)(batch),
                               make_estimator("gd_1", task)(batch), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("n", [None, 7])
def test_preconditioned_gd_with_anisotropic_covariance(n):
    task = make_task(d=3, covariance="rotated", eigenvalues=[2.0, 0.5, 0.1])
    S = task.covariance.numpy()
    batch = task.sample([0], 0, 4, n_points=9)

    def fit(X, Y):
        m = n or len(Y)
        gamma = (1 + 1 / m) * S + np.trace(S) / m * np.eye(3)
        return np.linalg.solve(gamma, (Y[:, None] * X).mean(0))  # Γ symmetric: h Γ⁻¹ x = (Γ⁻¹ h)·x

    pred = PreconditionedGD(task, n=n)(batch).numpy()
    np.testing.assert_allclose(pred, per_prefix(batch, fit), atol=1e-12)


# -- kNN ---------------------------------------------------------------------------------------

def test_knn_equals_brute_force():
    batch = random_batch(2, 3, 9, 2, seed=11)

    def ref(x, y):
        out = np.zeros(len(y))
        for t in range(1, len(y)):
            near = np.argsort(np.linalg.norm(x[:t] - x[t], axis=1))[:3]
            out[t] = y[near].mean()
        return out

    x, y = batch.x.numpy(), batch.y.numpy()
    expect = np.stack([np.stack([ref(x[e, b], y[e, b]) for b in range(3)]) for e in range(2)])
    np.testing.assert_allclose(make_estimator("knn_3", make_task(d=2))(batch).numpy(), expect, atol=1e-12)


# -- shapes, registry, Bayes optimality --------------------------------------------------------

@pytest.mark.parametrize("name", LinearRegressionTask.estimators)  # the regression estimators
def test_shapes_and_seed_independence(name):
    """(E, B, T) out; each seed's prompts are predicted as if alone; t = 0 predicts 0; any leading axes;
    evaluating in chunks changes nothing."""
    task = make_task(d=3, noise_std=0.5)
    batch = random_batch(3, 4, 7, 3, seed=12)
    est = make_estimator(name, task)
    pred = est(batch)
    assert pred.shape == (3, 4, 7) and pred.dtype == F64
    assert torch.all(pred[..., 0] == 0)
    alone = est(Batch(batch.x[1:2], batch.y[1:2]))
    torch.testing.assert_close(pred[1:2], alone, atol=1e-10, rtol=1e-10)
    flat = est(Batch(batch.x.reshape(12, 7, 3), batch.y.reshape(12, 7)))
    torch.testing.assert_close(flat.reshape(3, 4, 7), pred, atol=1e-10, rtol=1e-10)
    est.chunk_elements = 5 * 7 * (7 + 3)  # chunks of 5 prompts: 12 = 5 + 5 + 2
    torch.testing.assert_close(est(batch), pred, atol=1e-10, rtol=1e-10)


def test_registry_covers_the_task_and_rejects_bad_input():
    assert set(LinearRegressionTask.estimators) <= set(estimator_names())
    assert {"zero", "averaging", "ols", "ridge", "gd_1", "gd_5", "preconditioned_gd", "knn_3"} <= set(ESTIMATORS)
    task = make_task(d=3)
    assert make_estimator("gd_5", task).name == "gd_5"
    with pytest.raises(UsageError, match="ridge"):
        make_estimator("ridg", task)
    with pytest.raises(UsageError):
        make_estimator("ridge", task, alpha=1.0)
    with pytest.raises(UsageError):
        GD(task, steps=1, lr="fast")
    with pytest.raises(UsageError):
        make_estimator("ols", task)(Batch(torch.zeros(1, 2, 5, 3), torch.zeros(1, 2, 4)))


def test_ridge_is_bayes_optimal_at_the_query():
    """With w ~ N(0, I) and noise σ, the posterior mean has the least MSE; paired differences are decisive."""
    task = make_task(d=4, n_points=8, noise_std=1.0)
    batch = task.sample([0], 0, 5000)  # every gap is ≥ 8 standard errors here
    err = {name: (make_estimator(name, task)(batch)[0, :, -1] - batch.y[0, :, -1]).pow(2)
           for name in LinearRegressionTask.estimators}
    for name in LinearRegressionTask.estimators:
        if name == "ridge":
            continue
        diff = err[name] - err["ridge"]
        assert diff.mean() > 4 * diff.std() / len(diff) ** 0.5, name
