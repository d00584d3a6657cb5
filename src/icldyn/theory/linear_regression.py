"""Closed forms for in-context linear regression with a one-layer LSA (ZFB, von Oswald, Ahn).

Independent of `icldyn.tasks`: every function takes the input covariance Σ (a (d, d) matrix,
or its eigenvalues λ as a (d,) vector meaning diag λ) and the prompt length n as arguments.
Matrices and risks come back as float64 torch tensors (so a risk can be differentiated);
step sizes as Python floats.

Setting: x_1..x_n, x_q ~ N(0, Σ), w ~ N(0, I), y = ⟨w, x⟩ + ε with ε ~ N(0, σ²); the
predictor is ŷ = hᵀ B x_q with h = (1/n) Σ_i y_i x_i (a one-layer LSA on the ZFB block
structure has B = v·U).
"""

from __future__ import annotations

import torch

Matrix = torch.Tensor  # (d, d) float64


def _cov(sigma) -> Matrix:
    """Σ as a float64 (d, d) tensor; a 1-D input is read as the eigenvalues of a diagonal Σ."""
    s = torch.as_tensor(sigma, dtype=torch.float64)
    if s.dim() == 1:
        return torch.diag(s)
    if s.dim() != 2 or s.shape[0] != s.shape[1]:
        raise ValueError("sigma must be a (d, d) covariance or a (d,) eigenvalue vector, "
                         f"got shape {tuple(s.shape)}")
    return s


def _check_n(n: int, name: str = "n") -> int:
    if int(n) < 1:
        raise ValueError(f"{name} must be a positive number of in-context examples, got {n}")
    return int(n)


def gamma(sigma, n: int) -> Matrix:
    """Γ_n = (1 + 1/n) Σ + (tr Σ / n) I  (d, d): E[S²] = Σ Γ_n for S = (1/n) Σ_i x_i x_iᵀ,
    x_i ~ N(0, Σ) (the Gaussian fourth moment that sets the one-step risk)."""
    s, n = _cov(sigma), _check_n(n)
    eye = torch.eye(s.shape[0], dtype=torch.float64)
    return (1 + 1 / n) * s + torch.trace(s) / n * eye


def risk(B, sigma, n: int, noise_std: float = 0.0, n_test: int | None = None) -> torch.Tensor:
    """Population risk E(hᵀ B x_q − y_q)² of ŷ = hᵀ B x_q.  B (..., d, d) → (...) float64.

    E over x_q gives (Bᵀh − w)ᵀ Σ (Bᵀh − w) + σ²; with h = S w + (1/n) Σ ε_i x_i and the
    Gaussian identity E[S A S] = (1 + 1/n) Σ A Σ + tr(AΣ) Σ / n (A = BΣBᵀ):
        R(B) = tr(B Σ Bᵀ Σ Γ'_n) − 2 tr(B Σ²) + tr Σ + σ²,   Γ'_n = Γ_n + (σ²/n) I.
    `n_test` = M: a test prompt's h averages M examples, so Γ_M (and σ²/M) replace Γ_n.
    Written with Frobenius products ⟨B, M B Σ⟩ rather than traces of products, so it shares
    no code with the task-side closed form that it is tested alongside.
    """
    s = _cov(sigma)
    m = _check_n(n_test if n_test is not None else n, "n_test" if n_test is not None else "n")
    B = torch.as_tensor(B, dtype=torch.float64)
    d = s.shape[0]
    g_eff = gamma(s, m) + noise_std**2 / m * torch.eye(d, dtype=torch.float64)
    left = s @ g_eff                    # ΣΓ': symmetric, since Γ' is a polynomial in Σ
    quad = (B * (left @ B @ s)).sum((-1, -2))       # tr(Bᵀ ΣΓ' B Σ) = tr(B Σ Bᵀ Σ Γ')
    cross = (B * (s @ s)).sum((-1, -2))             # tr(B Σ²), Σ² symmetric
    return quad - 2 * cross + torch.trace(s) + noise_std**2


def optimal_matrix(sigma, n: int, noise_std: float = 0.0) -> Matrix:
    """argmin_B R(B) = (Γ_n + σ²/n I)⁻¹  (d, d); Γ_n⁻¹ without label noise (ZFB's B*).

    Setting ∂R/∂B = 2 ΣΓ' B Σ − 2 Σ² to zero gives B = Γ'⁻¹. With noise the minimiser shrinks
    further than Γ⁻¹ (our extension; the papers treat σ = 0).
    """
    s, n = _cov(sigma), _check_n(n)
    g_eff = gamma(s, n) + noise_std**2 / n * torch.eye(s.shape[0], dtype=torch.float64)
    return torch.linalg.inv(g_eff)


