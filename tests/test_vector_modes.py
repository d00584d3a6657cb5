"""The paper's vector-valued model: theory/vector_modes.py against scipy's ODE solver, autograd,
Monte-Carlo and direct gradient-descent training of the registered model (models/mode_lsa.py) on
the registered task (tasks/vector_regression.py)."""

import numpy as np
import pytest
import torch

from icldyn.models import build_model
from icldyn.models.mode_lsa import ModeLSAConfig
from icldyn.tasks import build_task
from icldyn.tasks.vector_regression import VectorRegressionConfig
from icldyn.theory.vector_modes import LayerSystem, ModeSystem, paper_s_inf
from icldyn.errors import UsageError

S = np.array([1.0, 0.5, 0.25])
C = np.array([0.8, 1.3, 1.1])


def make(n_points=5, context="finite", basis="rotated", init=(0.3, 1.0), seeds=(0,), d=3, eigenvalues=None):
    cfg = VectorRegressionConfig(d=d, n_points=n_points, n_tasks=4, basis=basis, population_context=context,
                                 eigenvalues=eigenvalues)
    task = build_task(cfg, torch.float64)
    model = build_model(ModeLSAConfig(init_scale=init[0], init_ratio=init[1]), task, list(seeds), torch.float64)
    return task, model


# -- the closed form and the per-mode ODE ----------------------------------------------------------
def test_logistic_closed_form_solves_the_mode_ode():
    system = ModeSystem(S, paper_s_inf(S, 20), C)
    t = np.linspace(0, 120, 400)
    a0 = 1e-3
    ode = system.integrate(np.sqrt(a0), np.sqrt(a0), t)
    np.testing.assert_allclose(ode["a"], system.closed_form(a0, t), atol=1e-8)
    th = system.half_time(a0)  # the closed form at t½ is a^∞/2
    for i in range(3):
        np.testing.assert_allclose(system.closed_form(a0, [th[i]])[0, i], system.a_inf[i] / 2, rtol=1e-12)


def test_mode_ode_is_the_gradient_flow_of_its_loss_and_conserves_each_mode():
    system = ModeSystem(S, paper_s_inf(S, 7), C)
    p = torch.tensor([0.4, -0.2, 1.1], dtype=torch.float64, requires_grad=True)
    q = torch.tensor([0.3, 0.9, -0.5], dtype=torch.float64, requires_grad=True)
    s, s_inf, c = (torch.tensor(v) for v in (S, system.s_inf, C))
    a = p * q
    loss = 0.5 * (c * s * (s * s_inf * a**2 - 2 * s * a + 1)).sum()  # the spec's L(t), weighted by c
    loss.backward()
    rhs = system.rhs(np.concatenate([p.detach().numpy(), q.detach().numpy()]))
    np.testing.assert_allclose(rhs, -np.concatenate([p.grad.numpy(), q.grad.numpy()]), rtol=1e-12)
    ode = system.integrate(np.array([0.5, 0.1, 0.2]), np.array([0.05, 0.3, 0.2]), np.linspace(0, 200, 50))
    np.testing.assert_allclose(ode["conserved"], ode["conserved"][:1].repeat(50, 0), atol=1e-7)
    np.testing.assert_allclose(ode["a"][-1], system.a_inf, rtol=1e-6)   # the fixed point a = 1/s^∞


def test_paper_s_inf_and_the_infinite_context_limit():
    np.testing.assert_allclose(paper_s_inf(S, 20), (21 * S + S.sum()) / 20)
    np.testing.assert_allclose(paper_s_inf(S, None), S)
    # the layer's exact flow at N → ∞ is the paper's decoupled flow with s^∞ = s
    layer, modes = LayerSystem(S, None, C), ModeSystem(S, S, C)
    y = np.random.default_rng(0).normal(size=6)
    np.testing.assert_allclose(layer.rhs(y), modes.rhs(y), rtol=1e-12)
    # at finite N it is not the paper's: the K/N term couples the modes
    assert not np.allclose(LayerSystem(S, 20, C).rhs(y), ModeSystem(S, paper_s_inf(S, 20), C).rhs(y), rtol=1e-3)


