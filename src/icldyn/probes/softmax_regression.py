"""Probes of the softmax-regression experiment, on the held-out tasks at every record step.

  baseline/gd_one_step         ½·MSE over the query words of one GD step from 0, η tuned per seed on
                               training tasks (`estimators.softmax_regression.tune_step`); probe/gd_eta: η
  baseline/optimum             the softmax-regression optimum fitted on each context (last record)
  probe/alignment/gd_one_step/{preds_diff, model_diff, model_cos}: von Oswald alignment with that GD
                               step over the m query words (`probes/alignment.py`, multi-query)
  probe/shift/data_ratio       max over tasks of ‖f(A+ΔA, x*) − f(A, x*)‖ / (½‖ΔA x*‖), ΔA the shift the
                               model's layer (residual, with its own W^KQ, W^PV) applies to A   (≤ 1)
  probe/shift/weight_ratio     max over tasks of ‖f(A, x₁) − f(A, 0)‖ / (½‖A x₁‖) for the GD step      (≤ 1)
  probe/shift/identity_err     max |L(x₁; b) − L(0; b̃)|, the weight-shift identity along the GD step
  probe/shift/attention_ratio  max over tasks of ‖ΔT‖₂ / (√n ‖T‖₂ ‖W^PV‖₂), T = [A b]               (≤ 1)
"""

from __future__ import annotations

import torch

from icldyn.estimators.softmax_regression import OneStepGD, Optimum, query_loss, tune_step
from icldyn.probes.alignment import alignment
from icldyn.theory import softmax_regression as theory

ALIGNMENT_TASKS = 512


def softmax_regression_probe(config, task, tune_tasks: int = 4096, optimum_steps: int = 30):
    m = config.task.n_queries

    def gd_for(ctx) -> OneStepGD:
        store = ctx.cache.setdefault("softmax_regression", {})
        if "eta" not in store:  # tuned once, on the seeds' own training tasks (step 0 of their stream)
            train = task.sample(ctx.seeds, 0, tune_tasks, device=ctx.eval_batch.x.device)
            store["eta"] = tune_step(train, m)
        gd = OneStepGD(store["eta"], m)
        gd.n_seeds = len(ctx.seeds)
        return gd

    def probe(ctx) -> dict[str, torch.Tensor]:
        b = ctx.eval_batch
        gd = gd_for(ctx)
        target = b.y[..., -m:]
        with torch.no_grad():
            out = {"baseline/gd_one_step": query_loss(gd(b).double(), target.double()).mean(-1),
                   "probe/gd_eta": gd.eta}
        if ctx.final:
            with torch.no_grad():
                out["baseline/optimum"] = query_loss(Optimum(m, optimum_steps)(b).double(),
                                                     target.double()).mean(-1).reshape(-1)
        small = b.select(slice(0, ALIGNMENT_TASKS))
        with torch.enable_grad():
            res = alignment(ctx.model, gd, small, n_queries=m)
        out.update({f"probe/alignment/gd_one_step/{k}": v.detach() for k, v in res.items()})
        out.update(shift_ratios(ctx.model, small, gd.eta, m))
        return out

    return probe


@torch.no_grad()
def shift_ratios(model, batch, eta: torch.Tensor, m: int) -> dict[str, torch.Tensor]:
    """The weight- and data-shift ratios of the module doc, per seed (E,), in float64."""
    F = torch.float64
    A, b = batch.x[..., :-m, :].to(F), batch.y[..., :-m].to(F)                   # (1, B, n, d), (1, B, n)
    x_star = batch.extras["x_star"].to(F)                                         # (1, B, d)
    T = torch.cat([A, b[..., None]], -1)                                          # (1, B, n, d+1)
    w_kq, w_pv = model.w_kq.detach().to(F)[:, None], model.w_pv.detach().to(F)[:, None]  # (E, 1, D, D)
    dT, _ = theory.attention_data_shift(T, w_kq, w_pv)                            # (E, B, n, d+1)
    d = A.shape[-1]
    data = theory.lipschitz_ratio(A, dT[..., :d], x_star)                         # (E, B)
    attention = theory.data_shift_ratio(T, w_kq, w_pv)                            # (E, B)
    x1 = theory.one_step(A, b, eta.to(F).reshape(-1, 1))                          # (E, B, d)
    x0 = torch.zeros_like(x1)
    weight = theory.weight_ratio(A, x0, x1)
    identity = (theory.loss(A, x1, b) - theory.loss(A, x0, theory.shifted_target(A, x0, x1, b))).abs()
    return {"probe/shift/data_ratio": data.amax(-1), "probe/shift/weight_ratio": weight.amax(-1),
            "probe/shift/identity_err": identity.amax(-1), "probe/shift/attention_ratio": attention.amax(-1)}