def optimal_risk(sigma, n: int, noise_std: float = 0.0) -> torch.Tensor:
    """R* = R(B*) = tr Σ − tr(B* Σ²) + σ²  (0-d tensor). For Σ = I, σ = 0: d(d+1)/(n+d+1)."""
    s = _cov(sigma)
    b_star = optimal_matrix(s, n, noise_std)
    # B* commutes with Σ, so tr(B*ΣB*ΣΓ') = tr(B*Σ²) and the quadratic term cancels half the cross term
    return torch.trace(s) - torch.trace(b_star @ s @ s) + noise_std**2


def zfb_limit(sigma, n: int, noise_std: float = 0.0) -> tuple[torch.Tensor, Matrix]:
    """ZFB's gradient-flow limit (v, U): v U = B*, balanced v = ‖U‖_F, i.e.
    v = ‖B*‖_F^{1/2} (0-d), U = ‖B*‖_F^{−1/2} B* (d, d).  B* = Γ⁻¹ without noise.

    Balance holds because v² − ‖U‖_F² is conserved by gradient flow and is 0 at ZFB's init.
    """
    b_star = optimal_matrix(sigma, n, noise_std)
    v = torch.linalg.matrix_norm(b_star).sqrt()
    return v, b_star / v


def von_oswald_weights(d: int, eta: float, dtype: torch.dtype = torch.float64) -> tuple[Matrix, Matrix]:
    """(W_PV, W_KQ), each (d+1, d+1): an LSA layer whose prediction is one GD step of size η.

    GD on L(W) = (1/2n) Σ ‖W x_i − y_i‖² from W = 0 gives W_1 = (η/n) Σ y_i x_iᵀ and predicts
    W_1 x_q = η hᵀ x_q. Our LSA predicts the y-entry of z_q + W_PV (Z Zᵀ/n) W_KQ z_q with
    z_q = (x_q; 0) and the query column among the keys; with W_KQ = [[I,0],[0,0]] and
    W_PV = η [[0,0],[0,1]] that entry is 0 + (η/n)(Σ_i y_i x_iᵀ + 0·x_qᵀ) x_q = η hᵀ x_q
    (the query column adds nothing because its y-entry is 0).

    von Oswald et al. write W_K = W_Q = [[I,0],[0,0]] (so W_KQ = W_Kᵀ W_Q is ours) and
    W_V = [[0,0],[0,−I]] scaled by η: the query's y-slot becomes −η hᵀ x_q, i.e. it holds the
    residual 0 − ŷ, and they read the prediction out with a sign flip. We read out +y-entry, so
    the value block's sign is flipped instead: W_PV = −W_V (times η).
    """
    if d < 1:
        raise ValueError(f"d must be a positive dimension, got {d}")
    w_pv = torch.zeros(d + 1, d + 1, dtype=dtype)
    w_pv[d, d] = eta
    w_kq = torch.zeros(d + 1, d + 1, dtype=dtype)
    w_kq[:d, :d] = torch.eye(d, dtype=dtype)
    return w_pv, w_kq


def optimal_one_step_lr_gaussian(n: int, d: int) -> float:
    """η* = n/(n+d+1) for ŷ = η hᵀx_q, x ~ N(0, I): R(ηI) = η² tr Γ − 2ηd + d, tr Γ = d(n+d+1)/n."""
    n = _check_n(n)
    return n / (n + d + 1)


def optimal_one_step_lr_uniform(n: int, d: int, a: float) -> float:
    """η* = 3n / (a²(n + d − 0.2)) for x ~ U(−a, a)^d, w ~ N(0, I), no noise.

    With s = a²/3 = E x_j² and kurtosis κ = E x_j⁴/s² = 9/5: E[S²] = s² (n + d + κ − 2)/n · I
    = s² (n + d − 0.2)/n · I (a Gaussian's κ = 3 gives back n + d + 1), so
    R(η) = η² s³ d (n+d−0.2)/n − 2η s² d + s d, minimised at η = n / (s (n + d − 0.2)).
    """
    n = _check_n(n)
    if not a > 0:
        raise ValueError(f"a must be > 0, got {a}")
    return 3 * n / (a**2 * (n + d - 0.2))


__all__ = [
    "gamma", "risk", "optimal_matrix", "optimal_risk", "zfb_limit", "von_oswald_weights",
    "optimal_one_step_lr_gaussian", "optimal_one_step_lr_uniform",
]
