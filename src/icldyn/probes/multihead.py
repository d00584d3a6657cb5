"""Probes of multi-head softmax attention on multi-task regression (Chen, Sheen, Wang & Yang 2024).

Metrics (indices from 0; h a head, i a task):
- probe/omega/<h>/<i>, probe/mu/<h>/<i>: the semi-singular values, read off the full matrices by
  projecting W^{(h)} on Φ_iΦ_iᵀ and U^{(h)} on ψ_iψ_iᵀ (`MultiheadAttention.omega_mu`).
- probe/head_specialisation/<h>: r_h = max_i |ω_iμ_i| / Σ_i |ω_iμ_i| (1/I shared evenly, 1 one task).
- probe/off_decomposable: Frobenius norm of (W, U) outside the decomposable family (all heads);
  probe/off_decomposable_relative: the same over the norm of (W, U).
- probe/projected_loss (full parametrisation): the held-out loss of (W, U) projected on the
  decomposable family — what the off-family part costs (finite batches leak into it).
- probe/task_loss/<i>: ½·E(ŷ_i − y_{q,i})² on the held-out prompts (the zero predictor scores ½).
  These two use at most 100 000 of the held-out prompts.
- probe/score_scale/<h>: the typical attention score, √(mean over prompts of the variance over keys
  of s_l = x_lᵀW^{(h)}x_q) — the spread of the scores, which is what the softmax sees.
- probe/max_attention/<h>: mean over prompts of max_l a_l (1/L for uniform attention, 1 for hard).
- probe/attention_spread/<h>: mean over prompts of 1/(L·Σ_l a_l²), the fraction of the L keys
  effectively attended (1 uniform, 1/L hard).
- baseline/<estimator> (last record only): the loss of the per-task estimators of
  `estimators/multihead.py` on the same held-out prompts: zero, gd (one step at the optimal η),
  centred_gd (one step on centred data, "debiased GD", optimal η), ridge (the Bayes posterior mean).
- probe/pred_rel_diff/<estimator> (last record only): ‖ŷ − η̂·ĝ‖/‖η̂·ĝ‖ over the held-out prompts,
  ĝ the estimator's prediction at unit step and η̂ the least-squares step fitted to the model: how
  far the trained model's predictions are from that estimator with its best step.
"""

from __future__ import annotations

import torch

from icldyn.estimators import make_estimator
from icldyn.tasks.base import Batch
from icldyn.theory import multihead as mh

ATTENTION_PROMPTS = {False: 2048, True: 16384}   # during training / at the last record
ESTIMATOR_PROMPTS = 100_000                      # DESIGN: ≥ 10⁵ held-out prompts for regression claims
DIAGNOSTIC_PROMPTS = 100_000                     # projected and per-task losses at the last record


def semi_singular_probe(config, task):
    """probe/omega/<h>/<i>, probe/mu/<h>/<i>, probe/head_specialisation/<h>, probe/off_decomposable[_relative]."""

    @torch.no_grad()
    def probe(ctx):
        model = ctx.model
        omega, mu = model.omega_mu()                               # (E, H, I)
        r = model.head_specialisation()                            # (E, H)
        out = {}
        for h in range(omega.shape[1]):
            out[f"probe/head_specialisation/{h}"] = r[:, h]
            for i in range(omega.shape[2]):
                out[f"probe/omega/{h}/{i}"] = omega[:, h, i]
                out[f"probe/mu/{h}/{i}"] = mu[:, h, i]
        out["probe/off_decomposable"] = model.off_decomposable()
        out["probe/off_decomposable_relative"] = model.off_decomposable(relative=True)
        return out

    return probe


def projected_loss_probe(config, task):
    """probe/projected_loss: held-out loss of the decomposable projection of (W, U) (E,)."""
    import copy

    from icldyn.models.base import evaluate

    @torch.no_grad()
    def probe(ctx):
        model = ctx.model
        if model.config.parametrisation != "full":
            return {}
        projected = copy.deepcopy(model)
        W, U = projected._compose(*model.omega_mu())
        projected.key_query.copy_(W)
        projected.output_value.copy_(U)
        return {"probe/projected_loss": evaluate(projected, ctx.eval_batch.select(slice(0, DIAGNOSTIC_PROMPTS)))}

    return probe