# -- the registered model and task -----------------------------------------------------------------
def test_model_is_the_linear_attention_layer_on_the_full_embedding():
    """ŷ = the query column's y-block of f(Z) = Z + W_P (Z Zᵀ/N) W_Q Z with the 2d×2d block matrices."""
    task, model = make(n_points=6, seeds=(0, 1))
    with torch.no_grad():
        model.p.copy_(torch.randn(2, 3, dtype=torch.float64))
        model.q.copy_(torch.randn(2, 3, dtype=torch.float64))
    b = task.sample([0, 1], 2, 16)
    U, d = task.basis, 3
    y0 = b.y.clone()
    y0[..., -1, :] = 0
    Z = torch.cat([b.x, y0], -1).transpose(-1, -2)                       # (E, B, 2d, N+1)
    for e in range(2):
        WP, WQ = torch.zeros(2 * d, 2 * d, dtype=torch.float64), torch.zeros(2 * d, 2 * d, dtype=torch.float64)
        WP[d:, d:] = U @ torch.diag(model.p[e].detach()) @ U.T
        WQ[:d, :d] = U @ torch.diag(model.q[e].detach()) @ U.T
        out = Z[e] + WP @ (Z[e] @ Z[e].transpose(-1, -2) / 6) @ WQ @ Z[e]
        torch.testing.assert_close(model(b)[e].detach(), out[:, d:, -1], atol=1e-12, rtol=1e-10)


def test_task_prompts_follow_the_pool_and_covariance():
    task, _ = make(n_points=4)
    b = task.sample([0], 0, 20000)
    W = task.task_matrices()[b.extras["task"][0]]
    torch.testing.assert_close(b.y[0], b.x[0] @ W.transpose(-1, -2))
    emp = torch.einsum("btd,bte->de", b.x[0], b.x[0]) / (20000 * 5)
    torch.testing.assert_close(emp, task.covariance, atol=0.03, rtol=0)
    torch.testing.assert_close(task.task_matrices(), task.task_matrices().transpose(-1, -2))  # symmetric W
    assert torch.equal(task.sample([3], 7, 8).x, task.sample([3], 7, 8).x)                  # a pure function of (seed, step)


@pytest.mark.parametrize("context", ["finite", "infinite"])
def test_population_loss_matches_layer_system_and_its_gradients(context):
    task, model = make(n_points=5, context=context, init=(0.6, 1.4), seeds=(0, 1))
    with torch.no_grad():
        model.p.add_(torch.randn(2, 3, dtype=torch.float64) * 0.3)
    layer = LayerSystem(task.eigenvalues.numpy(), 5 if context == "finite" else None, task.mode_moments.numpy())
    loss = model.population_loss(task)
    loss.sum().backward()
    for e in range(2):
        p, q = model.p[e].detach().numpy(), model.q[e].detach().numpy()
        np.testing.assert_allclose(loss[e].item(), layer.loss(p, q), rtol=1e-12)
        dp, dq = layer.grad(p, q)
        np.testing.assert_allclose(model.p.grad[e].numpy(), dp, rtol=1e-10)
        np.testing.assert_allclose(model.q.grad[e].numpy(), dq, rtol=1e-10)


def test_population_loss_matches_monte_carlo():
    task, model = make(n_points=5, init=(0.7, 1.3), seeds=(0, 1))
    with torch.no_grad():
        model.p.add_(torch.tensor([[0.2, -0.3, 0.1], [0.0, 0.4, -0.2]], dtype=torch.float64))
        b = task.sample([0, 1], 3, 100_000)
        per_prompt = 0.5 * (model(b) - b.y[..., -1, :]).pow(2).sum(-1)    # (E, B)
        mean, stderr = per_prompt.mean(-1), per_prompt.std(-1) / 100_000**0.5
        exact = model.population_loss(task)
    assert ((mean - exact).abs() < 4 * stderr).all(), (mean, exact, stderr)


