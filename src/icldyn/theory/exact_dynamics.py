"""Reduced gradient flow of a one-layer LSA on Gaussian data with diagonal Λ (seed 004's setting).

From an init that commutes with Λ = diag(λ) (the ZFB init), gradient flow keeps W^{PV} = v·e eᵀ and
W^{KQ}'s x-block U = diag(u), so the prediction is ŷ = hᵀ (v U) x_q and only d + 1 numbers move.
With N examples per prompt, γ_i = (1 + 1/N) λ_i + tr Λ / N and mode strengths b_i = v u_i, the
training loss (½·risk) is

    L(v, u) = ½ Σ_i λ_i² (γ_i b_i² − 2 b_i) + ½ tr Λ,

and gradient flow in t = Σ lr is, with r_i = ∂L/∂b_i = λ_i² (γ_i v u_i − 1),

    dv/dt = −Σ_i u_i r_i,        du_i/dt = −v r_i.

Facts used below (each checked in tests/test_exact_dynamics.py):
- v² − Σ u_i² is conserved: d/dt(v² − Σu²) = −2vΣu r + 2Σ u v r = 0. The ZFB init
  (v = σ₀, u_i = σ₀/√d) starts it at exactly 0.
- Fixed points: the origin (a saddle; loss ½ tr Λ, no ICL) and the manifold b_i = 1/γ_i
  (loss ½(tr Λ − Σ λ_i²/γ_i) = R*/2); the conserved quantity picks one point on it.
- Near the origin the flow is linear, ẋ = J x with J = [[0, aᵀ], [a, 0]], a_i = λ_i²: J has
  eigenvalues ±‖a‖ and 0 (d − 1 times), so the escape rate is ρ = ‖a‖ = sqrt(Σ λ_i⁴) and the
  plateau lasts ≈ ln(1/σ₀)/ρ + const, i.e. ln(10)/ρ longer per decade of smaller σ₀.

Modes keep the order of `eigenvalues` as given (callers that want decreasing λ sort first).
Pure numpy/scipy, float64; independent of icldyn.tasks and icldyn.models.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.integrate import solve_ivp

RTOL, ATOL = 1e-10, 1e-13  # tight: the tests compare against GD to O(lr) and need the ODE exact


def zfb_initial(sigma0: float, d: int) -> tuple[float, np.ndarray]:
    """(v0, u0 (d,)) of the LSA's ZFB init: W^PV_{dd} = σ₀ and W^KQ's x-block σ₀·I/√d."""
    if sigma0 <= 0 or d < 1:
        raise ValueError(f"sigma0 must be > 0 and d ≥ 1, got sigma0={sigma0}, d={d}")
    return float(sigma0), np.full(d, sigma0 / np.sqrt(d))


@dataclass
class ReducedLSA:
    """The (v, u) system for Λ = diag(eigenvalues) (d,) and N = n_points examples per prompt."""

    eigenvalues: np.ndarray
    n_points: int
    lam: np.ndarray = field(init=False, repr=False)
    gamma: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        lam = np.asarray(self.eigenvalues, dtype=np.float64).reshape(-1)
        if lam.size == 0 or np.any(lam <= 0):
            raise ValueError(f"eigenvalues must be a non-empty list of positive numbers, got {self.eigenvalues}")
        if int(self.n_points) < 1:
            raise ValueError(f"n_points must be ≥ 1, got {self.n_points}")
        self.n_points = int(self.n_points)
        self.lam = lam
        self.gamma = (1 + 1 / self.n_points) * lam + lam.sum() / self.n_points  # (d,)

    @property
    def d(self) -> int:
        return self.lam.size

    # -- the vector field ----------------------------------------------------------------------
    def _split(self, y):
        y = np.asarray(y, dtype=np.float64)
        return y[..., 0], y[..., 1:]

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """dy/dt for the state y = (v, u_1..u_d) (d+1,) — the signature solve_ivp expects."""
        v, u = self._split(y)
        r = self.lam**2 * (self.gamma * v * u - 1)
        return np.concatenate([[-(u * r).sum()], -v * r])

    def jacobian(self, y: np.ndarray) -> np.ndarray:
        """∂(dy/dt)/∂y (d+1, d+1); handed to the stiff solver (mode 1 and mode d differ ~10³ in rate)."""
        v, u = self._split(y)
        a = self.lam**2
        r = a * (self.gamma * v * u - 1)
        J = np.empty((self.d + 1, self.d + 1))
        J[0, 0] = -(a * self.gamma * u * u).sum()
        J[0, 1:] = -r - a * self.gamma * v * u
        J[1:, 0] = -r - a * self.gamma * v * u
        J[1:, 1:] = np.diag(-(v**2) * a * self.gamma)
        return J

    def loss(self, v, u) -> np.ndarray:
        """½·risk. v (...), u (..., d) → (...)."""
        b = np.asarray(v, dtype=np.float64)[..., None] * np.asarray(u, dtype=np.float64)
        return 0.5 * (self.lam**2 * (self.gamma * b**2 - 2 * b)).sum(-1) + 0.5 * self.lam.sum()

    # -- integration ---------------------------------------------------------------------------
    def integrate(self, v0: float, u0, times, method: str = "LSODA", rtol: float = RTOL,
                  atol: float = ATOL) -> dict[str, np.ndarray]:
        """Solve from (v0, u0) at t = 0 and sample at `times` (T,), non-decreasing, ≥ 0.

        Returns float64 arrays: time (T,), v (T,), u (T, d), b (T, d), loss (T,),
        mode_progress (T, d) = γ_i b_i (1 on the fixed manifold), conserved (T,) = v² − Σu².
        """
        times = np.asarray(times, dtype=np.float64).reshape(-1)
        if times.size == 0 or times[0] < 0 or np.any(np.diff(times) < 0):
            raise ValueError("times must be a non-empty, non-decreasing grid of times ≥ 0")
        y0 = np.concatenate([[float(v0)], np.broadcast_to(np.asarray(u0, dtype=np.float64), (self.d,))])
        if times[-1] == 0:
            ys = np.repeat(y0[None], times.size, axis=0)
        else:
            sol = solve_ivp(self.rhs, (0.0, times[-1]), y0, method=method, t_eval=times,
                            jac=lambda t, y: self.jacobian(y), rtol=rtol, atol=atol)
            if not sol.success:
                raise RuntimeError(f"reduced LSA ODE failed: {sol.message}")
            ys = sol.y.T
        return self._curves(times, ys)

    def _curves(self, times, ys) -> dict[str, np.ndarray]:
        v, u = ys[:, 0], ys[:, 1:]
        b = v[:, None] * u
        return {"time": times, "v": v, "u": u, "b": b, "loss": self.loss(v, u),
                "mode_progress": self.gamma * b, "conserved": v**2 - (u**2).sum(-1)}

    # -- fixed points and rates ----------------------------------------------------------------
    @property
    def saddle_loss(self) -> float:
        """Loss at the origin (v = 0, u = 0): ½ tr Λ — the plateau before any ICL."""
        return 0.5 * float(self.lam.sum())

    @property
    def optimal_loss(self) -> float:
        """Loss on the manifold b_i = 1/γ_i: ½(tr Λ − Σ λ_i²/γ_i) = R*/2."""
        return 0.5 * float(self.lam.sum() - (self.lam**2 / self.gamma).sum())

    def fixed_point(self, conserved: float = 0.0) -> dict[str, np.ndarray | float]:
        """The point of the manifold b_i = 1/γ_i with v² − Σu² = `conserved` (0 from ZFB), v > 0.

        u_i = 1/(γ_i v) turns the constraint into v⁴ − C v² − Σγ⁻² = 0. For C = 0 this is
        ZFB's limit v = ‖Γ⁻¹‖_F^{1/2}. Returns v (float), u (d,), b (d,), loss (float).
        """
        s = (self.gamma**-2).sum()
        v = np.sqrt((conserved + np.sqrt(conserved**2 + 4 * s)) / 2)
        u = 1 / (self.gamma * v)
        return {"v": float(v), "u": u, "b": v * u, "loss": float(self.loss(v, u))}

    def escape_rate(self) -> float:
        """ρ = sqrt(Σ λ_i⁴): the top eigenvalue of the Jacobian at the origin (see module doc)."""
        return float(np.sqrt((self.lam**4).sum()))

    def plateau_slope(self) -> float:
        """Extra plateau time per decade of smaller σ₀: ln(10)/ρ."""
        return float(np.log(10) / self.escape_rate())

    def plateau_length(self, sigma0: float, fraction: float = 0.5) -> float:
        """Linear-theory plateau length from the ZFB init: ln(1/σ₀)/ρ + const.

        The constant: project the init x0 = (σ₀, σ₀/√d·1) on the unstable eigenvector
        e = (1, a/ρ)/√2 of the linearised flow (a = λ², amplitude c = σ₀(1 + Σa/(√d ρ))/√2); then
        v ≈ c e^{ρt}/√2, u ≈ c e^{ρt} a/(ρ√2) and the linear part of the loss decrease is
        Σ λ_i² b_i = c² ρ e^{2ρt}/2. The plateau ends when that reaches `fraction` of the total
        decrease ΔL = ½ Σ λ_i²/γ_i:  t = ln(2·fraction·ΔL / (c² ρ)) / (2ρ).
        It ignores saturation, so it runs a little ahead of the ODE (`escape_time`); the slope
        in ln σ₀ is exact as σ₀ → 0.
        """
        rho, a = self.escape_rate(), self.lam**2
        c = sigma0 * (1 + a.sum() / (np.sqrt(self.d) * rho)) / np.sqrt(2)
        drop = 0.5 * (a / self.gamma).sum()
        return float(np.log(2 * fraction * drop / (c**2 * rho)) / (2 * rho))

    def time_constants(self, v: float | None = None) -> np.ndarray:
        """1/(v² λ_i² γ_i) (d,): mode i's relaxation time with v frozen (default: v at the fixed
        point from ZFB). Only a guide: v grows between stages; the ODE's crossing times are the
        theory's timing."""
        if v is None:
            v = self.fixed_point()["v"]
        return 1 / (v**2 * self.lam**2 * self.gamma)

    # -- event times ---------------------------------------------------------------------------
    def _initial(self, sigma0, v0, u0):
        if (sigma0 is None) == (v0 is None):
            raise ValueError("give either sigma0 (ZFB init) or v0 and u0")
        return zfb_initial(sigma0, self.d) if sigma0 is not None else (v0, u0)

    def _first_times(self, events, y0, t_max) -> list[np.ndarray]:
        """Times each event first fires (rising), doubling the horizon until all have fired."""
        for ev in events:
            ev.direction = 1.0
        while True:
            sol = solve_ivp(self.rhs, (0.0, t_max), y0, method="LSODA", events=events,
                            jac=lambda t, y: self.jacobian(y), rtol=RTOL, atol=ATOL)
            if not sol.success:
                raise RuntimeError(f"reduced LSA ODE failed: {sol.message}")
            if all(te.size for te in sol.t_events) or t_max > 1e9:
                return sol.t_events
            t_max *= 4

    def crossing_times(self, sigma0: float | None = None, level: float = 0.5, *, v0=None, u0=None,
                       t_max: float | None = None) -> np.ndarray:
        """First time each mode_progress γ_i b_i rises through `level` (d,), in the order of λ.

        Found as solver events (root-found on the dense solution), so exact to solver tolerance
        rather than to a grid. Start from ZFB at `sigma0`, or from (v0, u0). NaN for a mode
        that never reaches the level (a level ≥ 1 is never reached from below).
        """
        v0, u0 = self._initial(sigma0, v0, u0)
        y0 = np.concatenate([[float(v0)], np.broadcast_to(np.asarray(u0, float), (self.d,))])
        if level >= 1:
            return np.full(self.d, np.nan)
        events = [(lambda t, y, i=i: self.gamma[i] * y[0] * y[1 + i] - level) for i in range(self.d)]
        t_max = t_max or 10 * (self.time_constants().max() + abs(np.log(abs(float(v0)) + 1e-300)))
        return np.array([te[0] if te.size else np.nan for te in self._first_times(events, y0, t_max)])

    def escape_time(self, sigma0: float | None = None, fraction: float = 0.5, *, v0=None,
                    u0=None) -> float:
        """First time the ODE's loss has fallen by `fraction` of the total drop (saddle → optimum):
        the nonlinear counterpart of `plateau_length`."""
        v0, u0 = self._initial(sigma0, v0, u0)
        y0 = np.concatenate([[float(v0)], np.broadcast_to(np.asarray(u0, float), (self.d,))])
        target = self.saddle_loss - fraction * (self.saddle_loss - self.optimal_loss)
        if self.loss(y0[0], y0[1:]) <= target:
            return 0.0
        event = lambda t, y: target - self.loss(y[0], y[1:])  # noqa: E731 — rises through 0
        t_max = 10 * (self.time_constants().max() + abs(np.log(abs(float(v0)) + 1e-300)))
        (te,) = self._first_times([event], y0, t_max)
        return float(te[0]) if te.size else float("nan")
