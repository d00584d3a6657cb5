"""Spectral probes of weight matrices: effective rank, stable rank, top singular values, and
how stable the top singular subspace is between recorded checkpoints.

Seed 004 ("spectral rank dynamics", "subspace stability") does not give its formulas, so these
are the standard definitions (spec, "Spectral diagnostics"). For M (..., m, n) with singular
values σ_1 ≥ σ_2 ≥ ...:
    effective rank  exp(−Σ p_j ln p_j),  p_j = σ_j / Σσ    (Roy & Vetterli 2007)
    stable rank     Σ σ_j² / σ_1²
    overlap_k       (1/k) ‖U_k(M1)ᵀ U_k(M2)‖_F²,  U_k the top-k left singular vectors
    marginalised effective rank (k)   the effective rank of σ_{k+1}, σ_{k+2}, ... (the k leading
                    components removed; seed 004's measure of the ICL emergence window)
    subspace distance_k   1 − overlap_k, of the left (U) and of the right (V) singular subspaces
    row-space distance    min_A ‖A M1 − M2‖_F / ‖M2‖_F = ‖M2 (I − M1⁺M1)‖_F / ‖M2‖_F: the paper's
                    distance, meaningful only for rank-deficient M1 (0 when M1 has full column rank)
A zero matrix has effective rank 0 and stable rank 0 (it spans no direction), not NaN. The
overlap is 1 for equal top-k subspaces and 0 for orthogonal ones; its value is arbitrary when
σ_k = σ_{k+1} (the subspace itself is) or when a matrix is zero.
Every function is batched over leading axes (a seed axis E in training).
"""

from __future__ import annotations

import fnmatch
from typing import Sequence

import torch

_TINY = 1e-30  # below this a total of singular values counts as a zero matrix
# In the marginalised rank the tail is all that is left, so round-off counts: singular values below
# this share of σ_1 are zero (float32 weights leave ~1e-7·σ_1 in the null space of a product).
MARGINAL_RTOL = 1e-6


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


