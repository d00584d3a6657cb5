"""One-layer multi-head softmax attention for multi-task regression (Chen et al. 2024), E seeds.

    ŷ_q = Σ_h U^{(h)} Σ_{l≤L} y_l softmax_l(x_lᵀ W^{(h)} x_q),  W^{(h)} (d, d), U^{(h)} (I, I);

the keys are the L examples only (the query is not attended to); no MLP, residual or LayerNorm.
Prompts: x (E, B, L+1, d), y (E, B, L+1, I) with the query last (`tasks/multitask_regression.py`).

Decomposable family: W = Σ_i ω_i Φ_iΦ_iᵀ, U = Σ_i μ_i ψ_iψ_iᵀ for the task's orthogonal bases Φ
(d×d, Φ_i its d×d₀ column block) and Ψ (I×I, ψ_i its column). `parametrisation: full` trains
W, U as full matrices (E, H, d, d), (E, H, I, I); `reduced` trains only (ω, μ), each (E, H, I).
Built as MultiheadAttention(config, task, seeds, dtype): d, I and the basis (Φ, Ψ) are the
task's (`task.d`, `task.n_tasks`, `task.phi`, `task.psi`; a task config without `orthogonal`
gives the identity basis).
Hook points: `blocks.0.attn.hook_scores` (E, B, H, L) the logits x_lᵀ W^{(h)} x_q,
`blocks.0.attn.hook_pattern` (E, B, H, L) their softmax, `hook_pred` (E, B, I).
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from pydantic import Field
from torch import nn

from icldyn.config import Strict
from icldyn.errors import UsageError
from icldyn.models.base import EnsembleModel, HookPoint, attention_hooks, task_config
from icldyn.seeding import generator


class MultiheadAttentionConfig(Strict):
    name: Literal["multihead-attention"] = "multihead-attention"
    n_heads: int = Field(default=2, gt=0, description="H")
    n_tasks: int = Field(default=2, gt=0, description="I: outputs; must equal task.n_tasks")
    parametrisation: Literal["full", "reduced"] = "full"
    init_scale: float = Field(default=1e-2, gt=0, description="s: ω = μ = s(1 + a·u), u ~ U[0, 1]")
    init_asymmetry: float = Field(default=0.1, ge=0, description="a: the head/task-specific spread")


class MultiheadAttention(EnsembleModel):
    prefix_outputs = False

    def __init__(self, config: MultiheadAttentionConfig, task, seeds: Sequence[int], dtype=torch.float32):
        super().__init__(len(seeds))
        tc = task_config(task)
        I, H, d = config.n_tasks, config.n_heads, tc.d
        if config.n_tasks != tc.n_tasks:
            raise UsageError(f"model.n_tasks={config.n_tasks} must equal task.n_tasks={tc.n_tasks}")
        phi, psi = getattr(task, "phi", None), getattr(task, "psi", None)
        if phi is None and getattr(tc, "orthogonal", False):
            raise UsageError("MultiheadAttention needs the task itself (its basis phi, psi) for "
                             "task.orthogonal=true, not only the task config")
        if d % I:
            raise UsageError(f"model.n_tasks={I} must divide the input dimension d={d}")
        self.config, self.d, self.d0, self.n_tasks, self.n_heads = config, d, d // I, I, H
        phi = torch.eye(d, dtype=torch.float64) if phi is None else torch.as_tensor(phi, dtype=torch.float64)
        psi = torch.eye(I, dtype=torch.float64) if psi is None else torch.as_tensor(psi, dtype=torch.float64)
        if phi.shape != (d, d) or psi.shape != (I, I):
            raise UsageError(f"model basis: phi must be ({d}, {d}) and psi ({I}, {I}) to match task and "
                             f"model.n_tasks, got {tuple(phi.shape)} and {tuple(psi.shape)}")
        blocks = phi.reshape(d, I, self.d0).permute(1, 0, 2)                   # Φ_i (I, d, d₀)
        # derived from the task, not learnt: kept out of checkpoints (persistent=False)
        self.register_buffer("proj_w", (blocks @ blocks.transpose(-1, -2)).to(dtype), persistent=False)  # (I, d, d)
        self.register_buffer("proj_u", torch.einsum("ai,bi->iab", psi, psi).to(dtype), persistent=False)  # (I, I, I)

        # ω = μ = s(1 + a·u): u per seed, head and task from the seed's init stream
        u = torch.stack([torch.rand(H, I, generator=generator(s, "init", 0), dtype=torch.float64) for s in seeds])
        omega0 = (config.init_scale * (1 + config.init_asymmetry * u)).to(dtype)  # (E, H, I)
        if config.parametrisation == "reduced":
            self.omega = nn.Parameter(omega0.clone())
            self.mu = nn.Parameter(omega0.clone())
        else:
            w, u_ = self._compose(omega0, omega0)
            self.key_query = nn.Parameter(w)
            self.output_value = nn.Parameter(u_)
        self.blocks = nn.ModuleList([attention_hooks("hook_scores", "hook_pattern")])
        self.hook_pred = HookPoint()
        self.setup_hooks()

    # -- parametrisations ----------------------------------------------------------------------
    def _compose(self, omega: torch.Tensor, mu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ω, μ) (E, H, I) → W (E, H, d, d) = Σ_i ω_i Φ_iΦ_iᵀ, U (E, H, I, I) = Σ_i μ_i ψ_iψ_iᵀ."""
        return (torch.einsum("ehi,iab->ehab", omega, self.proj_w),
                torch.einsum("ehi,iab->ehab", mu, self.proj_u))

    def matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """W (E, H, d, d), U (E, H, I, I) for either parametrisation."""
        if self.config.parametrisation == "reduced":
            return self._compose(self.omega, self.mu)
        return self.key_query, self.output_value

    def omega_mu(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Semi-singular values (E, H, I) each: ω_i = tr(Φ_iᵀ W Φ_i)/d₀ = ⟨W, Φ_iΦ_iᵀ⟩/d₀, μ_i = ψ_iᵀ U ψ_i.

        The Φ_iΦ_iᵀ are mutually Frobenius-orthogonal with norm² d₀ (and ψ_iψ_iᵀ with norm² 1), so these
        are the coordinates of the orthogonal projection of (W, U) on the decomposable family.
        """
        if self.config.parametrisation == "reduced":
            return self.omega.detach(), self.mu.detach()
        W, U = (m.detach() for m in self.matrices())
        return (torch.einsum("ehab,iab->ehi", W, self.proj_w) / self.d0,
                torch.einsum("ehab,iab->ehi", U, self.proj_u))

    def off_decomposable(self, relative: bool = False) -> torch.Tensor:
        """(E,) Frobenius norm of (W, U) minus its decomposable projection, over all heads
        (divided by the norm of (W, U) when `relative`). Zero for the reduced parametrisation."""
        W, U = (m.detach() for m in self.matrices())
        Wd, Ud = self._compose(*self.omega_mu())
        off = ((W - Wd).pow(2).sum((1, 2, 3)) + (U - Ud).pow(2).sum((1, 2, 3))).sqrt()
        if relative:
            off = off / (W.pow(2).sum((1, 2, 3)) + U.pow(2).sum((1, 2, 3))).sqrt()
        return off

    def head_specialisation(self) -> torch.Tensor:
        """r_h = max_i |ω_iμ_i| / Σ_i |ω_iμ_i|  (E, H): 1/I for a head shared evenly, 1 for one task."""
        omega, mu = self.omega_mu()
        p = (omega * mu).abs()
        return p.amax(-1) / p.sum(-1).clamp_min(torch.finfo(p.dtype).tiny)

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, batch) -> torch.Tensor:
        """Query predictions (E, B, I). Hooks in the module doc."""
        W, U = self.matrices()
        keys, values, query = batch.x[:, :, :-1], batch.y[:, :, :-1], batch.x[:, :, -1]
        wq = torch.einsum("ehab,enb->enha", W, query)                     # W^{(h)} x_q  (E, B, H, d)
        hooks = self.blocks[0].attn
        scores = hooks.hook_scores(torch.einsum("enla,enha->enhl", keys, wq))
        attn = hooks.hook_pattern(torch.softmax(scores, dim=-1))
        mixed = torch.einsum("enhl,enli->enhi", attn, values)              # Σ_l a_l y_l  (E, B, H, I)
        pred = torch.einsum("ehij,enhj->eni", U, mixed)
        return self.hook_pred(pred)

    def loss(self, pred: torch.Tensor, batch) -> torch.Tensor:
        """Per-seed ½·E‖ŷ_q − y_q‖² (E,): squared error summed over the I tasks, mean over prompts.

        Summing over tasks keeps each task's gradient the single-task one (the paper's loss).
        """
        return 0.5 * (pred - batch.y[:, :, -1]).pow(2).sum(-1).mean(-1)
