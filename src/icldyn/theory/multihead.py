"""Numerics for multi-head softmax attention on I-task regression (Chen, Sheen, Wang & Yang 2024).

Setting (spec, reconstructed): x ~ N(0, I_d), d = I·d₀ in I blocks; y^{(i)} = β_iᵀx_{B_i} + ε_i with
β_i ~ N(0, I_{d₀}/d₀), ε ~ N(0, σ²); L examples and a query whose target y_q = Gᵀx_q is noiseless.
Losses follow the training convention: ½·E‖ŷ_q − y_q‖², summed over the I tasks.

1. The decomposable H-head model, head h with (ω^h, μ^h) ∈ R^I × R^I, predicts task i as
   ŷ_i = Σ_h μ_i^h Σ_l y_{l,i} a^h_l,  a^h = softmax_l(Σ_j ω_j^h x_{l,B_j}ᵀ x_{q,B_j}).
   Its population loss is invariant under the bases Φ, Ψ (x, ε are isotropic), so it is computed in
   the canonical basis. The attention depends on x only, so β and ε integrate out exactly
   (Rao-Blackwell): with V_i = Σ_h μ_i^h X_iᵀ a^h and m_i = Σ_h μ_i^h a^h,
       E[(ŷ_i − y_{q,i})² | x] = ‖V_i − x_{q,B_i}‖² / d₀ + σ² ‖m_i‖²,
   leaving a Monte-Carlo average over the inputs x alone. Fixing those draws (common random numbers)
   makes the loss a smooth deterministic function of (ω, μ) to optimise; its Monte-Carlo accuracy
   is the standard error of the per-prompt conditional losses.
2. `optimal_decomposable`: the best H-head decomposable model. The loss is quadratic in μ for
   fixed ω, so μ is solved exactly (variable projection) and L-BFGS runs over ω from several
   starts; the optimum's loss is re-estimated on independent prompts (no optimisation bias).
3. The closed-form population losses of the per-task estimators at their optimal steps: one-step GD
   and one-step GD on centred data ("debiased GD"). The estimators themselves, which take prompts, are
   registered in `estimators/multihead.py`.

Independent of `icldyn.tasks` and `icldyn.models`: everything here takes tensors and sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

F64 = torch.float64


# -- 1. the decomposable model's population loss by Monte-Carlo over x (CRN) -----------------------
@dataclass
class InputSample:
    """Fixed input draws: keys (N, L, I, d₀), query (N, I, d₀), block similarities c (N, L, I)."""

    keys: torch.Tensor
    query: torch.Tensor
    noise_std: float

    def __post_init__(self):
        self.sim = torch.einsum("nlid,nid->nli", self.keys, self.query)  # x_{l,B_i}ᵀ x_{q,B_i}

    @property
    def d0(self) -> int:
        return self.keys.shape[-1]


def input_sample(n_tasks: int, d0: int, n_points: int, n_prompts: int, noise_std: float = 0.0,
                 seed: int = 0) -> InputSample:
    """`n_prompts` prompts' inputs drawn from a plain torch generator seeded with `seed` (float64)."""
    g = torch.Generator().manual_seed(seed)
    keys = torch.randn(n_prompts, n_points, n_tasks, d0, generator=g, dtype=F64)
    query = torch.randn(n_prompts, n_tasks, d0, generator=g, dtype=F64)
    return InputSample(keys, query, float(noise_std))


def _attention(omega: torch.Tensor, s: InputSample) -> torch.Tensor:
    """a^h_l (N, H, L) for ω (H, I)."""
    return torch.softmax(torch.einsum("nli,hi->nhl", s.sim, omega), dim=-1)


def prompt_losses(omega: torch.Tensor, mu: torch.Tensor, s: InputSample) -> torch.Tensor:
    """Per-prompt ½·Σ_i E[(ŷ_i − y_{q,i})² | x] (N,) for ω, μ (H, I); differentiable in ω, μ."""
    a = _attention(omega, s)
    v = torch.einsum("hi,nhl,nlid->nid", mu, a, s.keys)          # V_i (N, I, d₀)
    err = (v - s.query).pow(2).sum(-1) / s.d0                    # β part   (N, I)
    if s.noise_std > 0:
        m = torch.einsum("hi,nhl->nil", mu, a)                   # m_i (N, I, L)
        err = err + s.noise_std**2 * m.pow(2).sum(-1)            # ε part
    return 0.5 * err.sum(-1)


def decomposable_loss(omega, mu, s: InputSample) -> tuple[torch.Tensor, float]:
    """(loss, standard error) of the H-head decomposable model (ω, μ) (H, I) on the inputs `s`."""
    losses = prompt_losses(torch.as_tensor(omega, dtype=F64), torch.as_tensor(mu, dtype=F64), s)
    return losses.mean(), float(losses.detach().std() / len(losses) ** 0.5)


