"""Per-task in-context estimators for multi-task linear regression (tasks/multitask_regression.py):
one-step GD, one-step GD on centred data ("debiased GD") and ridge / the Bayes posterior mean, each applied
to every task's block of coordinates.

They use the task's block structure (d₀ and the bases Φ, Ψ), as `gd_opt` uses the task's Σ: the task
names them (`MultitaskRegressionTask.estimators`). The batch layout differs from `estimators/base.py`'s by
a trailing task axis on y: x (..., T, d), y (..., T, I), the query last; the claims and the paper's loss
are at the query, so these estimators answer the query position only: → (..., I).
The steps η default to their population optimum for the task's test prompts (L examples, label noise σ).
"""

from __future__ import annotations

import torch

from icldyn.errors import UsageError
from icldyn.estimators.base import Estimator


# -- the predictors on raw tensors ----------------------------------------------------------------------
def _canonical(x: torch.Tensor, y: torch.Tensor, d0: int, phi=None, psi=None):
    """x (..., T, d), y (..., T, I) → blocks x̃ (..., T, I, d₀) = Φᵀx and ỹ (..., T, I) = Ψᵀy."""
    if phi is not None:
        x = x @ torch.as_tensor(phi, dtype=x.dtype, device=x.device)
    if psi is not None:
        y = y @ torch.as_tensor(psi, dtype=y.dtype, device=y.device)
    I = y.shape[-1]
    if x.shape[-1] != I * d0:
        raise ValueError(f"x has {x.shape[-1]} features but I·d₀ = {I}·{d0}")
    return x.reshape(*x.shape[:-1], I, d0), y


def _back(pred: torch.Tensor, psi) -> torch.Tensor:
    """ỹ̂ (..., I) → ŷ = Ψ ỹ̂."""
    return pred if psi is None else pred @ torch.as_tensor(psi, dtype=pred.dtype, device=pred.device).T


def gd_step(d0: int, n_points: int, noise_std: float = 0.0) -> float:
    """Optimal η of one-step GD from 0: 1/E‖h‖² with h = (1/L)Σ y_l x_l, E‖h‖² = 1 + (1 + d₀ + σ²d₀)/L
    (E S² = (1 + (1+d₀)/L) I for the sample second moment S of N(0, I_{d₀}); E‖β‖² = 1)."""
    return 1.0 / (1 + (1 + d0 + noise_std**2 * d0) / n_points)


def centred_gd_step(d0: int, n_points: int, noise_std: float = 0.0) -> float:
    """Optimal η of centred one-step GD: L / (L + d₀ + σ²d₀). With L·S_c ~ Wishart(L−1, I):
    E S_c = (L−1)/L, E S_c² = (L−1)(L+d₀)/L², noise E‖·‖² = σ²d₀(L−1)/L²."""
    return n_points / (n_points + d0 + noise_std**2 * d0)


def gd_predict(x, y, d0: int, eta: float, phi=None, psi=None) -> torch.Tensor:
    """One-step GD per task: ŷ_i = η (1/L) Σ_l y_{l,i} x_{l,B_i}ᵀ x_{q,B_i}.  → (..., I)."""
    xb, yb = _canonical(x, y, d0, phi, psi)
    keys, vals, q = xb[..., :-1, :, :], yb[..., :-1, :], xb[..., -1, :, :]
    h = torch.einsum("...li,...lid->...id", vals, keys) / keys.shape[-3]
    return _back(eta * (h * q).sum(-1), psi)


def centred_gd_predict(x, y, d0: int, eta: float, phi=None, psi=None) -> torch.Tensor:
    """One-step GD on centred data ("debiased GD", our reconstruction of He, Pan, Chen & Yang 2025):
    ŷ_i = η (1/L) Σ_l (y_{l,i} − ȳ_i)(x_{l,B_i} − x̄_{B_i})ᵀ x_{q,B_i}  → (..., I).

    Why: to first order in ω a head's softmax is a_l ≈ (1 + ω(c_l − c̄))/L, c_l = x_lᵀx_q, so the head
    outputs μ(ȳ + ω·(1/L)Σ_l y_l (x_l − x̄)ᵀx_q); two heads (ω, μ), (−ω, −μ) cancel the ȳ bias and the
    O(ω²) terms, leaving this estimator with η = 2ωμ (y needs no centring once x is centred).
    """
    xb, yb = _canonical(x, y, d0, phi, psi)
    keys, vals, q = xb[..., :-1, :, :], yb[..., :-1, :], xb[..., -1, :, :]
    keys = keys - keys.mean(-3, keepdim=True)
    vals = vals - vals.mean(-2, keepdim=True)
    h = torch.einsum("...li,...lid->...id", vals, keys) / keys.shape[-3]
    return _back(eta * (h * q).sum(-1), psi)


