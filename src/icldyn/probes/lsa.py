"""Probes of a linear self-attention model: its effective matrix v·U and how far it is from Γ⁻¹."""

from __future__ import annotations

import torch

from icldyn.theory.linear_regression import optimal_matrix


def effective_matrix_probe(config, task, record_entries: bool | None = None):
    """probe/gamma_inv_distance = ‖vU − Γ⁻¹‖_F / ‖Γ⁻¹‖_F, probe/off_blocks, probe/v and (optionally)
    probe/effective/<i>/<j> = (vU)_ij: the ZFB limit says vU → Γ⁻¹ and all other blocks stay 0.
    (With label noise the risk's minimiser is (Γ + σ²/N·I)⁻¹, which is what training reaches.)
    record_entries: default when the matrix is small (d ≤ 8)."""
    target = optimal_matrix(task.covariance, config.task.n_points, config.task.noise_std)
    record_entries = config.task.d <= 8 if record_entries is None else record_entries

    def probe(ctx) -> dict[str, torch.Tensor]:
        m = ctx.model
        B = m.effective_matrix().detach().double().cpu()  # (E, d, d)
        out = {
            "probe/gamma_inv_distance": torch.linalg.matrix_norm(B - target) / torch.linalg.matrix_norm(target),
            "probe/off_blocks": m.off_block_norm().detach(),
            "probe/v": m.w_pv[-1][:, m.d, m.d].detach(),
        }
        if record_entries:
            d = B.shape[-1]
            for i in range(d):
                for j in range(d):
                    out[f"probe/effective/{i}/{j}"] = B[:, i, j]
        return out

    return probe
