"""von Oswald alignment metrics: exact agreement, a perturbed model, analytic sensitivities."""

from __future__ import annotations

import pytest
import torch

from icldyn.models.lsa import LSA, LSAConfig
from icldyn.probes.alignment import alignment, sensitivities
from icldyn.tasks.base import Batch
from icldyn.tasks.linear_regression import LinearRegressionConfig

F64 = torch.float64


def _batch(E=1, B=256, n=6, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(E, B, n + 1, d, generator=g, dtype=F64)
    w = torch.randn(E, B, d, generator=g, dtype=F64)
    y = torch.einsum("ebtd,ebd->ebt", x, w)
    return Batch(x, y, {"w": w})


def gd_one_step(eta):
    """One GD step from w = 0 at every prefix: ŷ_t = η h_tᵀ x_t, h_t = (1/t) Σ_{i<t} y_i x_i (0 at t = 0).
    Written independently of the LSA, as a per-prefix estimator (E or 1, B, T)."""
    def fn(batch):
        yx = batch.y[..., None] * batch.x                                   # (E, B, T, d)
        before = torch.cumsum(yx, dim=-2) - yx                              # Σ_{i<t} y_i x_i
        t = torch.arange(batch.x.shape[-2], dtype=batch.x.dtype).clamp(min=1)
        return eta * ((before / t[:, None]) * batch.x).sum(-1)
    return fn


def _lsa(d, seeds, pv_last_row, kq_block):
    """A one-layer LSA with the given y-row of W^PV (E, d+1) and x-block of W^KQ (E, d, d)."""
    model = LSA(LSAConfig(), LinearRegressionConfig(d=d), seeds=seeds, dtype=F64)
    with torch.no_grad():
        model.w_pv[0].zero_()
        model.w_kq[0].zero_()
        model.w_pv[0][:, d, :] = pv_last_row
        model.w_kq[0][:, :d, :d] = kq_block
    return model


def test_exact_one_step_model_is_perfectly_aligned():
    d, eta, E = 3, 0.6, 2
    pv = torch.zeros(E, d + 1, dtype=F64)
    pv[:, d] = eta
    model = _lsa(d, [0, 1], pv, torch.eye(d, dtype=F64).expand(E, d, d))
    batch = _batch(E=1, d=d)                  # held-out prompts: E = 1, expanded to the model's 2
    with torch.no_grad():                     # probes run outside autograd; the metric must not care
        out = alignment(model, gd_one_step(eta), batch)
    assert set(out) == {"preds_diff", "model_diff", "model_cos"}
    for v in out.values():
        assert v.shape == (E,)
    assert torch.all(out["preds_diff"] < 1e-13)
    assert torch.all(out["model_diff"] < 1e-13)
    assert torch.allclose(out["model_cos"], torch.ones(E, dtype=F64), atol=1e-13)
    assert all(p.grad is None for p in model.parameters())   # the probe leaves training state alone


def test_perturbed_model_is_misaligned_only_where_perturbed():
    d, eta, E = 3, 0.6, 2
    pv = torch.zeros(E, d + 1, dtype=F64)
    pv[:, d] = eta
    U = torch.eye(d, dtype=F64).repeat(E, 1, 1)
    U[1] += 0.3 * torch.randn(d, d, generator=torch.Generator().manual_seed(1), dtype=F64)
    model = _lsa(d, [0, 1], pv, U)
    out = alignment(model, gd_one_step(eta), _batch(E=1, d=d))
    assert out["model_cos"][0] == pytest.approx(1.0, abs=1e-12) and out["preds_diff"][0] < 1e-13
    assert out["model_cos"][1] < 0.99
    assert out["model_diff"][1] > 1e-2 and out["preds_diff"][1] > 1e-2


def test_sensitivities_are_B_transpose_h():
    """ŷ = v hᵀ U x_q (a ZFB-structured LSA, per seed) has g = v Uᵀ h; computed here directly."""
    d, E = 4, 3
    g = torch.Generator().manual_seed(2)
    v = torch.randn(E, generator=g, dtype=F64)
    U = torch.randn(E, d, d, generator=g, dtype=F64)
    pv = torch.zeros(E, d + 1, dtype=F64)
    pv[:, d] = v
    model = _lsa(d, [0, 1, 2], pv, U)
    batch = _batch(E=1, d=d, n=5, seed=3)
    pred, sens = sensitivities(model, batch, n_seeds=E)
    assert pred.shape == (E, 256) and sens.shape == (E, 256, d)
    x, y = batch.x[0], batch.y[0]
    h = (y[:, :-1, None] * x[:, :-1]).sum(1) / 5                             # (B, d)
    expected = v[:, None, None] * torch.einsum("eji,bj->ebi", U, h)        # (Bᵀ h) per seed
    assert torch.allclose(sens, expected, rtol=1e-12, atol=1e-13)
    assert torch.allclose(pred, torch.einsum("bi,eij,bj->eb", h, v[:, None, None] * U, x[:, -1]), rtol=1e-12)


def test_full_attention_model_sensitivity_by_finite_differences():
    """A model with every LSA block non-zero (query column feeds the gram too): autograd g
    against central finite differences in x_q."""
    d = 2
    model = LSA(LSAConfig(init="gaussian", init_scale=0.5), LinearRegressionConfig(d=d), seeds=[4], dtype=F64)
    batch = _batch(E=1, B=8, d=d, n=4, seed=5)
    _, sens = sensitivities(model, batch)
    eps = 1e-6
    fd = torch.zeros_like(sens)
    for j in range(d):
        up, down = batch.x.clone(), batch.x.clone()
        up[..., -1, j] += eps
        down[..., -1, j] -= eps
        with torch.no_grad():
            fd[..., j] = (model(Batch(up, batch.y))[..., 0] - model(Batch(down, batch.y))[..., 0]) / (2 * eps)
    assert torch.allclose(sens, fd, rtol=1e-6, atol=1e-8)


def test_per_position_model_output_and_constant_estimator():
    """A (E, B, T) model output uses its last position; an estimator with no x_q-dependence
    (zero) has g = 0, hence model_cos = 0 and model_diff = ‖g_TF‖."""
    batch = _batch(E=2, d=3)
    model_fn = gd_one_step(1.0)
    zero = lambda b: torch.zeros_like(b.y)  # noqa: E731
    out = alignment(model_fn, zero, batch)
    _, g = sensitivities(model_fn, batch)
    assert torch.allclose(out["model_cos"], torch.zeros(2, dtype=F64))
    assert torch.allclose(out["model_diff"], g.norm(dim=-1).mean(-1), rtol=1e-12)


def test_seed_mismatch_is_an_error():
    with pytest.raises(ValueError, match="seeds"):
        sensitivities(gd_one_step(1.0), _batch(E=2), n_seeds=3)
