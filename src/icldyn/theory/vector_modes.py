"""Mode dynamics of the exact-dynamics paper's own linear model (Mainali & Teixeira 2025, Part A
of specs/grokking-spectral.md): vector-valued tasks W^µ = U Λ^µ Uᵀ sharing Σ_x = U S Uᵀ's
eigenbasis, a fixed pool of P tasks, and a one-layer linear attention whose value and key-query
blocks are p₂ = U diag(p) Uᵀ and q₁ = U diag(q) Uᵀ, so that ŷ = p₂ (Σ_i y_i x_iᵀ / N) q₁ x_q.

Two systems, both on the lab's clock t = Σ lr, for the loss ½·E‖ŷ − y‖² averaged (not summed)
over the P tasks, so the paper's τ_α = (η P s_α²)⁻¹ becomes τ_α = 1/(c_α s_α²) with
c_α = (1/P) Σ_µ (λ^µ_α)² (≈ 1; the pool's own second moment):

1. `ModeSystem`, the paper's decoupled per-mode flow:
       τ_α ṗ_α = q_α (1 − p_α q_α s^∞_α),   τ_α q̇_α = p_α (1 − p_α q_α s^∞_α),
   with s^∞_α = ((N + 1) s_α + Tr S)/N (`paper_s_inf`; s_α when N = ∞). Each p_α² − q_α² is
   conserved; from a balanced start a_α = p_α q_α is logistic,
       a(t) = a^∞ a₀ / (a₀ + (a^∞ − a₀) e^{−2t/τ}),  a^∞ = 1/s^∞,
   and reaches a^∞/2 at t½ = (τ/2) ln((a^∞ − a₀)/a₀).
2. `LayerSystem`, the exact gradient flow of the layer's population loss (derived with the
   Wishart moments E Ŝ_αα² = s_α²(1 + 2/N), E Ŝ_αβ² = s_α s_β / N, Ŝ = Uᵀ Σ̂ U):
       L = ½ Σ_α c_α [p_α² s_α (s_α² q_α² (1 + 1/N) + K/N) − 2 p_α q_α s_α² + s_α],
       K = Σ_β q_β² s_β².
   The K/N term couples the modes: at finite N only Σ_α (p_α² − q_α²) is conserved (the layer's
   one rescaling symmetry), and the per-mode closed form holds exactly only as N → ∞, where both
   systems coincide (s^∞ = s). The paper's s^∞ is what one gets by giving every output mode the
   same weight (as the scalar ZFB task does); tests/test_vector_modes.py checks each statement.

Pure numpy/scipy, float64; independent of icldyn.tasks and icldyn.models.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.integrate import solve_ivp

RTOL, ATOL = 1e-10, 1e-13


def paper_s_inf(s, n_points: int | None) -> np.ndarray:
    """s^∞_α = ((N + 1) s_α + Tr S)/N (d,); s itself for N = None (the N → ∞ limit)."""
    s = np.asarray(s, dtype=np.float64)
    return s.copy() if n_points is None else ((n_points + 1) * s + s.sum()) / n_points


def _check(s, c):
    s = np.asarray(s, dtype=np.float64).reshape(-1)
    c = np.ones_like(s) if c is None else np.asarray(c, dtype=np.float64).reshape(-1)
    if s.size == 0 or np.any(s <= 0) or c.shape != s.shape or np.any(c <= 0):
        raise ValueError(f"s and c must be positive arrays of one length, got s={s}, c={c}")
    return s, c


def _solve(rhs, y0, times) -> np.ndarray:
    """States (T, 2d) at `times` (non-decreasing, ≥ 0) of dy/dt = rhs(y) from y0."""
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    if times.size == 0 or times[0] < 0 or np.any(np.diff(times) < 0):
        raise ValueError("times must be a non-empty, non-decreasing grid of times ≥ 0")
    if times[-1] == 0:
        return np.repeat(np.asarray(y0, float)[None], times.size, axis=0)
    sol = solve_ivp(lambda t, y: rhs(y), (0.0, times[-1]), y0, method="LSODA", t_eval=times,
                    rtol=RTOL, atol=ATOL)
    if not sol.success:
        raise RuntimeError(f"mode ODE failed: {sol.message}")
    return sol.y.T


@dataclass
class ModeSystem:
    """The paper's decoupled modes: s (d,) eigenvalues of Σ_x, s_inf (d,) = s^∞, c (d,) pool moments."""

    s: np.ndarray
    s_inf: np.ndarray
    c: np.ndarray | None = None

    def __post_init__(self):
        self.s, self.c = _check(self.s, self.c)
        self.s_inf = np.asarray(self.s_inf, dtype=np.float64).reshape(self.s.shape)

    @property
    def tau(self) -> np.ndarray:
        """τ_α = 1/(c_α s_α²) (d,) on the clock t = Σ lr (task-mean loss)."""
        return 1 / (self.c * self.s**2)

    @property
    def a_inf(self) -> np.ndarray:
        """The fixed point a^∞_α = 1/s^∞_α (d,): ŷ = W Σ̂ [((N+1)/N) Σ + (Tr Σ/N) I]⁻¹ x_q."""
        return 1 / self.s_inf

    def rhs(self, y: np.ndarray) -> np.ndarray:
        d = self.s.size
        p, q = y[:d], y[d:]
        g = (1 - p * q * self.s_inf) / self.tau
        return np.concatenate([q * g, p * g])

    def integrate(self, p0, q0, times) -> dict[str, np.ndarray]:
        """p, q, a = pq, conserved = p² − q² (T, d) and loss (T,) at `times`."""
        y0 = np.concatenate([np.broadcast_to(p0, self.s.shape), np.broadcast_to(q0, self.s.shape)]).astype(float)
        ys = _solve(self.rhs, y0, times)
        return curves(self, ys)

    def closed_form(self, a0, times) -> np.ndarray:
        """The logistic a_α(t) (T, d) from a balanced start p = q = √a₀."""
        t = np.asarray(times, dtype=np.float64)[:, None]
        a0 = np.broadcast_to(np.asarray(a0, dtype=np.float64), self.s.shape)
        return self.a_inf * a0 / (a0 + (self.a_inf - a0) * np.exp(-2 * t / self.tau))

    def half_time(self, a0) -> np.ndarray:
        """t½ (d,): the logistic reaches a^∞/2 (balanced start at a₀ < a^∞/2)."""
        return self.tau / 2 * np.log((self.a_inf - a0) / a0)

    def loss(self, p, q) -> np.ndarray:
        """½ Σ_α c_α s_α (s_α s^∞_α a² − 2 s_α a + 1), a = pq. p, q (..., d) → (...)."""
        a = np.asarray(p) * np.asarray(q)
        return 0.5 * (self.c * self.s * (self.s * self.s_inf * a**2 - 2 * self.s * a + 1)).sum(-1)

    def grad(self, p, q) -> tuple[np.ndarray, np.ndarray]:
        """(∂L/∂p, ∂L/∂q) (d,) each, for the autograd check of `rhs`."""
        r = self.c * self.s**2 * (p * q * self.s_inf - 1)
        return q * r, p * r


