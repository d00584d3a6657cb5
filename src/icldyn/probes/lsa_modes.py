"""Eigenmode probes of a one-layer LSA on Gaussian data (seed 004's reduced dynamics), and the
spectral probes of its weights.

Notation (spec): ŷ = pᵀ (E Eᵀ/N) Q x_q, with p = the last row of W^PV (d+1,) and Q = the first d
columns of W^KQ ((d+1, d)); only p and Q reach the prediction. Split p = (p_x, p_y) and
Q = [Q_x; q_y] (Q_x = W^KQ's x-block (d, d), q_y its y-row (d,)). The part of ŷ linear in
h = (1/N) Σ y_i x_i is hᵀ B x_q with

    B = p_y Q_x + p_x q_yᵀ,

so B = v U on the ZFB block structure (p_x = 0, q_y = 0), and a generic init has a second,
rank-one route p_x q_yᵀ to the same kind of predictor. In Λ's eigenbasis (modes ordered by
decreasing λ) the mode strengths are b_i = (Rᵀ B R)_ii and the mode progress γ_i b_i, which is
1 on the gradient-flow limit B = Γ⁻¹ (γ_i = (1 + 1/N) λ_i + tr Λ / N).

Metric names (DESIGN.md):
    probe/mode_progress/<i>         γ_i b_i, i = 0 the largest λ
    probe/conserved                 ‖p‖² − ‖Q‖_F² (constant under gradient flow of any loss of ŷ)
    probe/pq_norm                   ‖p‖² + ‖Q‖_F² (the scale against which its drift is judged)
    probe/eigen_overlap/kq_x/<i>    (u₁(Q_x) · r_i)²: Q_x's top left singular vector against Λ's
                                    i-th eigenvector (i = 0 the top one)
    probe/route/vu, probe/route/rank_one   ‖p_y Q_x‖_F and ‖p_x‖‖q_y‖ (which route carries B)
    probe/erank/<m>, probe/stable_rank/<m>, probe/sv/<m>/<j>   for every 2-D parameter m
                                    (w_pv.0, w_kq.0, ...) and for kq_x = W^KQ's x-block (U)
    probe/overlap_prev/<m>, probe/overlap_final/<m>   computed after training from the stored
                                    checkpoints (`overlap_rows`): they need the final one.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from icldyn.probes.spectral import matrix_parameters, spectral_probes

X_BLOCK = "kq_x"  # the name under which W^KQ's x-block (the reduced form's U) is probed


def mode_basis(eigenvalues: torch.Tensor, rotation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Λ's eigenvalues (d,) in decreasing order and the matching eigenvectors as columns (d, d)."""
    lam = torch.as_tensor(eigenvalues, dtype=torch.float64)
    order = torch.argsort(lam, descending=True, stable=True)
    return lam[order], torch.as_tensor(rotation, dtype=torch.float64)[:, order]


def gamma(eigenvalues: torch.Tensor, n_points: int) -> torch.Tensor:
    """γ_i = (1 + 1/N) λ_i + tr Λ / N (d,), the diagonal of Γ in Λ's eigenbasis."""
    lam = torch.as_tensor(eigenvalues, dtype=torch.float64)
    return (1 + 1 / n_points) * lam + lam.sum() / n_points