def _normal_equations(omega: torch.Tensor, s: InputSample) -> tuple[torch.Tensor, torch.Tensor]:
    """The CRN loss is ½Σ_i (μ_iᵀA_iμ_i − 2b_iᵀμ_i + E‖x_{q,B_i}‖²/d₀) for fixed ω (H, I), with
    A_i = E[V^hᵀV^{h'}/d₀ + σ² a^hᵀa^{h'}] (I, H, H) and b_i = E[V^hᵀx_{q,B_i}/d₀] (I, H), V^h = X_iᵀa^h."""
    a = _attention(omega, s)
    V = torch.einsum("nhl,nlid->nihd", a, s.keys)                # (N, I, H, d₀)
    A = torch.einsum("nihd,nikd->ihk", V, V) / s.d0
    if s.noise_std > 0:
        A = A + s.noise_std**2 * torch.einsum("nhl,nkl->hk", a, a)
    b = torch.einsum("nihd,nid->ih", V, s.query) / s.d0
    return A / len(V), b / len(V)


def _solve(A: torch.Tensor, b: torch.Tensor, support: torch.Tensor | None, ridge: float = 1e-10) -> torch.Tensor:
    """μ_i = A_i⁻¹b_i per task → (H, I), restricted to the heads `support[:, i]` allows (others 0).
    The tiny ridge (relative to tr A_i) keeps coinciding heads (a singular A_i) solvable."""
    H = A.shape[-1]
    eye = torch.eye(H, dtype=F64)
    if support is not None:
        m = support.T.to(F64)                                    # (I, H)
        A = A * m[:, :, None] * m[:, None, :] + torch.diag_embed(1 - m)
        b = b * m
    A = A + ridge * A.diagonal(dim1=-2, dim2=-1).sum(-1)[:, None, None] / H * eye
    return torch.linalg.solve(A, b).T


def optimal_mu(omega: torch.Tensor, s: InputSample, support: torch.Tensor | None = None) -> torch.Tensor:
    """argmin_μ of the CRN loss for fixed ω (H, I) → μ (H, I): one H×H normal equation per task."""
    return _solve(*_normal_equations(omega, s), support)


@dataclass
class DecomposableOptimum:
    omega: torch.Tensor          # (H, I)
    mu: torch.Tensor             # (H, I)
    loss: float                  # on independent evaluation prompts
    stderr: float                # its Monte-Carlo standard error
    loss_crn: float              # on the optimisation prompts
    starts: dict[str, float] = field(default_factory=dict)  # final CRN loss per start