@dataclass
class LayerSystem:
    """The layer's exact reduced flow: s (d,), n_points N (None: N → ∞), c (d,) pool moments."""

    s: np.ndarray
    n_points: int | None
    c: np.ndarray | None = None

    def __post_init__(self):
        self.s, self.c = _check(self.s, self.c)
        self.inv_n = 0.0 if self.n_points is None else 1.0 / self.n_points

    def loss(self, p, q) -> np.ndarray:
        """The population loss above. p, q (..., d) → (...)."""
        p, q = np.asarray(p, float), np.asarray(q, float)
        s, c, k = self.s, self.c, self.inv_n
        K = (q**2 * s**2).sum(-1, keepdims=True)
        return 0.5 * (c * (p**2 * s * (s**2 * q**2 * (1 + k) + K * k) - 2 * p * q * s**2 + s)).sum(-1)

    def grad(self, p, q) -> tuple[np.ndarray, np.ndarray]:
        s, c, k = self.s, self.c, self.inv_n
        K, G = (q**2 * s**2).sum(), (c * p**2 * s).sum()
        dp = c * (p * s * (s**2 * q**2 * (1 + k) + K * k) - q * s**2)
        dq = c * p**2 * s**3 * q * (1 + k) + G * k * q * s**2 - c * p * s**2
        return dp, dq

    def rhs(self, y: np.ndarray) -> np.ndarray:
        d = self.s.size
        dp, dq = self.grad(y[:d], y[d:])
        return -np.concatenate([dp, dq])

    def integrate(self, p0, q0, times) -> dict[str, np.ndarray]:
        y0 = np.concatenate([np.broadcast_to(p0, self.s.shape), np.broadcast_to(q0, self.s.shape)]).astype(float)
        return curves(self, _solve(self.rhs, y0, times))


def curves(system, ys: np.ndarray) -> dict[str, np.ndarray]:
    d = system.s.size
    p, q = ys[:, :d], ys[:, d:]
    return {"p": p, "q": q, "a": p * q, "conserved": p**2 - q**2, "loss": system.loss(p, q)}
