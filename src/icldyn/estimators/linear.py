"""Linear in-context estimators for linear regression: zero, averaging, OLS, ridge, GD, preconditioned GD.

All predict at every position t from the t examples before it (see `estimators/base.py`);
x (P, T, d), y (P, T) → (P, T).  The task supplies d, the noise σ and the input covariance Σ.
"""

from __future__ import annotations

import torch

from icldyn.errors import UsageError
from icldyn.estimators.base import Estimator, prefix_counts, prefix_mean_moment, strictly_before
from icldyn.estimators.least_squares import ols_prefix, ridge_prefix


class Zero(Estimator):
    """ŷ = 0: the risk of knowing nothing, E y² = tr Σ + σ²."""

    name = "zero"

    def predict(self, x, y):
        return torch.zeros_like(y)


class Averaging(Estimator):
    """ŷ_t = h_tᵀ x_t with h_t = (1/t) Σ_{i<t} y_i x_i: an unpreconditioned, unit-step GD step."""

    name = "averaging"

    def predict(self, x, y):
        return (prefix_mean_moment(x, y) * x).sum(-1)


class OLS(Estimator):
    """Min-norm least squares on the prefix: ŷ_t = x_tᵀ G_t⁺ b_t (= x_tᵀ X⁺y, also for t < d)."""

    name = "ols"

    def predict(self, x, y):
        return ols_prefix(x, y)


class Ridge(Estimator):
    """ŷ_t = x_tᵀ (G_t + λI)⁻¹ b_t; λ = σ² by default, the posterior mean under w ~ N(0, I).

    With λ = 0 (noiseless task) this is min-norm OLS, its λ → 0 limit.
    """

    name = "ridge"

    def __init__(self, task, lam: float | None = None):
        super().__init__(task)
        self.lam = float(task.config.noise_std**2 if lam is None else lam)
        if not self.lam >= 0:
            raise UsageError(f"ridge lam must be ≥ 0; got {lam}")

    def predict(self, x, y):
        return ridge_prefix(x, y, self.lam)


def one_step_optimal_lr(task, T: int, like: torch.Tensor) -> torch.Tensor:
    """The MSE-optimal scalar step η*(t) for ŷ = η h_tᵀ x_t, for w ~ N(0, I) and the task's inputs.  (T,)

    Risk(η) = η² (E tr(S Σ S) + σ² tr Σ² / t) − 2η tr Σ² + tr Σ + σ², S the prefix's second
    moment, so η* = tr Σ² / (E tr(S Σ S) + σ² tr Σ²/t).  Gaussian x: E tr(SΣS) = tr(Σ² Γ_t),
    Γ_t = (1 + 1/t)Σ + (tr Σ/t) I.  Uniform x ~ U(−a, a)^d (Σ = s² I, E x⁴ = 1.8 s⁴):
    E tr(SΣS) = d s⁶ (t + d − 0.2)/t.  For Σ = I and σ = 0 both read t/(t + d + 1) resp.
    3t/(a²(t + d − 0.2)) (spec).  0 at t = 0.  Assumes E w wᵀ = I (a finite task pool only
    approximately).
    """
    c = task.config
    S = task.covariance.to(torch.float64)
    d = S.shape[0]
    t = torch.arange(T, dtype=torch.float64).clamp(min=1)
    tr1, tr2, tr3 = (torch.trace(torch.linalg.matrix_power(S, k)) for k in (1, 2, 3))
    if getattr(c, "inputs", "gaussian") == "uniform":
        s2 = tr1 / d
        second = d * s2**3 * (t + d - 0.2) / t
    else:
        second = (1 + 1 / t) * tr3 + tr1 * tr2 / t
    eta = tr2 / (second + c.noise_std**2 * tr2 / t)
    eta[0] = 0.0
    return eta.to(like.device, like.dtype)


