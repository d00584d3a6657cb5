"""Probes of in-context binary classification (Li et al. 2024) on the relu-attention-classifier.

  error/test                 0–1 error on the held-out prompts of the training tasks
  error/unseen               0–1 error on held-out prompts of the unseen in-domain tasks
  probe/same_pattern_mass    summed attention on context examples sharing the query's relevant
                             pattern, mean over the held-out prompts
  probe/wo_norm/<i>          ‖row i of W_O‖
  probe/wo_feature_cos/<i>   cos(feature part of row i of W_O·W_V, μ̄) (μ̄ the mean IDR pattern)
  probe/wo_label/<i>         label part of row i of W_O·W_V (its coordinate along q) / ‖row i‖
"""

from __future__ import annotations

import torch

from icldyn.probes.base import RecordContext

ATTENTION = "blocks.0.attn.hook_pattern"


def query_errors(model, batch) -> torch.Tensor:
    """Per-seed 0–1 error of sign(F) on the queries: (E,)."""
    pred = model(batch)[..., -1]                                                # (E, B): the query
    return (torch.sign(pred) != batch.y[..., -1]).double().mean(-1)


def same_pattern_mass(model, batch) -> torch.Tensor:
    """Per-seed mean over prompts of the attention on same-pattern context examples: (E,)."""
    _, cache = model.run_with_cache(batch, ATTENTION)
    pattern = batch.extras["pattern"]
    same = (pattern[..., :-1] == pattern[..., -1:]).to(cache[ATTENTION].dtype)  # (E', B, l)
    return (cache[ATTENTION] * same).sum(-1).mean(-1)


def row_parts(model, relevant: torch.Tensor) -> dict[str, torch.Tensor]:
    """W_O row norms, and per row of W_O·W_V the cosine of its feature part with μ̄ and its
    label share: each (E, m)."""
    rows = model.row_products()                                                 # (E, m, d+1)
    d = rows.shape[-1] - 1
    mean_pattern = relevant.mean(0).to(rows)                                    # (d,)
    feature, label = rows[..., :d], rows[..., d]
    cos = feature @ mean_pattern / (feature.norm(dim=-1) * mean_pattern.norm()).clamp(min=1e-30)
    return {"wo_norm": model.w_o.norm(dim=-1), "wo_feature_cos": cos,
            "wo_label": label / rows.norm(dim=-1).clamp(min=1e-30)}


def classification_probe(config, task, *, unseen_prompts: int | None = None):
    """The probe of the module doc; unseen-task prompts from the eval seed (offset 1)."""

    @torch.no_grad()
    def probe(ctx: RecordContext) -> dict[str, torch.Tensor]:
        key = "unseen"
        if key not in ctx.cache:
            n = unseen_prompts or config.train.eval_prompts_during
            ctx.cache[key] = (task.eval_batch(n, config.eval_seed + 1, split="unseen", device=ctx.eval_batch.x.device)
                              if task.pairs["unseen"] else None)
        out = {"error/test": query_errors(ctx.model, ctx.eval_batch)}
        if ctx.cache[key] is not None:
            out["error/unseen"] = query_errors(ctx.model, ctx.cache[key])
        if not hasattr(ctx.model, "row_products"):  # another model (the GPT): errors only
            return out
        out["probe/same_pattern_mass"] = same_pattern_mass(ctx.model, ctx.eval_batch)
        for name, values in row_parts(ctx.model, task.relevant).items():
            for i in range(values.shape[-1]):
                out[f"probe/{name}/{i}"] = values[:, i]
        return out

    return probe
