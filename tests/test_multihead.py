"""Multi-task regression task, multi-head softmax attention model and their numerics (issue 5)."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from icldyn.errors import UsageError
from icldyn.models.multihead_attention import MultiheadAttention, MultiheadAttentionConfig
from icldyn.tasks import TASKS
from icldyn.tasks.base import Batch
from icldyn.tasks.linear_regression import LinearRegressionConfig, LinearRegressionTask
from icldyn.tasks.multitask_regression import MultitaskRegressionConfig, MultitaskRegressionTask
from icldyn.estimators import make_estimator
from icldyn.estimators.multihead import centred_gd_predict
from icldyn.theory import multihead as mh

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # these are many small ops: on a loaded 2-core box a second OpenMP thread only spins (10x slower)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make(d0=3, I=2, L=12, noise=0.0, orthogonal=True, H=2, param="full", seeds=(0,), scale=1e-2):
    task = MultitaskRegressionTask(MultitaskRegressionConfig(d0=d0, n_tasks=I, n_points=L, noise_std=noise,
                                                             orthogonal=orthogonal), F64)
    cfg = MultiheadAttentionConfig(n_heads=H, n_tasks=I, parametrisation=param, init_scale=scale)
    return task, MultiheadAttention(cfg, task, list(seeds), F64)


def set_reduced(model, omega, mu):
    with torch.no_grad():
        model.omega.copy_(omega)
        model.mu.copy_(mu)


# -- task ------------------------------------------------------------------------------------------
def test_sampler_labels_are_the_least_squares_fit_of_G():
    task = MultitaskRegressionTask(MultitaskRegressionConfig(d0=3, n_tasks=3, n_points=30, orthogonal=True), F64)
    b = task.sample([0, 1], step=5, batch_size=6)
    assert b.x.shape == (2, 6, 31, 9) and b.y.shape == (2, 6, 31, 3)
    G = b.extras["G"]
    fit = torch.linalg.lstsq(b.x[:, :, :-1], b.y[:, :, :-1]).solution          # (E, B, d, I)
    torch.testing.assert_close(fit, G, atol=1e-9, rtol=0)
    torch.testing.assert_close(b.y[:, :, -1], torch.einsum("ebd,ebdi->ebi", b.x[:, :, -1], G))
    # G = Φ blockdiag(β) Ψᵀ: rotating back leaves β_i in block i, column i, and zeros elsewhere
    core = task.phi.T @ G @ task.psi                                           # (E, B, d, I)
    expect = torch.zeros_like(core)
    for i in range(3):
        expect[..., 3 * i:3 * i + 3, i] = b.extras["beta"][..., i, :]
    torch.testing.assert_close(core, expect, atol=1e-12, rtol=0)
    torch.testing.assert_close(task.phi @ task.phi.T, torch.eye(9, dtype=F64))
    torch.testing.assert_close(task.psi @ task.psi.T, torch.eye(3, dtype=F64))


def test_sampler_reuses_the_linear_regression_stream_and_is_per_step_deterministic():
    task = TASKS["multitask-regression"][1](MultitaskRegressionConfig(d0=2, n_tasks=2, n_points=7), F64)
    lin = LinearRegressionTask(LinearRegressionConfig(d=4, n_points=7), F64)
    b, ref = task.sample([3], 2, 5), lin.sample([3], 2, 5)
    torch.testing.assert_close(b.x, ref.x)                           # identity Φ: the same inputs
    torch.testing.assert_close(b.extras["beta"].flatten(-2), ref.extras["w"] / 2**0.5)
    torch.testing.assert_close(task.sample([3], 2, 5).y, b.y)
    assert not torch.equal(task.sample([3], 3, 5).x, b.x)
    assert task.eval_batch(4, 11).x.shape == (1, 4, 8, 4)


def test_sampler_noise_is_per_task_with_std_sigma_and_spares_the_query():
    task = MultitaskRegressionTask(MultitaskRegressionConfig(d0=2, n_tasks=2, n_points=50, noise_std=0.5,
                                                             orthogonal=True), F64)
    b = task.sample([0], 0, 400)
    resid = b.y - torch.einsum("ebtd,ebdi->ebti", b.x, b.extras["G"])
    assert resid[:, :, -1].abs().max() < 1e-12
    std = resid[:, :, :-1].std()
    assert abs(float(std) - 0.5) < 0.01                              # 40 000 draws: se ≈ 0.002


# -- model -----------------------------------------------------------------------------------------
def test_init_is_decomposable_and_probes_read_it_off():
    task, full = make(I=3, H=4, seeds=(0, 1, 2), scale=1e-2)
    _, red = make(I=3, H=4, seeds=(0, 1, 2), scale=1e-2, param="reduced")
    omega, mu = full.omega_mu()
    assert omega.shape == (3, 4, 3)
    torch.testing.assert_close(omega, red.omega.detach())            # projection recovers (ω, μ)
    torch.testing.assert_close(mu, red.mu.detach())
    assert ((omega >= 1e-2 - 1e-15) & (omega <= 1.1e-2)).all()
    torch.testing.assert_close(omega, mu, rtol=1e-12, atol=0)        # ω = μ at init
    assert full.off_decomposable().max() < 1e-15
    r = full.head_specialisation()
    assert r.shape == (3, 4) and (r >= 1 / 3).all() and (r < 1 / 3 * 1.25).all()   # near-symmetric
    _, one = make(I=3, H=4, seeds=(2,), scale=1e-2)
    torch.testing.assert_close(one.omega_mu()[0][0], omega[2])       # each seed's init is its own


def test_head_specialisation_is_one_for_a_head_on_one_task_and_off_decomposable_sees_leaks():
    task, model = make(I=2, H=2, param="full", orthogonal=False)
    with torch.no_grad():
        W, U = model.matrices()
        W[0, 0] = 0.7 * model.proj_w[1]
        U[0, 0] = -0.3 * model.proj_u[1]
    r = model.head_specialisation()
    assert float(r[0, 0]) == pytest.approx(1.0)
    assert model.off_decomposable().max() < 1e-15
    with torch.no_grad():
        W[0, 1, 0, 5] += 0.02                                        # a leak across blocks 0..2 and 3..5
    assert float(model.off_decomposable()[0]) == pytest.approx(0.02, rel=1e-9)


def test_forward_hooks_and_basis_mismatch():
    task, model = make(I=2, H=3, L=9, seeds=(0, 1))
    b = task.sample([0, 1], 0, 5)
    pred, cache = model.run_with_cache(b)
    assert pred.shape == (2, 5, 2)
    assert cache["blocks.0.attn.hook_pattern"].shape == (2, 5, 3, 9)
    torch.testing.assert_close(cache["blocks.0.attn.hook_pattern"].sum(-1), torch.ones(2, 5, 3, dtype=F64))
    assert model.loss(pred, b).shape == (2,)
    with pytest.raises(UsageError, match="n_tasks"):
        MultiheadAttention(MultiheadAttentionConfig(n_tasks=3), task, [0], F64)


@settings(deadline=None, max_examples=8)
@given(I=st.integers(1, 3), d0=st.integers(1, 3), H=st.integers(1, 3), orthogonal=st.booleans())
def test_reduced_and_full_parametrisations_agree_on_loss_and_gradients(I, d0, H, orthogonal):
    """Same (W, U) ⇒ same loss; chain rule ∂L/∂ω_i = ⟨∂L/∂W, Φ_iΦ_iᵀ⟩, ∂L/∂μ_i = ψ_iᵀ(∂L/∂U)ψ_i."""
    task, red = make(d0=d0, I=I, H=H, L=6, noise=0.3, orthogonal=orthogonal, param="reduced", seeds=(0, 1))
    _, full = make(d0=d0, I=I, H=H, L=6, noise=0.3, orthogonal=orthogonal, param="full", seeds=(0, 1))
    g = torch.Generator().manual_seed(I * 100 + d0 * 10 + H)
    set_reduced(red, torch.randn(2, H, I, generator=g, dtype=F64), torch.randn(2, H, I, generator=g, dtype=F64))
    W, U = red.matrices()
    with torch.no_grad():
        full.key_query.copy_(W)
        full.output_value.copy_(U)
    b = task.sample([0, 1], 1, 16)
    l_red, l_full = red.loss(red(b), b), full.loss(full(b), b)
    torch.testing.assert_close(l_red, l_full, rtol=1e-12, atol=1e-14)
    l_red.sum().backward()
    l_full.sum().backward()
    gW, gU = full.key_query.grad, full.output_value.grad
    torch.testing.assert_close(red.omega.grad, torch.einsum("ehab,iab->ehi", gW, full.proj_w), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(red.mu.grad, torch.einsum("ehab,iab->ehi", gU, full.proj_u), rtol=1e-10, atol=1e-12)


# -- decomposability under full-matrix training --------------------------------------------------------
def symmetrise(batch: Batch, phi: torch.Tensor, psi: torch.Tensor, d0: int) -> Batch:
    """Every prompt's images under a finite symmetry group of the data distribution.

    In the canonical coordinates (x̃ = Φᵀx, ỹ = Ψᵀy) the distribution is invariant under
    x̃_{B_i} → s_i g x̃_{B_i} (g a signed cyclic permutation of the d₀ coordinates, the same in every
    block; s_i = ±1 per block: β_i → s_i g β_i) and ỹ_i → t_i ỹ_i (t_i = ±1: β_i, ε_i → t_i β_i, t_i ε_i).
    A decomposable model is equivariant, so averaging the loss over the orbit makes the loss invariant
    under conjugation by the group, and its gradient at a decomposable point commutes with it. Matrices
    commuting with all block-diagonal s_i g are Σ_i c_i Φ_iΦ_iᵀ (sign flips force block-diagonal, the
    signed cyclic group acts irreducibly on R^{d₀} so each block is a scalar); diagonal sign flips
    force U diagonal in Ψ. Hence every GD step stays exactly decomposable on this batch.
    """
    I = psi.shape[0]
    signed_perms = []
    for shift in range(d0):
        perm = torch.roll(torch.eye(d0, dtype=F64), shift, 0)
        for signs in itertools.product([1.0, -1.0], repeat=d0):
            signed_perms.append(torch.diag(torch.tensor(signs, dtype=F64)) @ perm)
    flips = [torch.tensor(s, dtype=F64) for s in itertools.product([1.0, -1.0], repeat=I)]
    gx = torch.stack([torch.block_diag(*[s_i * g for s_i in s]) for g in signed_perms for s in flips])  # (K, d, d)
    gy = torch.stack([torch.diag(t) for t in flips])                                                  # (J, I, I)
    x = batch.x @ phi                                                # canonical, row vectors
    y = batch.y @ psi
    xs = torch.einsum("ebtd,kcd->kebtc", x, gx) @ phi.T              # (K, E, B, T, d)
    ys = torch.einsum("ebti,jci->jebtc", y, gy) @ psi.T              # (J, E, B, T, I)
    K, J = len(gx), len(gy)
    xs = xs[:, None].expand(K, J, *xs.shape[1:])
    ys = ys[None].expand(K, J, *ys.shape[1:])
    E, B, T = batch.x.shape[:3]
    flat = lambda t: t.permute(2, 0, 1, 3, 4, 5).reshape(E, K * J * B, T, -1)
    return Batch(flat(xs), flat(ys))


def gd(model, batch, steps, lr):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        model.loss(model(batch), batch).sum().backward()
        opt.step()


def test_full_matrix_gd_from_a_decomposable_init_stays_decomposable_on_a_symmetrised_batch():
    task, model = make(d0=2, I=2, H=2, L=8, noise=0.2, orthogonal=True, seeds=(0, 1), scale=0.3)
    batch = symmetrise(task.sample([0, 1], 0, 3), task.phi, task.psi, 2)
    assert batch.x.shape[1] == 3 * 8 * 4 * 4
    omega0, mu0 = model.omega_mu()
    loss0 = model.loss(model(batch), batch).detach()
    gd(model, batch, steps=50, lr=0.5)
    omega, mu = model.omega_mu()
    assert (model.loss(model(batch), batch) < loss0).all()
    assert ((omega - omega0).abs().amax((1, 2)) > 0.05).all() and ((mu - mu0).abs().amax((1, 2)) > 0.05).all()
    assert model.off_decomposable(relative=True).max() < 1e-6      # float64: in fact ~1e-15


def test_without_symmetrisation_the_off_decomposable_gradient_shrinks_like_one_over_root_batch():
    """Negative control: on plain finite batches the gradient leaks out of the family, by ∝ 1/√B."""
    seeds = tuple(range(8))
    off = {}
    for B in (32, 512):
        task, model = make(d0=3, I=2, H=2, L=8, noise=0.2, orthogonal=True, seeds=seeds, scale=0.3)
        gd(model, task.sample(list(seeds), 0, B), steps=1, lr=1.0)
        off[B] = float(model.off_decomposable().mean())
    assert off[32] > 1e-3
    assert 2.5 < off[32] / off[512] < 6.5                            # √16 = 4


# -- theory: the decomposable model's population loss ----------------------------------------------------
def test_crn_loss_agrees_with_a_fresh_monte_carlo_of_task_and_model():
    """Theory (Rao-Blackwellised over β, ε; canonical basis) vs sampled prompts through the model code."""
    omega = torch.tensor([[0.6, -0.2], [0.1, 0.8], [-0.3, 0.3]], dtype=F64)
    mu = torch.tensor([[1.2, 0.3], [-0.4, 1.0], [0.5, -0.6]], dtype=F64)
    crn = mh.input_sample(2, 3, 10, 4000, noise_std=1.0, seed=0)
    theory, se = mh.decomposable_loss(omega, mu, crn)
    task, model = make(d0=3, I=2, H=3, L=10, noise=1.0, orthogonal=True, param="reduced")
    set_reduced(model, omega[None], mu[None])
    b = task.sample([7], 0, 30_000)
    with torch.no_grad():
        fresh, fresh_se = mh.mean_stderr(mh.query_losses(model(b), b.y))
    tol = 3 * (se**2 + fresh_se**2) ** 0.5
    assert abs(float(theory) - fresh) < tol
    wrong, _ = mh.decomposable_loss(omega, mu, mh.input_sample(2, 3, 10, 4000, noise_std=0.0, seed=0))
    assert abs(float(wrong) - fresh) > 3 * tol                       # the test can tell σ = 1 from 0


def test_optimal_mu_solves_the_quadratic():
    s = mh.input_sample(2, 2, 10, 500, noise_std=0.3, seed=1)
    omega = torch.tensor([[0.5, 0.1], [-0.2, 0.4]], dtype=F64)
    mu = mh.optimal_mu(omega, s).requires_grad_(True)
    loss = mh.prompt_losses(omega, mu, s).mean()
    (grad,) = torch.autograd.grad(loss, mu)
    assert grad.abs().max() < 1e-10


def test_two_heads_beat_every_single_head_model_for_two_tasks():
    kw = dict(n_prompts=1000, max_iter=30, seed=0)
    one = mh.optimal_decomposable(2, 1, 3, 16, **kw)
    two = mh.optimal_decomposable(2, 2, 3, 16, **kw)
    s = mh.input_sample(2, 3, 16, 1000, seed=0)                      # the same CRN prompts
    assert two.loss_crn < 0.8 * one.loss_crn
    # the single-head optimum is no worse than a spread of single-head models (with their best μ)
    g = torch.Generator().manual_seed(5)
    for omega in torch.randn(12, 1, 2, generator=g, dtype=F64) * torch.tensor([0.2, 0.6, 1.5]).repeat(4)[:, None, None]:
        assert one.loss_crn <= float(mh.decomposable_loss(omega, mh.optimal_mu(omega, s), s)[0]) + 1e-9
    # and the two-head optimum is no worse than one head per task at the spec's O(1) scores
    for w in (0.2, 0.5, 1.0):
        omega = torch.tensor([[w, 0.0], [0.0, w]], dtype=F64)
        assert two.loss_crn <= float(mh.decomposable_loss(omega, mh.optimal_mu(omega, s), s)[0]) + 1e-9
    assert abs(two.loss - two.loss_crn) < 4 * two.stderr             # independent prompts agree


def test_paired_heads_reach_centred_gd_and_one_head_does_not():
    """Follow-up claim, one task: two heads of opposite signs do (at least) as well as debiased GD."""
    L, d0 = 20, 3
    kw = dict(n_prompts=1500, max_iter=30, seed=3)
    two = mh.optimal_decomposable(1, 2, d0, L, **kw)
    one = mh.optimal_decomposable(1, 1, d0, L, **kw)
    cgd = mh.centred_gd_loss(1, d0, L)
    assert two.loss < cgd + 3 * two.stderr
    assert one.loss > cgd + 3 * one.stderr                           # the uncancelled ȳ bias costs
    assert (two.omega[0, 0] * two.omega[1, 0]) < 0                   # the heads pair up with opposite signs


def test_a_pair_of_opposite_heads_is_centred_gd_to_second_order():
    task, model = make(d0=3, I=1, H=2, L=15, noise=0.3, orthogonal=True, param="reduced")
    b = task.sample([0], 0, 200)
    errs = []
    for w in (0.02, 0.01):
        m = 0.5 / w                                                  # fixed η = 2wm = 1
        set_reduced(model, torch.tensor([[[w], [-w]]], dtype=F64), torch.tensor([[[m], [-m]]], dtype=F64))
        with torch.no_grad():
            pred = model(b)
        ref = centred_gd_predict(b.x, b.y, 3, eta=1.0, phi=task.phi, psi=task.psi)
        errs.append(float((pred - ref).norm() / ref.norm()))
    assert errs[0] < 5e-3
    assert 3.0 < errs[0] / errs[1] < 5.0                             # error ∝ η w²


# -- per-task estimators (estimators/multihead.py) and their closed forms (theory/multihead.py) -------------
def test_registered_estimators_match_the_closed_forms_and_ridge_is_bayes_better():
    """The registered estimators at their default (optimal) steps, by Monte-Carlo, against theory's
    closed-form population losses; the step is the best one; ridge (Bayes) beats both."""
    d0, I, L, sigma = 4, 2, 12, 0.5
    task = MultitaskRegressionTask(MultitaskRegressionConfig(d0=d0, n_tasks=I, n_points=L, noise_std=sigma,
                                                             orthogonal=True), F64)
    assert set(task.estimators) == {"multitask_gd", "multitask_centred_gd", "multitask_ridge"}
    b = task.sample([0], 0, 40_000)

    def losses(name, **params):
        pred = make_estimator(name, task, **params)(b)
        assert pred.shape == b.y[..., -1, :].shape                      # the query's prediction per task
        return mh.query_losses(pred, b.y)

    gd, cgd, ridge = losses("multitask_gd"), losses("multitask_centred_gd"), losses("multitask_ridge")
    for got, closed in ((gd, mh.gd_loss(I, d0, L, sigma)), (cgd, mh.centred_gd_loss(I, d0, L, sigma))):
        mean, se = mh.mean_stderr(got)
        assert abs(mean - closed) < 3 * se
    # the default η is the best step: the paired differences to η(1 ± 0.2) are significantly positive
    eta = make_estimator("multitask_gd", task).eta
    for f in (0.8, 1.2):
        mean, se = mh.mean_stderr(losses("multitask_gd", eta=f * eta) - gd)
        assert mean > 3 * se
    diff, se = mh.mean_stderr(gd - ridge)
    assert diff > 3 * se
    # noiseless with L ≥ d₀ the posterior mean is β itself (GD is not)
    clean = MultitaskRegressionTask(task.config.model_copy(update={"noise_std": 0.0}), F64)
    b = clean.sample([0], 0, 200)
    assert mh.query_losses(make_estimator("multitask_ridge", clean)(b), b.y).max() < 1e-20
    assert mh.query_losses(make_estimator("multitask_gd", clean)(b), b.y).mean() > 0.1


def test_multitask_estimators_refuse_a_single_output_batch():
    task = MultitaskRegressionTask(MultitaskRegressionConfig(d0=2, n_tasks=2, n_points=5), F64)
    b = task.sample([0], 0, 4)
    with pytest.raises(UsageError, match="multitask_gd"):
        make_estimator("multitask_gd", task)(Batch(b.x, b.y[..., 0]))