def decomposable_starts(n_tasks: int, n_heads: int, scale: float = 0.5, seed: int = 0) -> dict[str, torch.Tensor]:
    """Initial ω (H, I) by name: one head per task (head h on task h mod I); heads sharing every
    task nearly symmetrically (the training init); opposite-sign pairs (the follow-up's debiased-GD
    heads: shared by all tasks, and per task when H ≥ 2I); two random ones."""
    g = torch.Generator().manual_seed(seed)
    I, H = n_tasks, n_heads
    heads = torch.arange(H)
    per_task = torch.zeros(H, I, dtype=F64)
    per_task[heads, heads % I] = scale
    symmetric = scale * (1 + 0.1 * torch.rand(H, I, generator=g, dtype=F64))
    starts = {"one_head_per_task": per_task, "symmetric": symmetric}
    if H >= 2:
        starts["paired_shared"] = symmetric * torch.where(heads % 2 == 0, 1.0, -1.0).to(F64)[:, None]
    if H >= 2 * I:
        starts["paired_per_task"] = per_task * torch.where(heads // I % 2 == 0, 1.0, -1.0).to(F64)[:, None]
    for k in range(2):
        starts[f"random_{k}"] = scale * torch.randn(H, I, generator=g, dtype=F64)
    return starts


def optimal_decomposable(n_tasks: int, n_heads: int, d0: int, n_points: int, noise_std: float = 0.0, *,
                         n_prompts: int = 20_000, n_eval_prompts: int | None = None, seed: int = 0,
                         max_iter: int = 200, starts: dict[str, torch.Tensor] | None = None,
                         support: torch.Tensor | None = None) -> DecomposableOptimum:
    """The best H-head decomposable model (ω*, μ*) (H, I) by L-BFGS over ω with μ = μ*(ω) exact.

    Optimises on `n_prompts` CRN inputs (seed `seed`), then reports the loss and its standard error
    on `n_eval_prompts` independent inputs (seed `seed + 1`). A local optimiser on a non-convex
    landscape: several starts (`decomposable_starts`) are run and the best kept. `support` (H, I)
    bool restricts head h to the tasks it marks, in both ω and μ (e.g. the identity for "each head
    keeps one task"); None lets every head use every task.

    With H ≥ 2 and free support the best model can be an infimum rather than a minimum: heads pair
    up with opposite signs, ω → 0 and μ ~ 1/ω (centred one-step GD, `estimators.multihead`).
    L-BFGS then stops at small ω and large μ with the loss within its tolerance of the limit.
    """
    s = input_sample(n_tasks, d0, n_points, n_prompts, noise_std, seed)
    starts = decomposable_starts(n_tasks, n_heads, seed=seed) if starts is None else starts
    mask = None if support is None else support.to(F64)
    q = s.query.pow(2).sum(-1).mean(0) / d0                      # E‖x_{q,B_i}‖²/d₀ on the sample (I,)

    def objective(omega):
        # at μ*(ω) the quadratic collapses to ½Σ_i (q_i − b_iᵀμ_i*): one pass over the prompts
        omega = omega if mask is None else omega * mask
        A, b = _normal_equations(omega, s)
        return 0.5 * (q - (b * _solve(A, b, support).T).sum(-1)).sum()

    best, results = None, {}
    for name, omega0 in starts.items():
        omega = omega0.clone().to(F64).requires_grad_(True)
        opt = torch.optim.LBFGS([omega], lr=1, max_iter=max_iter, tolerance_grad=1e-9,
                                tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = objective(omega)
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            loss = float(objective(omega))
        results[name] = loss
        if best is None or loss < best[0]:
            best = (loss, omega.detach().clone() if mask is None else omega.detach() * mask)
    _, omega = best
    with torch.no_grad():
        mu = optimal_mu(omega, s, support)
        loss_crn, _ = decomposable_loss(omega, mu, s)
        ev = input_sample(n_tasks, d0, n_points, n_eval_prompts or n_prompts, noise_std, seed + 1)
        loss, stderr = decomposable_loss(omega, mu, ev)
    return DecomposableOptimum(omega, mu, float(loss), stderr, float(loss_crn), results)


# -- 3. closed forms of the per-task estimators (estimators/multihead.py) ------------------------------
def gd_step(d0: int, n_points: int, noise_std: float = 0.0) -> float:
    """Optimal η of one-step GD from 0: 1/E‖h‖² with h = (1/L)Σ y_l x_l, E‖h‖² = 1 + (1 + d₀ + σ²d₀)/L
    (E S² = (1 + (1+d₀)/L) I for the sample second moment S of N(0, I_{d₀}); E‖β‖² = 1)."""
    return 1.0 / (1 + (1 + d0 + noise_std**2 * d0) / n_points)


def gd_loss(n_tasks: int, d0: int, n_points: int, noise_std: float = 0.0) -> float:
    """½·Σ_i population risk of one-step GD at its optimal η: ½·I·(1 − η*)."""
    return 0.5 * n_tasks * (1 - gd_step(d0, n_points, noise_std))


def centred_gd_step(d0: int, n_points: int, noise_std: float = 0.0) -> float:
    """Optimal η of centred one-step GD: L / (L + d₀ + σ²d₀). With L·S_c ~ Wishart(L−1, I):
    E S_c = (L−1)/L, E S_c² = (L−1)(L+d₀)/L², noise E‖·‖² = σ²d₀(L−1)/L²."""
    return n_points / (n_points + d0 + noise_std**2 * d0)


def centred_gd_loss(n_tasks: int, d0: int, n_points: int, noise_std: float = 0.0) -> float:
    """½·I·(1 − (L−1)/(L + d₀ + σ²d₀)): centring costs one example on this zero-mean data."""
    return 0.5 * n_tasks * (1 - (n_points - 1) / (n_points + d0 + noise_std**2 * d0))


def noise_step_factor(d0: int, n_points: int, noise_std: float) -> float:
    """How much label noise σ shrinks the optimal centred-GD step (the debiased heads' limit):
    η*(σ)/η*(0) = (L + d₀)/(L + d₀ + σ²d₀)."""
    return centred_gd_step(d0, n_points, noise_std) / centred_gd_step(d0, n_points, 0.0)


def query_losses(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-prompt ½‖ŷ − y_q‖² (...,) for pred (..., I) and y (..., T, I) with the query last."""
    return 0.5 * (pred - y[..., -1, :]).pow(2).sum(-1)


def mean_stderr(losses: torch.Tensor) -> tuple[float, float]:
    """Mean and Monte-Carlo standard error of per-prompt losses."""
    flat = losses.detach().flatten().to(F64)
    return float(flat.mean()), float(flat.std() / len(flat) ** 0.5)