def test_conservation_laws_by_autograd():
    """d/dt(p_α² − q_α²) = −2(p_α ∂_pα L − q_α ∂_qα L): zero per mode at N → ∞, only in sum at finite N,
    and zero in sum for any sampled minibatch (the layer's rescaling symmetry p → kp, q → q/k)."""
    for context, per_mode_zero in (("infinite", True), ("finite", False)):
        task, model = make(n_points=5, context=context, init=(0.5, 1.7))
        with torch.no_grad():
            model.q.add_(torch.tensor([[0.3, -0.2, 0.5]], dtype=torch.float64))
        model.population_loss(task).sum().backward()
        rate = -2 * (model.p * model.p.grad - model.q * model.q.grad).detach()[0]
        assert abs(rate.sum().item()) < 1e-12
        assert (rate.abs().max().item() < 1e-12) == per_mode_zero
    model.zero_grad()
    b = task.sample([0], 0, 64)
    model.loss(model(b), b).sum().backward()
    assert abs((model.p * model.p.grad - model.q * model.q.grad).sum().item()) < 1e-12


def test_model_needs_a_task_with_an_eigenbasis():
    from icldyn.tasks.linear_regression import LinearRegressionConfig

    with pytest.raises(UsageError, match="vector-regression"):
        build_model(ModeLSAConfig(), build_task(LinearRegressionConfig(d=3)), [0])


# -- direct gradient descent at small lr against the theory -----------------------------------------
def gd_curves(task, model, lr, steps, every):
    """Population GD by hand: a = p q (E, T, d) every `every` steps, and the times."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    a, t = [], []
    for k in range(steps + 1):
        if k % every == 0:
            a.append((model.p * model.q).detach().clone())
            t.append(k * lr)
        opt.zero_grad()
        model.population_loss(task).sum().backward()
        opt.step()
    return np.stack([x.numpy() for x in a], 1), np.array(t)


def test_gradient_descent_follows_the_logistic_closed_form_per_mode():
    task, model = make(context="infinite", basis="rotated", init=(0.03, 1.0), eigenvalues=[1.0, 0.5, 0.25])
    a, t = gd_curves(task, model, lr=0.01, steps=8000, every=100)           # t up to 80: two modes switch on
    system = ModeSystem(task.eigenvalues.numpy(), task.eigenvalues.numpy(), task.mode_moments.numpy())
    progress = a[0] / system.a_inf
    closed = system.closed_form(0.03**2, t) / system.a_inf
    assert np.abs(progress - closed).max() < 0.01                          # the claim's tolerance
    assert progress[-1, 0] > 0.99 and progress[-1, 1] > 0.99               # both reached the fixed point
    # a wrong time scaling (τ of a loss summed over the P tasks) is far off
    wrong = system.closed_form(0.03**2, t * task.config.n_tasks) / system.a_inf
    assert np.abs(progress - wrong).max() > 0.5


def test_gradient_descent_at_finite_n_follows_the_layer_flow_not_the_papers_closed_form():
    task, model = make(n_points=5, context="finite", basis="identity", init=(0.1, 1.0), eigenvalues=[1.0, 0.5, 0.25])
    a, t = gd_curves(task, model, lr=0.01, steps=6000, every=100)
    s, c = task.eigenvalues.numpy(), task.mode_moments.numpy()
    flow = LayerSystem(s, 5, c).integrate(0.1, 0.1, t)["a"]
    a_inf = 1 / paper_s_inf(s, 5)
    assert np.abs((a[0] - flow) / a_inf).max() < 0.01
    closed = ModeSystem(s, paper_s_inf(s, 5), c).closed_form(0.01, t)
    assert np.abs((a[0] - closed) / a_inf).max() > 0.05


def test_zero_scores_zero_the_prediction():
    """ŷ = p₂ Σ_i y_i (x_iᵀ q₁ x_q)/N: patching the scores x_iᵀ q₁ x_q to 0 gives ŷ = 0 exactly."""
    task, model = make(n_points=6, seeds=(0, 1))
    b = task.sample([0, 1], 0, 8)
    with torch.no_grad():
        out = model.run_with_hooks(b, [("blocks.0.attn.hook_scores", lambda x, hook: torch.zeros_like(x))])
        assert model(b).abs().min() > 0
    assert torch.equal(out, torch.zeros_like(out))
