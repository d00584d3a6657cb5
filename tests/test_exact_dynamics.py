"""The reduced (v, u) ODE against direct population-gradient training of the LSA, and its theory."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from icldyn.models.lsa import LSA, LSAConfig
from icldyn.analysis.phases import first_crossing
from icldyn.tasks.linear_regression import LinearRegressionConfig, LinearRegressionTask
from icldyn.theory.exact_dynamics import ReducedLSA, zfb_initial
from icldyn.theory.linear_regression import optimal_risk

STAGED = [1.0, 0.25, 0.0625]
N = 20


def train_gd(lr: float, t_end: float, sigma0: float, every: float = 0.5):
    """Plain GD on the LSA's exact population loss; records at t = k·lr on a grid of `every`."""
    task = LinearRegressionTask(LinearRegressionConfig(d=3, n_points=N, covariance="anisotropic",
                                                       eigenvalues=STAGED), dtype=torch.float64)
    model = LSA(LSAConfig(init="zfb", init_scale=sigma0), LinearRegressionConfig(d=3), seeds=[0], dtype=torch.float64)
    gamma = torch.tensor(ReducedLSA(STAGED, N).gamma)
    params = list(model.parameters())
    steps, rec = int(round(t_end / lr)), int(round(every / lr))
    rows = []
    for k in range(steps + 1):
        loss = model.population_loss(task).sum()
        if k % rec == 0:
            with torch.no_grad():
                p, Q = model.w_pv[0][0, 3, :], model.w_kq[0][0, :, :3]   # spec's p and Q
                progress = gamma * torch.diagonal(model.effective_matrix()[0])
                rows.append((k * lr, loss.item(), *progress.tolist(), (p.square().sum() - Q.square().sum()).item()))
        if k < steps:
            with torch.no_grad():
                for w, g in zip(params, torch.autograd.grad(loss, params)):
                    w -= lr * g
    a = np.array(rows)
    return {"time": a[:, 0], "loss": a[:, 1], "mode_progress": a[:, 2:5], "conserved": a[:, 5]}


@pytest.fixture(scope="module")
def gd_runs():
    return {lr: train_gd(lr, t_end=20.0, sigma0=0.1) for lr in (0.02, 0.01)}


def test_zfb_initial_matches_the_lsa_init():
    model = LSA(LSAConfig(init="zfb", init_scale=0.3), LinearRegressionConfig(d=4), seeds=[0], dtype=torch.float64)
    v0, u0 = zfb_initial(0.3, 4)
    assert model.w_pv[0][0, 4, 4].item() == pytest.approx(v0)
    np.testing.assert_allclose(torch.diagonal(model.w_kq[0][0, :4, :4]).detach().numpy(), u0, rtol=1e-12)


def test_gd_follows_the_ode_with_error_linear_in_lr(gd_runs):
    system = ReducedLSA(STAGED, N)
    dev = {}
    for lr, run in gd_runs.items():
        ode = system.integrate(*zfb_initial(0.1, 3), run["time"])
        dev[lr] = (np.abs(run["loss"] - ode["loss"]).max(), np.abs(run["mode_progress"] - ode["mode_progress"]).max())
        # the run covers the escape and most of stage 2, so this is not a comparison of two plateaus
        assert ode["mode_progress"][-1, 0] > 0.99 and 0.2 < ode["mode_progress"][-1, 1] < 0.9
    loss_dev, prog_dev = dev[0.01]
    assert loss_dev < 3e-3 and prog_dev < 5e-3
    # first-order convergence: halving lr halves the deviation (GD is Euler on the flow)
    for j in range(2):
        assert dev[0.02][j] / dev[0.01][j] == pytest.approx(2.0, rel=0.1)


def test_conserved_quantity_drifts_in_order_lr_under_gd(gd_runs):
    drift = {lr: abs(run["conserved"][-1] - run["conserved"][0]) for lr, run in gd_runs.items()}
    assert drift[0.01] > 0  # discrete steps do break it ...
    assert drift[0.02] / drift[0.01] == pytest.approx(2.0, rel=0.1)  # ... by O(lr)


def test_conserved_quantity_is_constant_along_the_ode():
    system = ReducedLSA(STAGED, N)
    u0 = np.array([0.1, -0.2, 0.05])
    c = system.integrate(0.3, u0, np.linspace(0, 60, 200))
    assert c["conserved"][0] == pytest.approx(0.09 - (u0**2).sum())
    assert np.abs(c["conserved"] - c["conserved"][0]).max() < 1e-7
    assert np.all(np.diff(c["loss"]) <= 1e-12)  # a gradient flow never raises the loss
    assert abs(zfb_initial(0.1, 3)[0] ** 2 - (zfb_initial(0.1, 3)[1] ** 2).sum()) < 1e-15


