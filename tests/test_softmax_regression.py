"""softmax-regression: theory against autograd and random trials, the estimators, the model's
multi-query mode, the multi-query alignment probe, and a negative control for every claim."""

from __future__ import annotations

import pytest
import torch

from icldyn.estimators.softmax_regression import (OneStepGD, Optimum, one_step_direction, optimum, query_loss,
                                                 tune_step)
from icldyn.errors import UsageError
from icldyn.models.softmax_attention import SoftmaxAttention, SoftmaxAttentionConfig
from icldyn.probes.alignment import alignment, sensitivities
from icldyn.probes.softmax_regression import shift_ratios
from icldyn.tasks.softmax_regression import SoftmaxRegressionConfig, SoftmaxRegressionTask
from icldyn.theory import softmax_regression as th

F64 = torch.float64


def _task(d=4, n=6, m=3):
    return SoftmaxRegressionTask(SoftmaxRegressionConfig(d=d, n_points=n, n_queries=m), F64)


# -- task -------------------------------------------------------------------------------------------
def test_task_layout_targets_realisable_and_seeded():
    task = _task()
    b = task.sample([0, 1], 3, 16)
    assert b.x.shape == (2, 16, 9, 4) and b.y.shape == (2, 16, 9)
    xs = b.extras["x_star"]
    assert torch.allclose(b.y[..., :6], th.predict(b.x[..., :6, :], xs), atol=1e-12)
    assert torch.allclose(b.y[..., 6:], th.predict(b.x[..., 6:, :], xs), atol=1e-12)
    assert torch.equal(task.sample([1], 3, 16).x[0], b.x[1])          # a pure function of (seed, step)
    assert not torch.equal(task.sample([1], 4, 16).x[0], b.x[1])


# -- claim 1: gradient and one step vs autograd ----------------------------------------------------
def test_gradient_and_one_step_match_autograd():
    err = th.autograd_errors(500, 7, 5, seed=1)
    assert err["gradient"].max() < 1e-10 and err["one_step"].max() < 1e-10


def test_negative_control_perturbed_gradient_fails_autograd_check():
    def wrong(A, x, b):      # drops the −ffᵀ term of the softmax Jacobian
        f = th.predict(A, x)
        return (A.transpose(-1, -2) @ (f * (f - b))[..., None]).squeeze(-1)
    assert th.autograd_errors(200, 7, 5, seed=1, gradient_fn=wrong)["gradient"].max() > 1e-3


def test_one_step_is_gd_step_from_zero_with_plain_autograd():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(6, 4, generator=g, dtype=F64)
    b = torch.softmax(torch.randn(6, generator=g, dtype=F64), -1)
    x = torch.zeros(4, dtype=F64, requires_grad=True)
    th.loss(A, x, b).backward()
    assert torch.allclose(th.one_step(A, b, 2.5), -2.5 * x.grad, atol=1e-14)
    assert torch.allclose(2.5 * one_step_direction(A, b), -2.5 * x.grad, atol=1e-14)   # the estimator's copy


# -- claim 2: weight-shift identity, ½-Lipschitz facts, the paper's M -------------------------------
def test_weight_shift_identity_and_lipschitz_facts_over_random_trials():
    r = th.weight_shift_trials(3000, 8, 5, seed=2)
    assert r["identity_err"].max() < 1e-12
    assert r["ratio_dx"].max() <= 1 and r["ratio_dA"].max() <= 1
    assert r["log_margin_dx"].max() < 0 and r["log_margin_dA"].max() < 0
    assert torch.isfinite(th.log_paper_constant(200, torch.tensor(30.0)))     # M itself would overflow


def test_negative_control_lipschitz_constant_below_half_is_violated_near_ties():
    assert th.near_tied_ratio(constant=0.5) <= 1.0
    assert th.near_tied_ratio(constant=0.4) > 1.2                    # → ½ / 0.4 = 1.25


# -- claim 3: data shift of one residual attention layer ---------------------------------------------
def test_attention_data_shift_bound_and_its_negative_control():
    assert th.data_shift_trials(2000, 6, 3, seed=3).max() <= 1.0
    # every query attends to token 0 (a huge score on its label entry): ‖S‖₂ = √n, so the bound
    # with √n holds and the one without it fails
    n, D = 6, 4
    T = torch.randn(n, D, generator=torch.Generator().manual_seed(0), dtype=F64)
    T[:, -1] = 0.0
    T[0, -1] = 1.0
    T = torch.cat([T, torch.ones(n, 1, dtype=F64)], -1)           # a constant feature on the query side
    W = torch.zeros(D + 1, D + 1, dtype=F64)
    W[D - 1, D] = 60.0                                             # t_iᵀ W t_j = 60·(label entry of t_i)
    w_v = torch.eye(D + 1, dtype=F64)
    _, S = th.attention_data_shift(T, W, w_v)
    assert torch.allclose(S[:, 0], torch.ones(n, dtype=F64), atol=1e-12)
    assert th.data_shift_ratio(T, W, w_v) <= 1.0
    assert th.data_shift_ratio(T, W, w_v, root_n=False) > 1.0


