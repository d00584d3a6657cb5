"""Spectral probes of weight matrices: effective rank, stable rank, top singular values, and
how stable the top singular subspace is between recorded checkpoints.

Seed 004 ("spectral rank dynamics", "subspace stability") does not give its formulas, so these
are the standard definitions (spec, "Spectral diagnostics"). For M (..., m, n) with singular
values σ_1 ≥ σ_2 ≥ ...:
    effective rank  exp(−Σ p_j ln p_j),  p_j = σ_j / Σσ    (Roy & Vetterli 2007)
    stable rank     Σ σ_j² / σ_1²
    overlap_k       (1/k) ‖U_k(M1)ᵀ U_k(M2)‖_F²,  U_k the top-k left singular vectors
A zero matrix has effective rank 0 and stable rank 0 (it spans no direction), not NaN. The
overlap is 1 for equal top-k subspaces and 0 for orthogonal ones; its value is arbitrary when
σ_k = σ_{k+1} (the subspace itself is) or when a matrix is zero.
Every function is batched over leading axes (a seed axis E in training).
"""

from __future__ import annotations

import torch

_TINY = 1e-30  # below this a total of singular values counts as a zero matrix


def _svals(M: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(M.detach())


def _entropy_rank(s: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of p = s/Σs along the last axis; 0 where Σs = 0."""
    total = s.sum(-1, keepdim=True)
    p = s / total.clamp_min(_TINY)
    plogp = torch.where(p > 0, p * torch.log(p.clamp_min(_TINY)), torch.zeros_like(p))
    return torch.where(total[..., 0] > _TINY, torch.exp(-plogp.sum(-1)), torch.zeros_like(total[..., 0]))


def _stable_rank(s: torch.Tensor) -> torch.Tensor:
    top = s[..., 0] ** 2
    return torch.where(top > _TINY, (s**2).sum(-1) / top.clamp_min(_TINY), torch.zeros_like(top))


def effective_rank(M: torch.Tensor) -> torch.Tensor:
    """(..., m, n) → (...): exp(−Σ p ln p), p_j = σ_j/Σσ; in [1, min(m, n)], 0 for M = 0."""
    return _entropy_rank(_svals(M))


def stable_rank(M: torch.Tensor) -> torch.Tensor:
    """(..., m, n) → (...): Σσ²/σ_1² = ‖M‖_F²/‖M‖_2²; in [1, min(m, n)], 0 for M = 0."""
    return _stable_rank(_svals(M))


def top_singular_values(M: torch.Tensor, k: int) -> torch.Tensor:
    """(..., m, n) → (..., k'): the k' = min(k, m, n) largest singular values, descending."""
    return _svals(M)[..., :k]


def _top_left(M: torch.Tensor, k: int) -> torch.Tensor:
    U, _, _ = torch.linalg.svd(M.detach(), full_matrices=False)
    return U[..., :k]


def _overlap(U1: torch.Tensor, U2: torch.Tensor) -> torch.Tensor:
    k = U1.shape[-1]
    return (U1.transpose(-1, -2) @ U2).pow(2).sum((-1, -2)) / k


def subspace_overlap(M1: torch.Tensor, M2: torch.Tensor, k: int) -> torch.Tensor:
    """(..., m, n), (..., m, n') → (...): (1/k)‖U_k(M1)ᵀ U_k(M2)‖_F² ∈ [0, 1], k ≤ min of the
    shapes (clipped). The mean squared cosine of the principal angles between the two spans."""
    k = min(k, M1.shape[-1], M1.shape[-2], M2.shape[-1])
    if M1.shape[-2] != M2.shape[-2]:
        raise ValueError(f"subspace_overlap needs the same number of rows, got {tuple(M1.shape)} and {tuple(M2.shape)}")
    return _overlap(_top_left(M1, k), _top_left(M2, k))


def matrix_parameters(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's parameters that are one matrix per seed, (E, m, n), by name, detached."""
    return {name: p.detach() for name, p in module.named_parameters() if p.dim() == 3}


def spectral_probes(named_params: dict[str, torch.Tensor], previous: dict[str, torch.Tensor] | None = None,
                    final: dict[str, torch.Tensor] | None = None, k: int = 1) -> dict[str, torch.Tensor]:
    """Probe values (E,) for every (E, m, n) parameter (other shapes are skipped).

    Names: probe/erank/<p>, probe/stable_rank/<p>, probe/sv/<p>/<j> for j < min(k, m, n),
    and, when `previous` / `final` hold the same parameter (the previous recorded checkpoint /
    the last one), probe/overlap_prev/<p> and probe/overlap_final/<p> with k' = min(k, m, n).
    """
    out: dict[str, torch.Tensor] = {}
    for name, M in named_params.items():
        if M.dim() != 3:
            continue
        U, s, _ = torch.linalg.svd(M.detach(), full_matrices=False)  # one SVD serves every probe
        kk = min(k, s.shape[-1])
        out[f"probe/erank/{name}"] = _entropy_rank(s)
        out[f"probe/stable_rank/{name}"] = _stable_rank(s)
        for j in range(kk):
            out[f"probe/sv/{name}/{j}"] = s[..., j]
        for tag, ref in (("overlap_prev", previous), ("overlap_final", final)):
            if ref is not None and name in ref:
                R = ref[name].detach().to(M.device, M.dtype)
                out[f"probe/{tag}/{name}"] = _overlap(U[..., :kk], _top_left(R, kk))
    return out