def _svd(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(U (..., m, r), s (..., r), V (..., n, r)), r = min(m, n): the thin SVD, detached."""
    U, s, Vh = torch.linalg.svd(M.detach(), full_matrices=False)
    return U, s, Vh.transpose(-1, -2)


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


def marginal_effective_rank(M: torch.Tensor, k: int) -> torch.Tensor:
    """(..., m, n) → (...): the effective rank of the singular values after the k largest; 0 when
    fewer than k + 1 remain or they are all zero (below `MARGINAL_RTOL`·σ_1: round-off)."""
    return _marginal_rank(_svals(M), k)


def _marginal_rank(s: torch.Tensor, k: int) -> torch.Tensor:
    tail = s[..., k:]
    return _entropy_rank(torch.where(tail > MARGINAL_RTOL * s[..., :1], tail, torch.zeros_like(tail)))


def _top_right(M: torch.Tensor, k: int) -> torch.Tensor:
    _, _, Vh = torch.linalg.svd(M.detach(), full_matrices=False)
    return Vh[..., :k, :].transpose(-1, -2)


def subspace_distance(M1: torch.Tensor, M2: torch.Tensor, k: int, side: str = "left") -> torch.Tensor:
    """(..., m, n) twice → (...): 1 − overlap_k of the top-k left (`side="left"`, U) or right
    (`"right"`, V) singular subspaces; 0 for equal subspaces, 1 for orthogonal ones."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    if side == "right":
        M1, M2 = M1.transpose(-1, -2), M2.transpose(-1, -2)
    return 1 - subspace_overlap(M1, M2, k)


def row_space_distance(M1: torch.Tensor, M2: torch.Tensor, rtol: float = 1e-4) -> torch.Tensor:
    """(..., m, n) twice → (...): min_A ‖A M1 − M2‖_F / ‖M2‖_F = ‖M2 (I − P)‖_F / ‖M2‖_F, P the
    projector onto M1's row space (least squares over A); singular values of M1 below rtol·σ_1
    count as zero (float32 weights leave ~1e-7·σ_1 of round-off in a product's null space)."""
    _, s, V = _svd(M1)
    return _row_space_distance(s, V, M2.detach().to(M1.dtype), rtol)


def _row_space_distance(s: torch.Tensor, V: torch.Tensor, M2: torch.Tensor, rtol: float) -> torch.Tensor:
    keep = (s > rtol * s[..., :1]).to(V.dtype)                                 # (..., r)
    Vr = V * keep[..., None, :]
    resid = M2 - (M2 @ Vr) @ Vr.transpose(-1, -2)
    return torch.linalg.matrix_norm(resid) / torch.linalg.matrix_norm(M2).clamp_min(_TINY)


def matrix_parameters(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's parameters that are one matrix per seed, (E, m, n), by name, detached."""
    return {name: p.detach() for name, p in module.named_parameters() if p.dim() == 3}


def spectral_probes(named_params: dict[str, torch.Tensor], previous: dict[str, torch.Tensor] | None = None,
                    final: dict[str, torch.Tensor] | None = None, k: int = 1,
                    marginal: tuple[int, ...] = ()) -> dict[str, torch.Tensor]:
    """Probe values (E,) for every (E, m, n) parameter (other shapes are skipped).

    Names: probe/erank/<p>, probe/stable_rank/<p>, probe/sv/<p>/<j> for j < min(k, m, n),
    probe/merank<j>/<p> (the marginalised effective rank) for j in `marginal`,
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
        for j in marginal:
            out[f"probe/merank{j}/{name}"] = _marginal_rank(s, j)
        for tag, ref in (("overlap_prev", previous), ("overlap_final", final)):
            if ref is not None and name in ref:
                R = ref[name].detach().to(M.device, M.dtype)
                out[f"probe/{tag}/{name}"] = _overlap(U[..., :kk], _top_left(R, kk))
    return out


# -- the spectral probe of any registered model, by its matrices' names --------------------------
def model_matrices(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every (E, m, n) parameter by name, plus the matrices the model derives from them
    (`model.spectral_matrices()`, e.g. GPT's per-head QK and OV products), detached."""
    mats = matrix_parameters(model)
    derived = getattr(model, "spectral_matrices", None)
    if derived is not None:
        mats.update({n: m.detach() for n, m in derived().items()})
    return mats


def select_matrices(mats: dict[str, torch.Tensor], names: Sequence[str] | None) -> dict[str, torch.Tensor]:
    """The matrices whose name matches one of the shell patterns `names` (all when None)."""
    if names is None:
        return dict(mats)
    return {n: m for n, m in mats.items() if any(fnmatch.fnmatchcase(n, pat) for pat in names)}


def matrix_spectral_probe(config, task, names: Sequence[str] | None = None, k: int = 3,
                          marginal: Sequence[int] = (1, 2)):
    """Registered as `matrix_spectral`: probe/erank, probe/stable_rank, probe/sv/<m>/<j> (j < k),
    probe/merank<j> (j in `marginal`) of the model's matrices picked by `names` (shell patterns on
    `model_matrices` names, e.g. ["blocks.*.attn.qk.*", "embed.weight"]). The distances to the
    final matrix need the run's last checkpoint: `distance_rows`, after training."""
    marginal = tuple(int(j) for j in marginal)

    @torch.no_grad()
    def probe(ctx) -> dict[str, torch.Tensor]:
        mats = select_matrices(model_matrices(ctx.model), names)
        return spectral_probes({n: m.double().cpu() for n, m in mats.items()}, k=k, marginal=marginal)

    return probe


def checkpoint_matrices(model: torch.nn.Module, params: dict[str, torch.Tensor],
                        names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """`model_matrices` of `model` with its parameters set to `params` ({name: tensor}, a stored
    checkpoint's), float64 on the CPU; the model's own parameters are put back afterwards."""
    own = {n: p.detach().clone() for n, p in model.named_parameters()}
    try:
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(params[n].to(p))
            return {n: m.double().cpu() for n, m in select_matrices(model_matrices(model), names).items()}
    finally:
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(own[n])


def distance_rows(checkpoints: Sequence[tuple[int, float, dict[str, torch.Tensor]]], seeds: Sequence[int],
                  ks: Sequence[int] = (1, 2), rank_deficient: Sequence[str] = ()) -> list[dict]:
    """Distances to the final matrix and to the previous checkpoint, as metric rows, from the
    matrices at each record step [(step, time, {name: (E, m, n)}), ...] in step order:
        probe/subspace_dist/<side>/k<j>/<m>   1 − overlap_j(M(t), M(T)), side left (U) / right (V),
                                              j in `ks` and j = "r", the final effective rank rounded
        probe/overlap_prev/k<j>/<m>           overlap_j of the left subspaces with the previous record
        probe/rowspace_dist/<m>               min_A ‖A M(t) − M(T)‖_F/‖M(T)‖_F, only for the matrices
                                              matching `rank_deficient` (it is 0 at full column rank)
    """
    if not checkpoints:
        return []
    final = {n: _svd(M) for n, M in checkpoints[-1][2].items()}
    ranks = {n: max(1, int(round(float(_entropy_rank(f[1]).min())))) for n, f in final.items()}
    rows, previous = [], None
    for step, time, mats in checkpoints:
        values: dict[str, torch.Tensor] = {}
        current = {n: _svd(M) for n, M in mats.items()}                  # one SVD per matrix and record
        for name, (U, sv, V) in current.items():
            Uf, _, Vf = final[name]
            for j in (*ks, "r"):
                kk = min(ranks[name] if j == "r" else int(j), U.shape[-1])
                values[f"probe/subspace_dist/left/k{j}/{name}"] = 1 - _overlap(U[..., :kk], Uf[..., :kk])
                values[f"probe/subspace_dist/right/k{j}/{name}"] = 1 - _overlap(V[..., :kk], Vf[..., :kk])
                if previous is not None and j != "r":
                    values[f"probe/overlap_prev/k{j}/{name}"] = _overlap(U[..., :kk], previous[name][0][..., :kk])
            if any(fnmatch.fnmatchcase(name, pat) for pat in rank_deficient):
                values[f"probe/rowspace_dist/{name}"] = _row_space_distance(sv, V, checkpoints[-1][2][name].to(V.dtype),
                                                                               1e-4)
        for metric, value in values.items():
            value = value.reshape(-1)
            rows += [{"step": int(step), "time": float(time), "seed": int(seed), "name": metric,
                      "value": float(value[i] if value.numel() > 1 else value[0])} for i, seed in enumerate(seeds)]
        previous = current
    return rows
