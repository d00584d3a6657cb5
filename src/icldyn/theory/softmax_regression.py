"""Softmax regression (Li, Song, Xia, Yu & Zhou 2023): loss, gradient, one GD step, the shift bounds.

f(x) = softmax(Ax), L(x; b) = ½‖f(x) − b‖², A (.., n, d), x (.., d), b (.., n); every function is
batched over leading axes and meant for float64. The gradient and one-step formulas are our
derivations (the spec's), checked against autograd in the tests:
  ∇L(x) = Aᵀ(diag(f) − f fᵀ)(f − b),   x₁ = x₀ − η∇L(x₀), from x₀ = 0: x₁ = (η/n) Aᵀ(b − 1/n).
(From 0, f = 1/n and (diag f − ffᵀ)v = (v − mean v)/n; Σb = 1 makes mean(f − b) = 0.)
Weight shift: b̃ = b − (f(x_{t+1}) − f(x_t)) gives L(x_{t+1}; b) = L(x_t; b̃) exactly.
Lipschitz facts: softmax is ½-Lipschitz in ℓ2 (‖diag f − ffᵀ‖₂ ≤ ½, tight for two tied logits), so
‖Δf‖ ≤ ½‖AΔx‖ and ‖Δf‖ ≤ ½‖ΔA x‖; the published constant M = n^{1.5} exp(10R²) is compared in
log space (it overflows float64 for R ≳ 8).
Data shift of one residual softmax attention layer on tokens T = [A b] (n, d+1):
ΔT = S T W_Vᵀ with S row-stochastic (n, n), so ‖ΔT‖₂ ≤ ‖S‖₂‖T‖₂‖W_V‖₂ ≤ √n ‖T‖₂ ‖W_V‖₂.
"""

from __future__ import annotations

import math

import torch