def split(w_pv: torch.Tensor, w_kq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """p (E, d+1) = the last row of W^PV and Q (E, d+1, d) = the first d columns of W^KQ."""
    d = w_pv.shape[-1] - 1
    return w_pv[..., d, :], w_kq[..., :, :d]


def effective_map(w_pv: torch.Tensor, w_kq: torch.Tensor) -> torch.Tensor:
    """B = p_y Q_x + p_x q_yᵀ (E, d, d): ŷ's part linear in h is hᵀ B x_q (module doc)."""
    p, Q = split(w_pv, w_kq)
    d = Q.shape[-1]
    return p[..., d, None, None] * Q[..., :d, :] + p[..., :d, None] * Q[..., d, None, :]


def mode_progress(w_pv, w_kq, eigenvalues, rotation, n_points: int) -> torch.Tensor:
    """γ_i b_i (E, d), b_i = (Rᵀ B R)_ii in Λ's eigenbasis, modes by decreasing λ."""
    lam, R = mode_basis(eigenvalues, rotation)
    B = effective_map(w_pv, w_kq).double()
    b = torch.diagonal(R.T @ B @ R, dim1=-2, dim2=-1)
    return gamma(lam, n_points) * b


def conserved(w_pv: torch.Tensor, w_kq: torch.Tensor) -> torch.Tensor:
    """‖p‖² − ‖Q‖_F² (E,). ŷ is bilinear in (p, Q), so (p, Q) → (αp, Q/α) leaves every loss of ŷ
    unchanged and gradient flow conserves this (for sampled minibatches too); discrete steps
    change it by lr²(‖∇_p‖² − ‖∇_Q‖²) per step."""
    p, Q = split(w_pv.double(), w_kq.double())
    return p.pow(2).sum(-1) - Q.pow(2).sum((-1, -2))


def x_block(w_kq: torch.Tensor) -> torch.Tensor:
    """W^KQ's x-block (E, d, d): the U of the reduced form."""
    d = w_kq.shape[-1] - 1
    return w_kq[..., :d, :d]


def eigen_overlaps(M: torch.Tensor, eigenvalues, rotation) -> torch.Tensor:
    """(u₁(M) · r_i)² (E, d) for M (E, d, d): its top left singular vector against each of Λ's
    eigenvectors r_i, by decreasing λ. Sums to 1 over i."""
    _, R = mode_basis(eigenvalues, rotation)
    U, _, _ = torch.linalg.svd(M.detach().double(), full_matrices=False)
    return (U[..., :, 0:1] * R.to(U)).sum(-2).pow(2)  # (E, d)


def named_matrices(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every (E, m, n) parameter by name, plus W^KQ's x-block of the last layer as `kq_x`."""
    mats = {k: v for k, v in params.items() if v.dim() == 3}
    kq = sorted(k for k in mats if k.startswith("w_kq."))
    if kq:
        mats[X_BLOCK] = x_block(mats[kq[-1]])
    return mats


def last_layer(params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    pv = sorted((k for k in params if k.startswith("w_pv.")), key=lambda k: int(k.split(".")[1]))
    kq = sorted((k for k in params if k.startswith("w_kq.")), key=lambda k: int(k.split(".")[1]))
    return params[pv[-1]], params[kq[-1]]


def lsa_mode_probe(config, task):
    """probe/mode_progress/<i>, probe/conserved, probe/pq_norm, probe/eigen_overlap/kq_x/<i>,
    probe/route/*, in the eigenbasis of the task's covariance."""
    eigenvalues, rotation, n_points = task.eigenvalues, task.rotation, config.task.n_points

    @torch.no_grad()
    def probe(ctx) -> dict[str, torch.Tensor]:
        w_pv, w_kq = last_layer(matrix_parameters(ctx.model))
        w_pv, w_kq = w_pv.double().cpu(), w_kq.double().cpu()
        out = {}
        for i, v in enumerate(mode_progress(w_pv, w_kq, eigenvalues, rotation, n_points).unbind(-1)):
            out[f"probe/mode_progress/{i}"] = v
        out["probe/conserved"] = conserved(w_pv, w_kq)
        p, Q = split(w_pv, w_kq)
        out["probe/pq_norm"] = p.pow(2).sum(-1) + Q.pow(2).sum((-1, -2))
        for i, v in enumerate(eigen_overlaps(x_block(w_kq), eigenvalues, rotation).unbind(-1)):
            out[f"probe/eigen_overlap/{X_BLOCK}/{i}"] = v
        d = Q.shape[-1]
        out["probe/route/vu"] = p[:, d].abs() * torch.linalg.matrix_norm(Q[:, :d, :])
        out["probe/route/rank_one"] = p[:, :d].norm(dim=-1) * Q[:, d, :].norm(dim=-1)
        return out

    return probe


def spectral_probe(config, task, k: int = 2):
    """probe/erank/<m>, probe/stable_rank/<m>, probe/sv/<m>/<j> (j < k) for every 2-D parameter
    and for kq_x. The overlaps need the final checkpoint: see `overlap_rows`."""

    @torch.no_grad()
    def probe(ctx) -> dict[str, torch.Tensor]:
        mats = {n: m.double().cpu() for n, m in named_matrices(matrix_parameters(ctx.model)).items()}
        return spectral_probes(mats, k=k)

    return probe


def overlap_rows(checkpoints: Sequence[tuple[int, float, dict[str, torch.Tensor]]], seeds: Sequence[int],
                 k: int = 2) -> list[dict]:
    """probe/overlap_prev/<m> and probe/overlap_final/<m> as metric rows, from the parameters at
    each record step: [(step, time, {name: (E, m, n)}), ...] in step order. The first record has
    no previous one (no overlap_prev row)."""
    if not checkpoints:
        return []
    final = named_matrices(checkpoints[-1][2])
    rows, previous = [], None
    for step, time, params in checkpoints:
        mats = named_matrices(params)
        values = spectral_probes({n: m.double() for n, m in mats.items()},
                                 previous=None if previous is None else {n: m.double() for n, m in previous.items()},
                                 final={n: m.double() for n, m in final.items()}, k=k)
        for name, value in values.items():
            if "/overlap_" not in name:
                continue
            value = value.reshape(-1)
            for i, seed in enumerate(seeds):
                rows.append({"step": int(step), "time": float(time), "seed": int(seed), "name": name,
                             "value": float(value[i] if value.numel() > 1 else value[0])})
        previous = mats
    return rows


def modes_eigenvalues(config) -> np.ndarray:
    """λ of a linear-regression task config, by decreasing value (float64)."""
    return np.sort(np.asarray(config.task.eigenvalue_list(), dtype=np.float64))[::-1].copy()