def task_loss_probe(config, task):
    """probe/task_loss/<i>: each task's ½·squared error at the query on the held-out prompts (E,)."""

    @torch.no_grad()
    def probe(ctx):
        b = ctx.eval_batch.select(slice(0, DIAGNOSTIC_PROMPTS))
        total = None
        for start in range(0, b.x.shape[1], 8192):
            part = b.select(slice(start, start + 8192))
            err = 0.5 * (ctx.model(part) - part.y[:, :, -1]).pow(2).sum(1).double()   # (E, I)
            total = err if total is None else total + err
        total = total / b.x.shape[1]
        return {f"probe/task_loss/{i}": total[:, i] for i in range(total.shape[1])}

    return probe


def attention_stats(model, batch) -> dict[str, torch.Tensor]:
    """score_scale, max_attention, attention_spread, each (E, H), on `batch` (query last)."""
    _, cache = model.run_with_cache(batch, lambda name: name.startswith("blocks.0.attn."))
    scores = cache["blocks.0.attn.hook_scores"].double()                           # (E, B, H, L)
    attn = cache["blocks.0.attn.hook_pattern"].double()
    L = attn.shape[-1]
    return {
        "score_scale": scores.var(-1, unbiased=False).mean(1).sqrt(),
        "max_attention": attn.amax(-1).mean(1),
        "attention_spread": (1.0 / (L * attn.pow(2).sum(-1))).mean(1),
    }


def attention_probe(config, task):
    """probe/score_scale/<h>, probe/max_attention/<h>, probe/attention_spread/<h>."""

    @torch.no_grad()
    def probe(ctx):
        b = ctx.eval_batch.select(slice(0, ATTENTION_PROMPTS[ctx.final]))
        stats = attention_stats(ctx.model, b)
        return {f"probe/{k}/{h}": v[:, h] for k, v in stats.items() for h in range(v.shape[1])}

    return probe


# the registered per-task estimators (estimators/multihead.py) the baselines report, by metric name
ESTIMATORS = {"gd": "multitask_gd", "centred_gd": "multitask_centred_gd", "ridge": "multitask_ridge"}


def estimator_predictions(task, batch, estimators=None) -> dict[str, torch.Tensor]:
    """Per-task estimators' predictions (1, B, I) on `batch` (in float64) at their optimal population steps."""
    estimators = estimators or {name: make_estimator(est, task) for name, est in ESTIMATORS.items()}
    b = Batch(batch.x.double(), batch.y.double())
    return {"zero": torch.zeros_like(b.y[:, :, -1]), **{name: est(b) for name, est in estimators.items()}}


def estimator_probe(config, task, chunk: int = 20_000):
    """baseline/<estimator> and probe/pred_rel_diff/<estimator> on the held-out prompts, last record only.

    Summed over chunks of `chunk` prompts (float64 copies of 10⁵ prompts would take ~1 GB)."""
    estimators = {name: make_estimator(est, task) for name, est in ESTIMATORS.items()}
    steps = {name: est.eta for name, est in estimators.items() if hasattr(est, "eta")}

    @torch.no_grad()
    def probe(ctx):
        if not ctx.final:
            return {}
        b = ctx.eval_batch.select(slice(0, ESTIMATOR_PROMPTS))
        n = b.x.shape[1]
        loss, cross, unit2, model2 = {}, {}, {}, {}
        for start in range(0, n, chunk):
            part = b.select(slice(start, start + chunk))
            preds = estimator_predictions(task, part, estimators)
            model_pred = ctx.model(part).double()                      # (E, B, I)
            for name, p in preds.items():
                loss[name] = loss.get(name, 0.0) + mh.query_losses(p, part.y.double()).sum()
                if name in steps:
                    unit = p / steps[name]                             # the estimator at unit step
                    cross[name] = cross.get(name, 0.0) + (model_pred * unit).sum((1, 2))
                    unit2[name] = unit2.get(name, 0.0) + unit.pow(2).sum()
                    model2[name] = model2.get(name, 0.0) + model_pred.pow(2).sum((1, 2))
        out = {f"baseline/{name}": (v / n).reshape(1) for name, v in loss.items()}
        for name in steps:
            # best step for this model: least squares of ŷ on the estimator's unit-step prediction
            eta = cross[name] / unit2[name]                                                   # (E,)
            resid = (model2[name] - 2 * eta * cross[name] + eta**2 * unit2[name]).clamp_min(0)
            out[f"probe/pred_rel_diff/{name}"] = resid.sqrt() / (eta.abs() * unit2[name].sqrt())
            out[f"probe/fitted_step/{name}"] = eta
        return out

    return probe
