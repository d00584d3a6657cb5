"""von Oswald et al.'s alignment between a trained model and an estimator on the same prompts.

Sensitivities g = ∂ŷ/∂x_q: the gradient of the query prediction with respect to the query
input x[..., -1, :]. For ŷ = hᵀ B x_q this is Bᵀ h, so two predictors that agree as functions
of the query (not just in value) have equal g. Metrics, per seed (E,), averaged over prompts:
  preds_diff = mean |ŷ_TF − ŷ_est|,  model_diff = mean ‖g_TF − g_est‖,
  model_cos  = mean cos(g_TF, g_est).
Several query positions (`n_queries` m > 1, e.g. softmax regression, where each prediction is a
softmax over the m query words): ŷ (E, B, m) are the last m outputs and the sensitivities the
Jacobian of the m predictions w.r.t. the m query inputs x[..., -m:, :], g (E, B, m, m·d): row q
is ∂ŷ_q/∂(x_{q'})_{q'}. The metrics take |Δŷ_q|, ‖Δg_q‖ and cos(g_q) per query word and average
over query words and prompts; with m = 1 they are the one-query metrics above, number for number.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from icldyn.tasks.base import Batch

Predictor = Callable[[Batch], torch.Tensor]  # batch → (E, B, P), the query prediction last


def sensitivities(fn: Predictor, batch: Batch, n_seeds: int | None = None,
                  n_queries: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Query predictions ŷ (E', B) and sensitivities g = ∂ŷ/∂x_q (E', B, d).

    E' = `n_seeds` when given (the batch's E = 1 held-out prompts are expanded to it first, so
    every seed gets its own gradient), else the batch's E. `fn(batch)` may return (E', B, 1) or
    per-position (E', B, T); the last position is the query's prediction. One backward pass of
    Σ ŷ suffices because each prompt's prediction depends only on its own x_q. A predictor that
    is piecewise constant in x_q (kNN) or not differentiable gets g = 0.
    With `n_queries` m > 1: ŷ (E', B, m) and the Jacobian g (E', B, m, m·d) (see the module doc),
    by one batched backward pass per query word (`is_grads_batched`).
    """
    if n_queries > 1:
        return _query_jacobian(fn, batch, n_seeds, n_queries)
    E = n_seeds or batch.x.shape[0]
    if batch.x.shape[0] not in (1, E):
        raise ValueError(f"batch has {batch.x.shape[0]} seeds but the predictor has {E}; expected 1 or {E}")
    with torch.enable_grad():  # probes are often called under no_grad
        x = batch.x.expand(E, *batch.x.shape[1:]).clone().requires_grad_(True)
        y = batch.y.expand(E, *batch.y.shape[1:])
        out = fn(Batch(x, y, batch.extras))
        pred = out[..., -1]
        if pred.requires_grad:
            (grad,) = torch.autograd.grad(pred.sum(), x, allow_unused=True)
        else:
            grad = None
    g = grad[..., -1, :] if grad is not None else torch.zeros_like(x[..., -1, :])
    return pred.detach(), g.detach()


def _query_jacobian(fn: Predictor, batch: Batch, n_seeds: int | None, m: int):
    """ŷ (E', B, m) and ∂ŷ_q/∂x_{q'} flattened over (q', d): (E', B, m, m·d)."""
    E = n_seeds or batch.x.shape[0]
    if batch.x.shape[0] not in (1, E):
        raise ValueError(f"batch has {batch.x.shape[0]} seeds but the predictor has {E}; expected 1 or {E}")
    with torch.enable_grad():
        x = batch.x.expand(E, *batch.x.shape[1:]).clone().requires_grad_(True)
        y = batch.y.expand(E, *batch.y.shape[1:])
        pred = fn(Batch(x, y, batch.extras))[..., -m:]                       # (E', B, m)
        if pred.requires_grad:
            eye = torch.eye(m, dtype=pred.dtype, device=pred.device)         # one cotangent per query word
            cot = eye[:, None, None, :].expand(m, *pred.shape)
            (grad,) = torch.autograd.grad(pred, x, cot, is_grads_batched=True, allow_unused=True)
        else:
            grad = None
    if grad is None:
        g = torch.zeros(*pred.shape, m * x.shape[-1], dtype=x.dtype, device=x.device)
    else:                                                                    # (m, E', B, T, d) → (E', B, m, m·d)
        g = grad[..., -m:, :].flatten(-2).permute(1, 2, 0, 3)
    return pred.detach(), g.detach()


def alignment(model_fn: Predictor, estimator_fn: Predictor, batch: Batch,
              n_seeds: int | None = None, n_queries: int = 1) -> dict[str, torch.Tensor]:
    """{'preds_diff', 'model_diff', 'model_cos'}: each (E,), E the model's seeds.

    `model_fn` returns (E, B, 1) or (E, B, T); `estimator_fn` returns (E or 1, B, T). E is
    `n_seeds`, else `model_fn.n_seeds` (an `EnsembleModel`), else the batch's. The estimator
    runs on the batch as given (it is the same for every seed when E_batch = 1) and is broadcast.
    An estimator carrying `n_seeds` (per-seed parameters) gets the batch expanded to them too.
    `n_queries` m > 1: both return (.., B, m) for the last m positions; metrics averaged over them.
    """
    E = n_seeds or getattr(model_fn, "n_seeds", None) or batch.x.shape[0]
    pred_tf, g_tf = sensitivities(model_fn, batch, E, n_queries)
    # an estimator with per-seed parameters (e.g. a step tuned per seed) says so by `n_seeds`
    pred_est, g_est = sensitivities(estimator_fn, batch, getattr(estimator_fn, "n_seeds", None), n_queries)
    pred_est, g_est = pred_est.to(pred_tf.dtype), g_est.to(g_tf.dtype)
    per_word = {
        "preds_diff": (pred_tf - pred_est).abs(),
        "model_diff": torch.linalg.vector_norm(g_tf - g_est, dim=-1),
        "model_cos": F.cosine_similarity(g_tf, g_est.expand_as(g_tf), dim=-1, eps=1e-30),
    }
    if n_queries == 1:                                           # (E, B): the one-query metrics as they were
        return {k: v.mean(-1) for k, v in per_word.items()}
    return {k: v.flatten(1).mean(-1) for k, v in per_word.items()}  # (E, B, m): over prompts and query words


__all__ = ["sensitivities", "alignment"]
