"""Reduced score dynamics of one softmax attention head on K orthonormal features.

Our derivation (spec `structured-features.md`; Huang, Cheng & Liang 2023 call s_{k,k} = A_k and
s_{k,n} = B_{k,n}). Independent of `icldyn.tasks` and `icldyn.models`: it takes the feature
probabilities p (K,) and the prompt length N as arguments. float64 torch tensors throughout,
so every quantity can be differentiated.

Setting: tokens and query iid x = v_n with probability p_n, w ~ N(0, I), y = ⟨w, x⟩, and
ŷ = Σ_i softmax_i(x_iᵀ Q x_q) y_i (the query not among the keys). For a query of feature k
only the scores s_{k,n} = v_nᵀ Q v_k matter; with c ~ Multinomial(N, p) the token counts and
u_n = e^{s_{k,n}}, the attention mass on feature n is a_n = c_n u_n / Z, Z = Σ_m c_m u_m.
Since ⟨w, v_n⟩ are iid N(0, 1), E_w(ŷ − y)² = (1 − a_k)² + Σ_{n≠k} a_n², so

    ℓ_k(s_k) = ½ E_c[(1 − a_k)² + Σ_{n≠k} a_n²],     L(Q) = ½E(ŷ − y)² = Σ_k p_k ℓ_k(s_k).

The matrices v_n v_kᵀ are Frobenius-orthonormal and ∂s_{k,n}/∂Q = v_n v_kᵀ, so ∂L/∂Q =
Σ_{k,n} p_k ∂ℓ_k/∂s_{k,n} v_n v_kᵀ: gradient descent on Q moves the scores alone,
s_k ← s_k − η p_k ∇ℓ_k(s_k) (rows decouple; feature k runs on the clock η p_k), and leaves
every component of Q outside span(V) ⊗ span(V) where it was.

Per prompt, with b = 1 − a_k = Σ_{n≠k} a_n and R = Σ_{n≠k} a_n² (∂a_n/∂s_j = a_n(δ_nj − a_j)):
    ∂ℓ/∂s_j = a_j (a_j + a_k b − R)   (j ≠ k),      ∂ℓ/∂s_k = −Σ_{j≠k} ∂ℓ/∂s_j = −2 a_k ℓ.

Expectation over the counts, `expectation="multinomial"` (exact up to quadrature error,
≲ 1e-12; checked against enumeration in the tests): the moments E[X_i X_j (X_n) / Z^m] of
X_n = c_n u_n are turned into one-dimensional integrals by 1/Z^m = ∫_0^∞ t^{m−1} e^{−tZ} dt /
(m−1)! and the multinomial's generating function: E_c[f(c) e^{−tZ}] = G(t)^N E_{Mult(N, r(t))}[f],
G(t) = Σ_n p_n e^{−t u_n}, r_n(t) = p_n e^{−t u_n} / G(t); the tilted multinomial's moments are
polynomials in α_n = u_n r_n. The t-integral is a trapezoid rule in log t (step 0.25; the
integrand is analytic and decays doubly exponentially, so the rule converges geometrically).
Cost O(K² · nodes) per gradient, independent of N. `expectation="large_n"`: c_n = N p_n, so
a_n = p_n u_n / Σ_m p_m u_m (no error floor).
The model's `query_in_softmax=true` variant is not covered here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch

Expectation = Literal["multinomial", "large_n"]
_STEP = 0.25           # trapezoid step in log t
_LEFT, _RIGHT = 32.0, 5.0  # integrand below e^{-32} (left) and e^{-e^5} (right) of the window


def _as(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def _check(s: torch.Tensor, p: torch.Tensor, n: int) -> None:
    if p.dim() != 1 or (p < 0).any() or abs(float(p.sum()) - 1) > 1e-9:
        raise ValueError(f"p must be a probability vector (K,), got {p.tolist()}")
    K = p.shape[0]
    if s.shape[-2:] != (K, K):
        raise ValueError(f"scores must be (K, K) = ({K}, {K}) for {K} feature probabilities, got {tuple(s.shape)}")
    if int(n) < 1:
        raise ValueError(f"n_points must be a positive prompt length, got {n}")


def error_floor(p, n_points: int) -> torch.Tensor:
    """½(1 − p_k)^N (K,): the loss of feature-k queries on prompts with no feature-k token.
    A lower bound on the multinomial ℓ_k (those prompts also carry the other features' variance)."""
    return 0.5 * (1 - _as(p)) ** n_points


# -- the quantities of one state -------------------------------------------------------------------
@dataclass
class ScoreStats:
    """Per query feature k: attention (K, K) E[a_{k,n}], loss (K,) ℓ_k, grad (K, K) ∂ℓ_k/∂s_{k,n}."""

    attention: torch.Tensor
    loss: torch.Tensor
    grad: torch.Tensor

    @property
    def same_feature_attention(self) -> torch.Tensor:
        """a_k = E[a_{k,k}] (K,)."""
        return torch.diagonal(self.attention)


def _large_n(s: torch.Tensor, p: torch.Tensor) -> ScoreStats:
    a = torch.softmax(s + torch.log(p), dim=-1)         # a_{k,n} = p_n u_n / Σ p u  (K, K)
    other = 1 - torch.eye(p.shape[0], dtype=s.dtype)
    a_k = torch.diagonal(a)
    b = (a * other).sum(-1)                            # 1 − a_k, without the cancellation
    R = (a * a * other).sum(-1)
    loss = 0.5 * (b * b + R)
    g = a * (a + (a_k * b - R)[:, None]) * other
    grad = g - torch.diag(g.sum(-1))
    return ScoreStats(a, loss, grad)


def _multinomial(s: torch.Tensor, p: torch.Tensor, n: int) -> ScoreStats:
    K = p.shape[0]
    # shift invariance: subtract each row's max so u ∈ (0, 1] and nothing overflows
    log_u = s - s.max(-1, keepdim=True).values                                    # (K, K)
    u = log_u.exp()
    present = p > 0
    log_u_min = torch.where(present, log_u, torch.zeros_like(log_u)).min(-1).values   # (K,)
    # Z ∈ [N u_min, N]: the integrand lives around t ~ 1/Z; G(t)^N ≤ e^{−t N u_min} closes the right
    lo = -math.log(n) - _LEFT
    hi = -math.log(n) - log_u_min + _RIGHT
    n_nodes = int(math.ceil(float((hi - lo).max().detach()) / _STEP)) + 1
    tau = lo + _STEP * torch.arange(n_nodes, dtype=torch.float64)                 # (Q,)
    t = tau.exp()[None, :, None]                                                  # (1, Q, 1)
    log_w = torch.log(p)[None, None, :] - t * u[:, None, :]                       # (K, Q, K)
    log_G = torch.logsumexp(log_w, dim=-1, keepdim=True)                          # (K, Q, 1)
    alpha = u[:, None, :] * torch.exp(log_w - log_G)                              # u_n r_n(t)
    # trapezoid weights of ∫ dt = ∫ t dτ, times G^N; the m-th moment carries t^{m−1}/(m−1)!
    base = _STEP * torch.exp(n * log_G[..., 0] + tau)                             # (K, Q)
    t = t[..., 0]
    w1, w2, w3 = base, base * t, base * t * t / 2

    n1, n2, n3 = float(n), float(n * (n - 1)), float(n * (n - 1) * (n - 2))
    other = (1 - torch.eye(K, dtype=s.dtype))[:, None, :]                         # (K, 1, K) n ≠ k
    uu = u[:, None, :]
    a_k = torch.diagonal(alpha, dim1=0, dim2=2).T[..., None]                      # α_k (K, Q, 1)
    beta = (alpha * other).sum(-1, keepdim=True)                                  # Σ_{n≠k} α_n
    gamma = (alpha * alpha * other).sum(-1, keepdim=True)                         # Σ_{n≠k} α_n²
    eta = (uu * alpha * other).sum(-1, keepdim=True)                              # Σ_{n≠k} u_n α_n

    # E[a_n] = E[X_n / Z]
    attention = torch.einsum("kq,kqn->kn", w1, n1 * alpha)
    # ℓ = ½ E[(Σ_{n≠k} X_n)² + Σ_{n≠k} X_n²] / Z²
    loss = 0.5 * (w2 * (n2 * (beta * beta + gamma) + 2 * n1 * eta)[..., 0]).sum(-1)
    # j ≠ k: E[X_j²]/Z² + E[X_j X_k Σ_{n≠k} X_n − X_j Σ_{n≠k} X_n²]/Z³
    square = n2 * alpha * alpha + n1 * uu * alpha
    triple = n3 * alpha * a_k * beta + n2 * uu * alpha * a_k
    cubic = n3 * alpha * gamma + n2 * (2 * uu * alpha * alpha + alpha * eta) + n1 * uu * uu * alpha
    g = (torch.einsum("kq,kqn->kn", w2, square) + torch.einsum("kq,kqn->kn", w3, triple - cubic)) * other[:, 0]
    grad = g - torch.diag(g.sum(-1))
    return ScoreStats(attention, loss, grad)


def score_stats(s, p, n_points: int, expectation: Expectation = "multinomial") -> ScoreStats:
    """Attention masses, per-feature losses ℓ_k and their gradients at the scores s (K, K)."""
    s, p = _as(s), _as(p)
    _check(s, p, n_points)
    if expectation == "large_n":
        return _large_n(s, p)
    if expectation == "multinomial":
        return _multinomial(s, p, int(n_points))
    raise ValueError(f"expectation must be 'multinomial' or 'large_n', got {expectation!r}")


def feature_loss(s, p, n_points: int, expectation: Expectation = "multinomial") -> torch.Tensor:
    """ℓ_k (K,) at the scores s (K, K)."""
    return score_stats(s, p, n_points, expectation).loss


def loss(s, p, n_points: int, expectation: Expectation = "multinomial") -> torch.Tensor:
    """The population loss ½E(ŷ − y)² = Σ_k p_k ℓ_k (a scalar)."""
    return (_as(p) * feature_loss(s, p, n_points, expectation)).sum()


def score_gradient(s, p, n_points: int, expectation: Expectation = "multinomial") -> torch.Tensor:
    """∂L/∂s (K, K) = p_k ∂ℓ_k/∂s_{k,n}: the gradient of the population loss projected on v_n v_kᵀ."""
    return _as(p)[:, None] * score_stats(s, p, n_points, expectation).grad


# -- dynamics --------------------------------------------------------------------------------------
@dataclass
class Trajectory:
    """The reduced dynamics at R recorded points: step (R,) (None for a flow), time (R,) = Σ lr,
    scores (R, K, K), same_feature_attention (R, K), feature_loss (R, K), loss (R,)."""

    step: torch.Tensor | None
    time: torch.Tensor
    scores: torch.Tensor
    same_feature_attention: torch.Tensor
    feature_loss: torch.Tensor
    loss: torch.Tensor


def _trajectory(steps, times, states, p, n, expectation) -> Trajectory:
    stats = [score_stats(s, p, n, expectation) for s in states]
    fl = torch.stack([st.loss for st in stats])
    return Trajectory(steps, _as(times), torch.stack(states),
                      torch.stack([st.same_feature_attention for st in stats]), fl, fl @ _as(p))


def gradient_descent(p, n_points: int, lr, steps: int, record_steps: Sequence[int] | None = None,
                     s0=None, expectation: Expectation = "multinomial") -> Trajectory:
    """Population GD on the scores from s0 (default 0, i.e. Q(0) = 0), at the training lr: one
    float, or the lr of every update (steps,) (a schedule, as the trainer applies it); time = Σ lr
    before each recorded step. Records at `record_steps` (default every step)."""
    p = _as(p)
    lrs = np.full(steps, float(lr)) if np.ndim(lr) == 0 else np.asarray(lr, dtype=np.float64)
    if lrs.shape != (steps,):
        raise ValueError(f"lr must be one float or {steps} per-update learning rates, got shape {lrs.shape}")
    s = torch.zeros(p.shape[0], p.shape[0], dtype=torch.float64) if s0 is None else _as(s0).clone()
    record = sorted(set(range(steps + 1) if record_steps is None else (int(r) for r in record_steps)))
    if record and (record[0] < 0 or record[-1] > steps):
        raise ValueError(f"record_steps must lie in [0, steps={steps}]")
    states, wanted = [], set(record)
    for step in range(steps + 1):
        if step in wanted:
            states.append(s.clone())
        if step < steps:
            s = s - float(lrs[step]) * score_gradient(s, p, n_points, expectation)
    rec = torch.tensor(record)
    times = (lr * rec.to(torch.float64) if np.ndim(lr) == 0
             else torch.from_numpy(np.concatenate([[0.0], np.cumsum(lrs)])[record]))
    return _trajectory(rec, times, states, p, n_points, expectation)


def gradient_flow(p, n_points: int, times: Sequence[float], s0=None, expectation: Expectation = "multinomial",
                  rtol: float = 1e-8, atol: float = 1e-10) -> Trajectory:
    """The gradient flow ds/dt = −∂L/∂s (the lr → 0 limit on the clock time = Σ lr), by an
    adaptive Runge–Kutta method (scipy `solve_ivp`, RK45), recorded at `times` (sorted, ≥ 0)."""
    from scipy.integrate import solve_ivp

    p = _as(p)
    K = p.shape[0]
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or np.any(np.diff(times) < 0) or times.size == 0 or times[0] < 0:
        raise ValueError("times must be a non-empty sorted sequence of non-negative numbers")
    s0 = np.zeros((K, K)) if s0 is None else _as(s0).numpy()

    def rhs(_, flat):
        return -score_gradient(torch.from_numpy(flat.reshape(K, K)), p, n_points, expectation).numpy().ravel()

    sol = solve_ivp(rhs, (0.0, float(times[-1])), s0.ravel(), t_eval=times, rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"the reduced gradient flow failed: {sol.message}")
    states = [torch.from_numpy(sol.y[:, i].reshape(K, K).copy()) for i in range(times.size)]
    return _trajectory(None, times, states, p, n_points, expectation)


# -- closed form of the balanced large-N flow --------------------------------------------------------
def balanced_crossing_time(K: float, what: str, level: float | None = None) -> float:
    """Closed form of the balanced large-N gradient flow from s = 0 (our derivation).

    With p_k = 1/K, rows keep the form s_k = A e_k + B (1 − e_k); the odds x = (K − 1) e^{−(A−B)}
    of the other features obey dx/dt = −K/(K−1)² · x³/(1 + x)³, a_k = 1/(1 + x) and
    ℓ_k = ½ (1 − a_k)² K/(K − 1). Hence t(x) = (K−1)²/K · [F(K−1) − F(x)] with
    F(x) = x + 3 ln x − 3/x − 1/(2x²). what = "attention": time to a_k = `level` (default ½);
    "error": time to ℓ_k = `level`."""
    def F(x):
        return x + 3 * math.log(x) - 3 / x - 1 / (2 * x * x)

    if what == "attention":
        a = 0.5 if level is None else level
        x = (1 - a) / a
    elif what == "error":
        b = math.sqrt(2 * level * (K - 1) / K)
        x = b / (1 - b)
    else:
        raise ValueError(f"what must be 'attention' or 'error', got {what!r}")
    return (K - 1) ** 2 / K * (F(K - 1) - F(x))
