"""Per-mode probes of the paper's linear layer with per-mode factors (`models/mode_lsa.py`).

Metric names (mode α in the task's eigenvalue order):
    probe/mode_product/<α>     a_α = p_α q_α (the fixed point is 1/s^∞_α)
    probe/mode_conserved/<α>   p_α² − q_α² (conserved per mode by the decoupled flow)
    probe/mode_norm/<α>        p_α² + q_α² (the scale its drift is judged against)
    probe/conserved            Σ_α (p_α² − q_α²) (conserved by the layer's flow at any N)
Raw parameters only: the theory's units (a^∞, s^∞) are applied by the analysis from theory.parquet.
"""

from __future__ import annotations

import torch


def vector_mode_probe(config, task):
    @torch.no_grad()
    def probe(ctx) -> dict[str, torch.Tensor]:
        p, q = ctx.model.p.double().cpu(), ctx.model.q.double().cpu()      # (E, d)
        out = {}
        for name, value in (("mode_product", p * q), ("mode_conserved", p**2 - q**2), ("mode_norm", p**2 + q**2)):
            for i, v in enumerate(value.unbind(-1)):
                out[f"probe/{name}/{i}"] = v
        out["probe/conserved"] = (p**2 - q**2).sum(-1)
        return out

    return probe