class GD(Estimator):
    """`steps` steps of GD from w = 0 on L_t(w) = (1/2t) Σ_{i<t} (wᵀx_i − y_i)², every prefix at once.

    lr: a float (the same η at every prefix), a (T,) tensor of per-prefix steps, "isotropic"
    (η(t) = t/(t + d + 1), optimal for one step on isotropic Gaussian inputs), "optimal"
    (`one_step_optimal_lr`: the task-aware one-step optimum, noise included) or "stable"
    (η(t) = 1/(λ_max(Σ)(1 + √(d/t))²): one over the Marchenko–Pastur edge of S_t, so every
    eigendirection contracts without overshoot and many steps head to OLS instead of
    diverging; the one-step optima can exceed 2/λ_max(S_t) on some prompts when t < d).
    """

    name = "gd"

    def __init__(self, task, steps: int = 1, lr: float | str | torch.Tensor = "optimal"):
        super().__init__(task)
        if not (isinstance(steps, int) and steps >= 0):
            raise UsageError(f"gd steps must be an integer ≥ 0; got {steps!r}")
        if isinstance(lr, str) and lr not in ("isotropic", "optimal", "stable"):
            raise UsageError(f"gd lr must be a number, a tensor, 'isotropic', 'optimal' or 'stable'; got {lr!r}")
        self.steps, self.lr = steps, lr

    def step_sizes(self, T: int, like: torch.Tensor) -> torch.Tensor:
        """η for each prefix length t = 0..T−1.  (T,)"""
        if isinstance(self.lr, str):
            if self.lr == "optimal":
                return one_step_optimal_lr(self.task, T, like)
            t, d = prefix_counts(T, like), self.task.config.d
            if self.lr == "isotropic":
                return t / (t + d + 1)
            top = float(torch.linalg.eigvalsh(self.task.covariance.to(torch.float64))[-1])
            return t / (top * (t**0.5 + d**0.5) ** 2)
        eta = torch.as_tensor(self.lr, dtype=like.dtype, device=like.device)
        if eta.dim() == 1 and eta.shape[0] != T:
            raise UsageError(f"gd lr has {eta.shape[0]} entries but the prompts have {T} positions")
        return eta.expand(T)

    def predict(self, x, y):
        P, T, d = x.shape
        eta = self.step_sizes(T, x)[:, None]  # (T, 1)
        h = prefix_mean_moment(x, y)  # (P, T, d): −∇L_t at w = 0
        # mask[t, i]/t: the examples of prefix t, normalised; 0 at t = 0 so w_0 stays 0
        weights = strictly_before(T, x) / prefix_counts(T, x).clamp(min=1)[:, None]
        w = torch.zeros_like(x)  # (P, T, d): the iterate of every prefix
        for _ in range(self.steps):
            fitted = torch.einsum("ptd,pid->pti", w, x) * weights  # (1/t) x_iᵀ w_t for i < t
            grad = torch.einsum("pti,pid->ptd", fitted, x) - h  # S_t w_t − h_t
            w = w - eta * grad
        return (w * x).sum(-1)


class PreconditionedGD(Estimator):
    """ŷ_t = h_tᵀ Γ⁻¹ x_t, Γ = (1 + 1/n)Σ + (tr Σ/n) I: the trained one-layer LSA's limit (ZFB).

    n = t (each prefix gets its own Γ_t, the optimum of ŷ = h_tᵀ B x_t for noiseless Gaussian
    inputs) unless `n` is given (a model trained at length n, evaluated at every prefix).
    For Σ = I it is one GD step with η = t/(t + d + 1).
    """

    name = "preconditioned_gd"

    def __init__(self, task, n: int | None = None):
        super().__init__(task)
        if n is not None and not (isinstance(n, int) and n >= 1):
            raise UsageError(f"preconditioned_gd n must be an integer ≥ 1; got {n!r}")
        self.n = n

    def preconditioners(self, T: int, like: torch.Tensor) -> torch.Tensor:
        """Γ⁻¹ for each prefix length t = 0..T−1 (0 at t = 0 when n is None).  (T, d, d)"""
        S = self.task.covariance.to(torch.float64)
        d = S.shape[0]
        n = torch.full((T,), float(self.n), dtype=torch.float64) if self.n else torch.arange(T).double()
        n = n.clamp(min=1)[:, None, None]
        gamma = (1 + 1 / n) * S + torch.trace(S) / n * torch.eye(d, dtype=torch.float64)
        inv = torch.linalg.inv(gamma)
        if self.n is None:
            inv[0] = 0.0
        return inv.to(like.device, like.dtype)

    def predict(self, x, y):
        B = self.preconditioners(x.shape[1], x)
        return torch.einsum("ptd,tde,pte->pt", prefix_mean_moment(x, y), B, x)