# -- estimators ------------------------------------------------------------------------------------
def test_optimum_recovers_realisable_targets_and_gd_step_is_tuned():
    task = _task(d=3, n=10, m=4)
    b = task.sample([0], 0, 256)
    A, bb = b.x[..., :-4, :], b.y[..., :-4]
    x = optimum(A, bb)
    assert th.loss(A, x, bb).max() < 1e-12
    assert query_loss(Optimum(4)(b), b.y[..., -4:]).max() < 1e-10
    eta = tune_step(b, 4)
    risk = lambda e: query_loss(OneStepGD(e, 4)(b), b.y[..., -4:]).mean()   # noqa: E731
    assert risk(eta) <= min(risk(eta * 0.8), risk(eta * 1.25)) + 1e-15
    # the closed form batched over seeds equals one task at a time
    one = OneStepGD(float(eta), 4)(b)[0, 5]
    A5, b5 = A[0, 5], bb[0, 5]
    x1 = float(eta) / 10 * A5.T @ (b5 - 0.1)
    assert torch.allclose(one, torch.softmax(b.x[0, 5, -4:] @ x1, -1), atol=1e-12)


# -- model: multi-query softmax read-out -----------------------------------------------------------
def _model(task, seeds=(0,), **kw):
    return SoftmaxAttention(SoftmaxAttentionConfig(train="full", readout="softmax", **kw), task, list(seeds), F64)


def test_model_never_reads_query_targets_and_matches_an_independent_loop():
    task = _task()
    model = _model(task, seeds=[0, 1])
    with torch.no_grad():
        model.w_kq.normal_(generator=torch.Generator().manual_seed(1))
        model.w_pv.normal_(generator=torch.Generator().manual_seed(2))
    b = task.sample([0], 0, 8)
    out = model(b)
    assert out.shape == (2, 8, 3) and torch.allclose(out.sum(-1), torch.ones(2, 8, dtype=F64))
    b2 = task.sample([0], 0, 8)
    b2.y[..., -3:] = torch.rand(1, 8, 3, dtype=F64)
    assert torch.equal(model(b2), out)
    # independent: per (seed, prompt, query) with plain loops
    e, p, q = 1, 5, 2
    z = torch.cat([b.x[0, p, :6], b.y[0, p, :6, None]], -1)
    zq = torch.cat([b.x[0, p, 6 + q], torch.zeros(1, dtype=F64)])
    att = torch.softmax(z @ model.w_kq[e] @ zq, -1)
    logits = torch.stack([torch.softmax(z @ model.w_kq[e] @ torch.cat([b.x[0, p, 6 + k], torch.zeros(1, dtype=F64)]),
                                        -1) @ (z @ model.w_pv[e][4]) for k in range(3)])
    assert torch.allclose(att @ (z @ model.w_pv[e][4]), logits[q])
    assert torch.allclose(out[e, p], torch.softmax(logits, -1), atol=1e-12)


def test_model_rejects_q_mode_with_several_queries():
    with pytest.raises(UsageError, match="train"):
        SoftmaxAttention(SoftmaxAttentionConfig(train="q"), _task(), [0], F64)


# -- alignment probe, generalised to m queries -----------------------------------------------------
def test_multi_query_sensitivities_are_the_jacobian():
    task = _task()
    b = task.sample([0], 0, 4)
    gd = OneStepGD(3.0, 3)
    pred, g = sensitivities(gd, b, n_queries=3)
    assert pred.shape == (1, 4, 3) and g.shape == (1, 4, 3, 12)
    xq = b.x[0, 1, -3:].clone()
    A, bb = b.x[0, 1, :-3], b.y[0, 1, :-3]
    x1 = th.one_step(A, bb, 3.0)
    jac = torch.autograd.functional.jacobian(lambda q: torch.softmax(q @ x1, -1), xq)   # (3, 3, d)
    assert torch.allclose(g[0, 1], jac.reshape(3, 12), atol=1e-12)


def test_gd_emulating_layer_aligns_and_untrained_model_fails_the_alignment_claim():
    """A layer built to compute one GD step (small scores, values b_i) aligns closely; the untrained
    model (W^KQ = 0: constant predictions) has cosine 0 — the negative control of claim 4."""
    task = _task(d=4, n=40, m=3)
    b = task.sample([0], 0, 64)
    eta, eps = 2.0, 1e-4
    gd = OneStepGD(eta, 3)
    built = _model(task)
    with torch.no_grad():
        built.w_kq[0, :4, :4] = eps * torch.eye(4, dtype=F64)
        built.w_pv[0, 4, 4] = eta / eps
    res = alignment(built, gd, b, n_queries=3)
    assert res["model_cos"].item() > 0.99 and res["preds_diff"].item() < 1e-3
    untrained = alignment(_model(task), gd, b, n_queries=3)
    assert untrained["model_cos"].item() == 0.0
    assert untrained["preds_diff"].item() > 10 * res["preds_diff"].item()