def _numerical_jacobian(system, y, h=1e-6):
    cols = [(system.rhs(0, y + h * e) - system.rhs(0, y - h * e)) / (2 * h) for e in np.eye(y.size)]
    return np.stack(cols, axis=1)


@settings(deadline=None, max_examples=20)
@given(st.lists(st.floats(0.05, 3.0), min_size=1, max_size=5), st.integers(1, 50))
def test_escape_rate_is_the_top_jacobian_eigenvalue_at_the_origin(lam, n):
    system = ReducedLSA(lam, n)
    J = _numerical_jacobian(system, np.zeros(len(lam) + 1))
    eig = np.linalg.eigvalsh((J + J.T) / 2)
    assert np.allclose(J, J.T, atol=1e-8)  # a Hessian of −L at a critical point
    assert eig[-1] == pytest.approx(system.escape_rate(), rel=1e-6)
    assert eig[0] == pytest.approx(-system.escape_rate(), rel=1e-6)  # a saddle, not a maximum


def test_analytic_jacobian_matches_finite_differences():
    system = ReducedLSA(STAGED, N)
    y = np.array([0.7, 0.3, -1.2, 2.0])
    np.testing.assert_allclose(system.jacobian(y), _numerical_jacobian(system, y), atol=1e-6)


def test_fixed_points():
    system = ReducedLSA(STAGED, N)
    assert np.allclose(system.rhs(0, np.zeros(4)), 0)
    assert system.loss(0.0, np.zeros(3)) == pytest.approx(0.5 * sum(STAGED))
    for C in (0.0, 0.5, -0.3):
        fp = system.fixed_point(C)
        y = np.concatenate([[fp["v"]], fp["u"]])
        assert np.abs(system.rhs(0, y)).max() < 1e-12
        assert fp["v"] ** 2 - (fp["u"] ** 2).sum() == pytest.approx(C)
        assert fp["loss"] == pytest.approx(system.optimal_loss)
    # independent closed forms: R*/2 from theory.linear_regression, ZFB's v = ‖Γ⁻¹‖_F^{1/2}
    assert system.optimal_loss == pytest.approx(0.5 * optimal_risk(STAGED, N).item(), rel=1e-12)
    lam = np.diag(STAGED)
    Gamma = (1 + 1 / N) * lam + np.trace(lam) / N * np.eye(3)
    assert system.fixed_point(0.0)["v"] == pytest.approx(np.linalg.norm(np.linalg.inv(Gamma)) ** 0.5)
    # and the flow from ZFB gets there
    end = system.integrate(*zfb_initial(0.1, 3), [0.0, 5000.0])
    assert end["v"][-1] == pytest.approx(system.fixed_point(0.0)["v"], rel=1e-6)
    np.testing.assert_allclose(end["mode_progress"][-1], 1.0, rtol=1e-6)


def test_staged_crossing_times_match_the_spec():
    system = ReducedLSA(STAGED, N)
    times = system.crossing_times(1e-3)
    np.testing.assert_allclose(times, [7, 29, 318], rtol=0.1)   # spec: ≈ 7, 29, 318
    assert np.all(np.diff(times) > 0)  # modes learned in order of decreasing λ
    # the events agree with reading the crossing off a fine grid of the integrated curves
    grid = np.geomspace(1e-2, 1e3, 4000)
    curves = system.integrate(*zfb_initial(1e-3, 3), grid)
    from_grid = [first_crossing(grid, curves["mode_progress"][:, i], 0.5) for i in range(3)]
    np.testing.assert_allclose(from_grid, times, rtol=1e-3)
    # the frozen-v time constants order the modes the same way (only a guide)
    assert np.all(np.diff(system.time_constants()) > 0)


def test_plateau_length_grows_ln10_over_rho_per_decade():
    system = ReducedLSA([1.0, 0.8, 0.6], N)
    rho = system.escape_rate()
    assert rho == pytest.approx(1.25, abs=0.01)
    sigma0 = 10.0 ** -np.arange(2, 6)  # 3 decades
    escape = np.array([system.escape_time(s) for s in sigma0])
    slope = np.polyfit(np.log10(1 / sigma0), escape, 1)[0]
    assert slope == pytest.approx(np.log(10) / rho, rel=0.02)
    assert abs(slope - np.log(10) / 1.0**2) > 0.3  # λ₁² alone would predict a clearly different slope
    # the linearised closed form tracks the ODE's escape up to the saturation it ignores
    linear = np.array([system.plateau_length(s) for s in sigma0])
    assert np.all(linear < escape) and np.all(escape - linear < 0.15 * escape)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="eigenvalues"):
        ReducedLSA([1.0, -0.5], N)
    with pytest.raises(ValueError, match="times"):
        ReducedLSA(STAGED, N).integrate(0.1, 0.1, [1.0, 0.5])