def ridge_predict(x, y, d0: int, noise_std: float, phi=None, psi=None) -> torch.Tensor:
    """Bayes posterior mean per task (β_i ~ N(0, I/d₀), noise σ²): β̂_i = (X_iᵀX_i + σ²d₀ I)⁻¹X_iᵀy_i,
    batched; at σ = 0 the minimum-norm least-squares fit (the σ → 0 limit).  → (..., I)."""
    xb, yb = _canonical(x, y, d0, phi, psi)
    X = xb[..., :-1, :, :].movedim(-2, -3)                      # (..., I, L, d₀)
    t = yb[..., :-1, :].movedim(-1, -2)[..., None]               # (..., I, L, 1)
    if noise_std > 0 or X.shape[-2] >= d0:
        # noiseless with L ≥ d₀: X has full column rank (a.s.), so the normal equations are the pinv's
        # answer, at a fraction of a batched SVD's cost
        gram = X.transpose(-1, -2) @ X + noise_std**2 * d0 * torch.eye(d0, dtype=X.dtype, device=X.device)
        beta = torch.linalg.solve(gram, X.transpose(-1, -2) @ t)
    else:
        beta = torch.linalg.pinv(X) @ t
    return _back((beta[..., 0] * xb[..., -1, :, :]).sum(-1), psi)


# -- the registered estimators --------------------------------------------------------------------------
class MultitaskEstimator(Estimator):
    """Base of the per-task estimators: batch.x (..., T, d), batch.y (..., T, I) → the query's (..., I)."""

    def __init__(self, task):
        super().__init__(task)
        c = task.config
        self.d0, self.n_points, self.noise_std = c.d0, c.test_points, c.noise_std
        # the identity bases (the default) need no rotation: 4-9x faster on 10⁵ float64 prompts
        self.phi, self.psi = (task.phi, task.psi) if c.orthogonal else (None, None)

    def __call__(self, batch) -> torch.Tensor:
        x, y = batch.x, batch.y
        if x.dim() < 2 or y.dim() != x.dim() or x.shape[:-1] != y.shape[:-1]:
            raise UsageError(f"estimator {self.name!r} needs x (..., T, d) and y (..., T, I); "
                             f"got x {tuple(x.shape)} and y {tuple(y.shape)}")
        return self.predict(x, y.to(x.dtype))


class _Stepped(MultitaskEstimator):
    """A one-step estimator with step `eta` (default: its population optimum, `optimal_step`)."""

    def __init__(self, task, eta: float | None = None):
        super().__init__(task)
        self.eta = float(self.optimal_step(self.d0, self.n_points, self.noise_std) if eta is None else eta)

    @staticmethod
    def optimal_step(d0, n_points, noise_std) -> float:
        raise NotImplementedError


class MultitaskGD(_Stepped):
    """One step of GD from 0 on each task's block: ŷ_i = η (1/L) Σ_l y_{l,i} x_{l,B_i}ᵀ x_{q,B_i}."""

    name = "multitask_gd"
    optimal_step = staticmethod(gd_step)

    def predict(self, x, y):
        return gd_predict(x, y, self.d0, self.eta, self.phi, self.psi)


class MultitaskCentredGD(_Stepped):
    """One step of GD on centred data per task ("debiased GD"): the limit of a pair of opposite-sign heads."""

    name = "multitask_centred_gd"
    optimal_step = staticmethod(centred_gd_step)

    def predict(self, x, y):
        return centred_gd_predict(x, y, self.d0, self.eta, self.phi, self.psi)


class MultitaskRidge(MultitaskEstimator):
    """The Bayes posterior mean per task (β_i ~ N(0, I/d₀), the task's noise σ; min-norm OLS at σ = 0)."""

    name = "multitask_ridge"

    def predict(self, x, y):
        return ridge_predict(x, y, self.d0, self.noise_std, self.phi, self.psi)
