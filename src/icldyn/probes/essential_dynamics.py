"""Essential dynamics (Hoogland et al. 2024): the model's outputs on a fixed set of prompts, recorded
over training; their trajectory, projected on its principal components, shows the stages of
development (the PCA and the events on the trajectory are in `analysis/essential_dynamics.py`).

The output vector of one member is everything the model predicts on the prompts, flattened: the
predictions (regression) or the log-probabilities (token tasks: log-softmax removes the logits'
free shift per position, which the loss does not see). (E, F) with F = prompts × positions × classes.
"""

from __future__ import annotations

import torch

from icldyn.probes.base import RecordContext

PROBE_PREFIX = "probe/essential_dynamics/"


@torch.no_grad()
def model_outputs(model: torch.nn.Module, batch, loss_kind: str = "mse") -> torch.Tensor:
    """The flattened outputs (E, F) of every member on `batch` (E = 1 prompts, shared)."""
    out = model(batch)
    if loss_kind == "ce":
        out = torch.log_softmax(out.float(), dim=-1)
    return out.flatten(1).to(torch.float64)


def fixed_prompts(task, n_prompts: int, prompt_seed: int, device="cpu"):
    """The fixed prompt set (E = 1, n_prompts): drawn from the task's eval stream with its own seed,
    so it is the same at every checkpoint and in every tool (`icldyn diagnose`, the probe)."""
    return task.eval_batch(n_prompts, prompt_seed, device=device)


def essential_dynamics_probe(config, task, *, n_prompts: int = 32, prompt_seed: int = 20_202,
                             max_features: int = 512):
    """Records the outputs on `n_prompts` fixed prompts at every record step as
    `probe/essential_dynamics/<j>` (the first `max_features` output coordinates; PCA after training)."""
    loss_kind = getattr(task, "loss_kind", "mse")

    def probe(ctx: RecordContext) -> dict[str, torch.Tensor]:
        device = next(ctx.model.parameters()).device
        if "essential_dynamics_prompts" not in ctx.cache:
            ctx.cache["essential_dynamics_prompts"] = fixed_prompts(task, n_prompts, prompt_seed, device)
        out = model_outputs(ctx.model, ctx.cache["essential_dynamics_prompts"], loss_kind)[:, :max_features]
        return {f"{PROBE_PREFIX}{j}": out[:, j] for j in range(out.shape[1])}

    return probe