def test_negative_control_untrained_model_fails_the_loss_factor():
    task = _task(d=5, n=25, m=5)
    b = task.sample([0], 0, 2048)
    eta = tune_step(b, 5)
    gd_loss = query_loss(OneStepGD(eta, 5)(b), b.y[..., -5:]).mean()
    untrained = _model(task, label_value_init=25.0)
    with torch.no_grad():
        tf_loss = untrained.loss(untrained(b), b)
    assert float(tf_loss / gd_loss) > 1.5


def test_shift_ratios_within_bounds_for_random_layers():
    task = _task()
    b = task.sample([0], 0, 32)
    model = _model(task, seeds=[0, 1])
    with torch.no_grad():
        model.w_kq.normal_(generator=torch.Generator().manual_seed(1))
        model.w_pv.normal_(generator=torch.Generator().manual_seed(2))
    out = shift_ratios(model, b, torch.tensor([1.0, 5.0], dtype=F64), 3)
    for k in ("data_ratio", "weight_ratio", "attention_ratio"):
        v = out[f"probe/shift/{k}"]
        assert v.shape == (2,) and (v > 0).all() and (v <= 1).all()
    assert (out["probe/shift/identity_err"] < 1e-14).all()
    # negative control of claim 5: the ½ bound tightened to 0.4 fails on near-tied two-word tasks
    A = torch.zeros(1, 2, 1, dtype=F64)
    A[0, 0, 0], A[0, 1, 0] = 1e-3, -1e-3
    x = torch.ones(1, 1, dtype=F64)
    dA = 1e-4 * torch.tensor([[[1.0], [-1.0]]], dtype=F64)
    assert th.lipschitz_ratio(A, dA, x, constant=0.5) <= 1.0 < th.lipschitz_ratio(A, dA, x, constant=0.4)


# -- the experiment end to end (tiny) ----------------------------------------------------------------
def test_tiny_sweep_stores_claims_and_figures(tmp_path):
    from icldyn import api

    run = api.run("softmax-regression", overrides={"train.steps": 20, "d_sweep": [3, 6], "train.n_records": 3,
                                                   "theory_trials": 300, "tune_tasks": 128, "task.n_points": 8,
                                                   "train.batch_size": 32, "train.eval_prompts": 256,
                                                   "train.eval_prompts_during": 128},
                  seeds=2, out=tmp_path, workers=1)
    ids = [c["id"] for c in run.claims]
    assert ids[:5] == ["theory_gradient_autograd", "theory_weight_shift_identity", "theory_lipschitz_half",
                       "theory_paper_constant", "theory_attention_data_shift"]
    assert {"loss_matches_gd[task.d=3]", "alignment_rises[task.d=6]", "shift_bounds_along_training"} <= set(ids)
    assert all(c["passed"] for c in run.claims if c["id"].startswith("theory_"))
    assert sorted(p.name for p in (run.path / "figures").glob("*.png")) == [
        "loss_vs_d.png", "theory_checks.png", "training.png"]


def test_bad_d_sweep_is_a_usage_error():
    from icldyn.experiments import EXPERIMENTS

    exp = EXPERIMENTS["softmax-regression"]
    with pytest.raises(UsageError, match="d_sweep"):
        exp.variants(exp.config("quick", {"d_sweep": [5, 0]}))


@pytest.mark.slow
def test_quick_preset_passes_every_claim(tmp_path):
    from icldyn import api

    run = api.run("softmax-regression", "quick", out=tmp_path, workers=None)
    failed = [c["id"] for c in run.claims if c["passed"] is not True]
    assert not failed, failed


def test_new_model_options_leave_feature_convergence_hash_alone():
    """The hashes written before label_value_init/readout existed (main at 4cac904) are kept; a
    non-default value of either enters the hash."""
    from icldyn.experiments import EXPERIMENTS

    exp = EXPERIMENTS["feature-convergence"]
    assert exp.config("quick").config_hash() == "d91b630b09"
    assert exp.config("paper").config_hash() == "2784e5039a"
    assert exp.config("quick", {"model.label_value_init": 2.0}).config_hash() != "d91b630b09"
    with pytest.raises(UsageError, match="train"):
        SoftmaxAttention(SoftmaxAttentionConfig(train="q", readout="softmax"), _task(m=2), [0], F64)
