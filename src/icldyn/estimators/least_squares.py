"""Min-norm least squares and ridge on every prefix of every prompt, without a solve per prefix.

The per-prefix solutions are linked: predicting y_t from the prefix is Gaussian conditioning,
and the conditional means of a whole sequence come from one Cholesky factor of its covariance
(the innovations form of a Kalman filter):  if C = L Lᵀ is the covariance of r = (r_0..r_{n−1})
then E[r_i | r_{<i}] = Σ_{j<i} L_ij e_j with e = L⁻¹ r.  So each prompt needs one factorisation,
not one per prefix:

- ridge  (G_t + λI)⁻¹ b_t  is the posterior mean under w ~ N(0, I), noise λ: C = X Xᵀ/λ + I.
- OLS    G_t⁺ b_t.  While t ≤ d the rows are independent and the min-norm interpolant's
  prediction is (Qᵀx_t)_{<t} · (R⁻ᵀ y)_{<t}, read off the QR of Xᵀ (leading blocks of R are
  the factors of every shorter prefix).  After d points the flat-prior posterior is
  N(w_d, s² G_d⁻¹), so later points are ridge-like with C = B Bᵀ + I, B = X_{≥d} X_d⁻¹, on the
  residuals y_i − x_iᵀ w_d; that posterior mean is the OLS fit of all points so far.
  Working on X through its QR keeps the conditioning of lstsq (cond X, not cond² X).

Prompts whose first min(d, T) inputs are (numerically) dependent, or whose factorisation
fails, fall back to an explicit eigh-based pseudo-inverse per prefix in float64, batched over
those prompts only (exact duplicates; in float64 practically nothing else).

Precision: the solves run in (at least) float64 whatever the batch's dtype, and the result is
cast back.  The innovations form C = BBᵀ + I carries cond(X_d)², and in float32 a prompt whose
first d inputs are badly conditioned (common at d = 20) lost 1e-2 at every later prefix, where
lstsq keeps 1e-5; in float64 the same code matches lstsq on the float32 data.  The cost is the
same on CPU (these are many tiny factorisations, bound by per-matrix overhead).
Shapes: x (P, T, d), y (P, T) → (P, T).
"""

from __future__ import annotations

import torch

from icldyn.estimators.base import exclusive_cumsum


def _innovation_means(C: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """E[r_i | r_{<i}] for r ~ N(0, C).  C (P, n, n), r (P, n) → means (P, n), ok (P,) bool."""
    # C = Uᵀ U, i.e. L = Uᵀ: the upper factor of a row-major batch is LAPACK's native layout (2× faster)
    U, info = torch.linalg.cholesky_ex(C, upper=True)
    e = torch.linalg.solve_triangular(U, r[:, None, :], upper=True, left=False)[:, 0]  # eᵀ U = rᵀ
    means = r - U.diagonal(dim1=-2, dim2=-1) * e  # r = L e: drop each point's own innovation
    means[..., 0] = 0.0  # nothing before the first point (exactly, not up to rounding)
    return means, (info == 0) & torch.isfinite(means).all(-1)


def _eye(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(n, dtype=like.dtype, device=like.device)


def _rank_tol(x: torch.Tensor) -> float:
    """Relative size below which a pivot or singular value counts as zero (lstsq's default rcond)."""
    return max(x.shape[-2:]) * torch.finfo(x.dtype).eps


def _promoted(fn):
    """Run `fn(x, y, ...)` in at least float64 and return the batch's dtype."""
    def wrapper(x, y, *args):
        work = torch.promote_types(x.dtype, torch.float64)
        return fn(x.to(work), y.to(work), *args).to(x.dtype)
    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    return wrapper


@_promoted
def ols_prefix(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Min-norm least-squares prediction x_tᵀ G_t⁺ b_t at every position t.  (P, T, d), (P, T) → (P, T)."""
    P, T, d = x.shape
    k = min(d, T)
    R = torch.linalg.qr(x.transpose(-1, -2), mode="r")[1]  # (P, k, T): Xᵀ = Q R
    R1 = R[:, :, :k]
    # z = R1⁻ᵀ y_{<k} as a row vector; its leading t entries solve every shorter prefix
    z = torch.linalg.solve_triangular(R1, y[:, None, :k], upper=True, left=False)[:, 0]  # (P, k)
    # Σ_{j<t} R_jt z_j: all of Rᵀz (for t ≥ d that is x_tᵀ w_d, the interpolant of the first d)
    # minus, for t < k, the diagonal term (R is upper triangular there, so nothing else)
    pred = torch.bmm(z[:, None, :], R)[:, 0]
    pred[:, :k] -= R1.diagonal(dim1=-2, dim2=-1) * z
    pivots = R1.diagonal(dim1=-2, dim2=-1).abs()  # distance of x_j from the span of x_{<j}
    ok = (pivots.amin(-1) > _rank_tol(x) * pivots.amax(-1)) & torch.isfinite(pred).all(-1)
    if T > d + 1:
        V = torch.linalg.solve_triangular(R1, R[:, :, d:], upper=True)  # (P, d, T−d) = (X_{≥d} X_d⁻¹)ᵀ
        C = torch.baddbmm(_eye(T - d, x), V.transpose(-1, -2), V)  # B Bᵀ + I
        innov, ok2 = _innovation_means(C, y[:, d:] - pred[:, d:])
        pred = torch.cat([pred[:, :d], pred[:, d:] + innov], dim=1)
        ok = ok & ok2
    return _fallback(pred, ok, x, y, lam=0.0)


@_promoted
def ridge_prefix(x: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """Ridge prediction x_tᵀ (G_t + λI)⁻¹ b_t at every position t (λ > 0).  (P, T, d), (P, T) → (P, T)."""
    if lam == 0:
        return ols_prefix(x, y)
    pred, ok = _innovation_means(torch.baddbmm(_eye(x.shape[1], x), x, x.transpose(-1, -2), alpha=1 / lam), y)
    return _fallback(pred, ok, x, y, lam)


def _fallback(pred, ok, x, y, lam):
    if bool(ok.all()):
        return pred
    bad = ~ok
    pred = pred.clone()
    pred[bad] = pinv_prefix(x[bad], y[bad], lam)
    return pred


def pinv_prefix(x: torch.Tensor, y: torch.Tensor, lam: float = 0.0) -> torch.Tensor:
    """x_tᵀ (G_t + λI)⁺ b_t by a batched eigh of every prefix's Gram matrix: exact but O(P T d³).

    Used for degenerate prompts only.  (P, T, d), (P, T) → (P, T).
    """
    d = x.shape[-1]
    if x.shape[0] == 0:
        return y.clone()
    G = exclusive_cumsum(x[..., :, None] * x[..., None, :], dim=-3)  # (P, T, d, d)
    G = G + lam * torch.eye(d, dtype=x.dtype, device=x.device)
    b = exclusive_cumsum(y[..., None] * x, dim=-2)  # (P, T, d)
    evals, evecs = torch.linalg.eigh(G)
    # an exactly singular direction shows up as |λ| ~ eps·λ_max, so the cut is relative
    cut = 10 * _rank_tol(x) * evals.abs().amax(-1, keepdim=True)
    inv = torch.where(evals > cut, 1 / evals, torch.zeros_like(evals))
    proj_b = (evecs.transpose(-1, -2) @ b[..., None])[..., 0]  # (P, T, d)
    proj_x = (evecs.transpose(-1, -2) @ x[..., None])[..., 0]
    return (proj_x * inv * proj_b).sum(-1)