def predict(A: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """f = softmax(Ax): (.., n)."""
    return torch.softmax((A @ x[..., None]).squeeze(-1), dim=-1)


def loss(A, x, b) -> torch.Tensor:
    """L(x; b) = ½‖softmax(Ax) − b‖²: (..)."""
    return 0.5 * (predict(A, x) - b).pow(2).sum(-1)


def gradient(A, x, b) -> torch.Tensor:
    """∇L(x) = Aᵀ(diag(f) − ffᵀ)(f − b): (.., d)."""
    f = predict(A, x)
    r = f - b
    jr = f * r - f * (f * r).sum(-1, keepdim=True)                       # (diag f − ffᵀ) r
    return (A.transpose(-1, -2) @ jr[..., None]).squeeze(-1)


def one_step(A, b, eta) -> torch.Tensor:
    """x₁ = (η/n) Aᵀ(b − 1/n), one GD step from 0: (.., d). `eta` a float or (..,) tensor."""
    n = A.shape[-2]
    eta = torch.as_tensor(eta, dtype=A.dtype, device=A.device)
    return (eta[..., None] / n) * (A.transpose(-1, -2) @ (b - 1.0 / n)[..., None]).squeeze(-1)


def shifted_target(A, x_t, x_next, b) -> torch.Tensor:
    """b̃ = b − (f(x_{t+1}) − f(x_t)): the target on which x_t does what x_{t+1} does on b. (.., n)"""
    return b - (predict(A, x_next) - predict(A, x_t))


def log_paper_constant(n: int, R) -> torch.Tensor:
    """log M, M = n^{1.5} exp(10R²) (the published form), without overflow."""
    return 1.5 * math.log(n) + 10.0 * torch.as_tensor(R) ** 2


def weight_shift_trials(n_trials: int, n: int, d: int, seed: int = 0, scale: float = 3.0,
                        step: float = 0.3, constant: float = 0.5) -> dict[str, torch.Tensor]:
    """Random trials (batched) of the weight-shift identity and the Lipschitz facts, float64.

    Per trial: A (n, d) Gaussian, x ~ N(0, I/d)·scale, b a random distribution, Δx and ΔA random
    with relative size up to `step`. Returns per-trial values (n_trials,):
      identity_err  |L(x+Δx; b) − L(x; b̃)|,
      df_dx, bound_dx  ‖Δf‖ and c‖AΔx‖ for the weight shift;  df_dA, bound_dA  ‖Δf‖ and c‖ΔA x‖ (c = `constant`),
      ratio_dx, ratio_dA  their ratios (≤ 1 for c = ½),
      log_margin_dx  log‖Δb‖ − log(M‖Δx‖), log_margin_dA the same with ‖ΔA‖₂ (R = max(‖A‖₂, ‖x‖)).
    """
    g = torch.Generator().manual_seed(seed)
    F = torch.float64
    A = torch.randn(n_trials, n, d, generator=g, dtype=F)
    x = torch.randn(n_trials, d, generator=g, dtype=F) * scale / d**0.5
    b = torch.softmax(torch.randn(n_trials, n, generator=g, dtype=F), -1)
    size = step * torch.rand(n_trials, 1, generator=g, dtype=F)
    dx = size * torch.randn(n_trials, d, generator=g, dtype=F) * x.norm(dim=-1, keepdim=True) / d**0.5
    dA = size[..., None] * torch.randn(n_trials, n, d, generator=g, dtype=F) / d**0.5
    b_tilde = shifted_target(A, x, x + dx, b)
    identity = (loss(A, x + dx, b) - loss(A, x, b_tilde)).abs()
    df_x = (predict(A, x + dx) - predict(A, x)).norm(dim=-1)
    df_A = (predict(A + dA, x) - predict(A, x)).norm(dim=-1)
    bound_dx = constant * (A @ dx[..., None]).squeeze(-1).norm(dim=-1)
    bound_dA = constant * (dA @ x[..., None]).squeeze(-1).norm(dim=-1)
    R = torch.maximum(torch.linalg.matrix_norm(A, ord=2), x.norm(dim=-1))
    logM = log_paper_constant(n, R)
    margin_dx = df_x.log() - (logM + dx.norm(dim=-1).log())
    margin_dA = df_A.log() - (logM + torch.linalg.matrix_norm(dA, ord=2).log())
    return {"identity_err": identity, "df_dx": df_x, "bound_dx": bound_dx, "ratio_dx": df_x / bound_dx,
            "df_dA": df_A, "bound_dA": bound_dA, "ratio_dA": df_A / bound_dA,
            "log_margin_dx": margin_dx, "log_margin_dA": margin_dA}


def autograd_errors(n_trials: int, n: int, d: int, seed: int = 0, scale: float = 3.0,
                    gradient_fn=None) -> dict[str, torch.Tensor]:
    """|closed form − autograd| per trial (n_trials,), float64: 'gradient' at a random x (max over
    coordinates), 'one_step' x₁ = (η/n)Aᵀ(b − 1/n) vs 0 − η∇L(0) by autograd (relative to ‖x₁‖);
    also the values themselves ('closed', 'auto': (n_trials, d)) for a figure. `gradient_fn`
    replaces the closed form (tests pass a perturbed formula, which must fail)."""
    gradient_fn = gradient_fn or gradient
    g = torch.Generator().manual_seed(seed)
    F = torch.float64
    A = torch.randn(n_trials, n, d, generator=g, dtype=F)
    x = (torch.randn(n_trials, d, generator=g, dtype=F) * scale / d**0.5).requires_grad_(True)
    b = torch.softmax(torch.randn(n_trials, n, generator=g, dtype=F), -1)
    eta = 10.0 ** (2 * torch.rand(n_trials, generator=g, dtype=F))
    with torch.enable_grad():
        (auto,) = torch.autograd.grad(loss(A, x, b).sum(), x)
        x0 = torch.zeros_like(x).requires_grad_(True)
        (auto0,) = torch.autograd.grad(loss(A, x0, b).sum(), x0)
    closed = gradient_fn(A, x.detach(), b)
    x1 = one_step(A, b, eta)
    auto_x1 = -eta[:, None] * auto0
    return {"gradient": (closed - auto).abs().amax(-1),
            "one_step": (x1 - auto_x1).norm(dim=-1) / auto_x1.norm(dim=-1),
            "closed": closed, "auto": auto}


def data_shift_trials(n_trials: int, n: int, d: int, seed: int = 0, scale: float = 3.0) -> torch.Tensor:
    """‖ΔT‖₂ / (√n ‖T‖₂ ‖W_V‖₂) (n_trials,) for random tasks T = [A b] and random layer weights,
    from diffuse to nearly one-hot attention (W_KQ scaled up to 10)."""
    g = torch.Generator().manual_seed(seed)
    F, D = torch.float64, d + 1
    A = torch.randn(n_trials, n, d, generator=g, dtype=F)
    x = torch.randn(n_trials, d, generator=g, dtype=F) * scale / d**0.5
    T = torch.cat([A, predict(A, x)[..., None]], -1)
    w_kq = torch.randn(n_trials, D, D, generator=g, dtype=F) * 10.0 ** (2 * torch.rand(n_trials, 1, 1, generator=g, dtype=F) - 1) / D
    w_v = torch.randn(n_trials, D, D, generator=g, dtype=F) / D**0.5
    return data_shift_ratio(T, w_kq, w_v)


def near_tied_ratio(n_trials: int = 1000, constant: float = 0.5, seed: int = 0) -> float:
    """max ‖Δf‖/(c‖Δz‖) over two-logit softmaxes with near-tied logits and small steps Δz ∝ (1, −1):
    → ½/c, so the bound with c < ½ is violated here (the negative control of the ½ constant)."""
    g = torch.Generator().manual_seed(seed)
    F = torch.float64
    z = 1e-3 * torch.randn(n_trials, 2, generator=g, dtype=F)
    dz = 1e-4 * torch.randn(n_trials, 1, generator=g, dtype=F) * torch.tensor([1.0, -1.0], dtype=F)
    df = (torch.softmax(z + dz, -1) - torch.softmax(z, -1)).norm(dim=-1)
    return float((df / (constant * dz.norm(dim=-1))).max())


def attention_data_shift(T: torch.Tensor, w_kq: torch.Tensor, w_v: torch.Tensor):
    """One residual softmax self-attention layer on tokens T (.., n, D): T' = T + S T W_Vᵀ,
    S[j, i] = softmax_i(t_iᵀ W_KQ t_j) (the model's convention: the query on the right).
    Returns (ΔT (.., n, D), S (.., n, n)). w_kq, w_v (.., D, D) broadcast against T."""
    scores = T @ w_kq @ T.transpose(-1, -2)                              # [i, j] = t_iᵀ W t_j
    S = torch.softmax(scores.transpose(-1, -2), dim=-1)                  # row j: query t_j
    return S @ T @ w_v.transpose(-1, -2), S


def data_shift_ratio(T, w_kq, w_v, root_n: bool = True) -> torch.Tensor:
    """‖ΔT‖₂ / (√n ‖T‖₂ ‖W_V‖₂) (..): ≤ 1 always; root_n=False drops the √n (a bound that fails
    when every query attends to one token: ‖S‖₂ = √n)."""
    dT, _ = attention_data_shift(T, w_kq, w_v)
    n = T.shape[-2]
    bound = torch.linalg.matrix_norm(T, ord=2) * torch.linalg.matrix_norm(w_v, ord=2)
    return torch.linalg.matrix_norm(dT, ord=2) / (bound * (n**0.5 if root_n else 1.0))


def lipschitz_ratio(A, dA, x, constant: float = 0.5) -> torch.Tensor:
    """‖f(A+ΔA, x) − f(A, x)‖ / (c‖ΔA x‖) (..): ≤ 1 for c = ½."""
    df = (predict(A + dA, x) - predict(A, x)).norm(dim=-1)
    return df / (constant * (dA @ x[..., None]).squeeze(-1).norm(dim=-1).clamp_min(1e-300))


def weight_ratio(A, x0, x1, constant: float = 0.5) -> torch.Tensor:
    """‖f(A, x₁) − f(A, x₀)‖ / (c‖A(x₁ − x₀)‖) (..): ≤ 1 for c = ½."""
    df = (predict(A, x1) - predict(A, x0)).norm(dim=-1)
    return df / (constant * (A @ (x1 - x0)[..., None]).squeeze(-1).norm(dim=-1).clamp_min(1e-300))
