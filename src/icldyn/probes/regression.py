"""Probes for regression tasks: estimator baselines and von Oswald alignment with an estimator."""

from __future__ import annotations

import torch

ALIGNMENT_PROMPTS = {False: 2048, True: 8192}  # during training / at the last record


def baseline_probe(config, task, names=None):
    """baseline/<name>: each estimator's loss (½·MSE at the query) on the held-out prompts.
    `names`: the task's own estimators (`Task.estimators`) unless the experiment narrows them.
    Estimators do not train, so this is measured at the last record only."""
    from icldyn.estimators import ESTIMATORS

    estimators = {n: ESTIMATORS[n](task) for n in (task.estimators if names is None else names)}

    @torch.no_grad()
    def probe(ctx):
        if not ctx.final:
            return {}
        b = ctx.eval_batch
        return {f"baseline/{n}": 0.5 * (est(b)[..., -1] - b.y[..., -1]).pow(2).mean(-1).double()
                for n, est in estimators.items()}

    return probe


def alignment_probe(config, task, name: str):
    """probe/alignment/<name>/{preds_diff,model_diff,model_cos} against estimator `name`."""
    from icldyn.estimators import ESTIMATORS
    from icldyn.probes.alignment import alignment

    est = ESTIMATORS[name](task)

    def probe(ctx):
        b = ctx.eval_batch.select(slice(0, ALIGNMENT_PROMPTS[ctx.final]))
        with torch.enable_grad():
            res = alignment(ctx.model, est, b)
        return {f"probe/alignment/{name}/{k}": v.detach() for k, v in res.items()}

    return probe
