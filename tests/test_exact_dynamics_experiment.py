"""linear-exact-dynamics: its probes on known weights, its claims on tiny runs, and a negative
control for every claim (the wrong Λ, an untrained model, Adam instead of gradient descent).

The ODE against direct population-gradient training is tested in tests/test_exact_dynamics.py,
phase detection in tests/test_phases.py, the spectral probes in tests/test_spectral.py.
"""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

import icldyn
from icldyn.claims import CLAIM_SPECS
from icldyn.experiments import EXPERIMENTS
from icldyn.experiments.base import Experiment
from icldyn.experiments.exact_dynamics import _train_overrides, piecewise, record_grid, theory_frame
from icldyn.experiments.exact_dynamics_claims import ODE_CLAIMS, alignment
from icldyn.models.lsa import LSA, LSAConfig
from icldyn.probes.lsa_modes import (conserved, effective_map, eigen_overlaps, mode_progress, overlap_rows, split,
                                     x_block)
from icldyn.probes.spectral import subspace_overlap
from icldyn.tasks.linear_regression import LinearRegressionConfig, LinearRegressionTask
from icldyn.theory.exact_dynamics import ReducedLSA
from icldyn.train.schedule import clock, learning_rates, record_steps_in_time, time_at

EXP = "linear-exact-dynamics"
STAGED = [1.0, 0.25, 0.0625]
FAST = [1.0, 0.5, 0.25]  # ODE ½-crossings at t ≈ 4.5, 7.7, 19 from σ₀ = 10⁻²: a whole run in ~1 s
SMALL = {"train.eval_prompts": 2000, "train.eval_prompts_during": 500, "train.checkpoint_every": 100_000}


def tiny(**over):
    base = {"role": "staged", "task.eigenvalues": FAST, "model.init_scale": 1e-2, "train.n_records": 60,
            **SMALL, **_train_overrides([(8.0, 0.01), (60.0, 0.1)])}
    return {**base, **over}


def claim(claims, ident):
    (c,) = [c for c in claims if c.id == ident]
    return c


def spec_claim(ident, run, measure=None):
    """The claim `ident` of this experiment's claim list, evaluated on `run` (optionally with another measure)."""
    spec = CLAIM_SPECS[f"{EXP}:{ident}"]
    return (spec if measure is None else dataclasses.replace(spec, measure=measure)).evaluate(run)


def sweep_of(runs):
    """Runs trained one by one, read as the variants of one sweep directory."""
    return SimpleNamespace(variants={str(i): r for i, r in enumerate(runs)}, config=runs[0].config)


def with_wrong_eigenvalues(run, eigenvalues):
    """The run with theory.parquet recomputed for another Λ (the negative control of the theory claims)."""
    task = LinearRegressionTask(run.config.task)
    times = time_at(run.config.train, record_grid(run.metrics)["step"].values)
    return dataclasses.replace(run, theory=theory_frame(run.config, task, times, eigenvalues=eigenvalues))


@pytest.fixture(scope="module")
def staged_run(tmp_path_factory):
    return icldyn.run(EXP, overrides=tiny(), out=tmp_path_factory.mktemp("staged"))


@pytest.fixture(scope="module")
def frozen_run(tmp_path_factory):
    """An untrained control: only W^PV moves (W^KQ frozen by a stage), so no mode can switch on."""
    over = tiny()
    over["train.stages"] = [{**s, "params": ["w_pv"]} for s in over["train.stages"]]
    return icldyn.run(EXP, overrides=over, out=tmp_path_factory.mktemp("frozen"))


# -- probes on known weights -----------------------------------------------------------------------
def test_effective_map_is_the_part_of_the_prediction_linear_in_h():
    d, n = 3, 7
    task = LinearRegressionTask(LinearRegressionConfig(d=d, n_points=n, covariance="anisotropic"), dtype=torch.float64)
    model = LSA(LSAConfig(init="gaussian", init_scale=0.5), LinearRegressionConfig(d=d), [0, 1], dtype=torch.float64)
    b = task.eval_batch(64, 3)
    with torch.no_grad():
        pred = model(b)[..., 0]                                          # (E, B)
        p, Q = split(model.w_pv[0], model.w_kq[0])
        x, y, xq = b.x[..., :-1, :], b.y[..., :-1], b.x[..., -1, :]
        h = (y[..., None] * x).sum(-2) / n
        Sxx = (x.transpose(-1, -2) @ x + xq[..., :, None] * xq[..., None, :]) / n  # the query is a key too
        Syy = y.pow(2).sum(-1) / n
        rest = (torch.einsum("ei,ebij,ejk,ebk->eb", p[:, :d], Sxx, Q[:, :d], xq)
                + p[:, d, None] * Syy * torch.einsum("ek,ebk->eb", Q[:, d], xq))
        linear = torch.einsum("ebi,eij,ebj->eb", h.expand(2, -1, -1), effective_map(model.w_pv[0], model.w_kq[0]), xq)
    torch.testing.assert_close(pred, linear + rest, atol=1e-12, rtol=1e-10)


def test_mode_progress_reads_modes_in_the_eigenbasis_by_decreasing_lambda():
    lam = [0.3, 1.2, 0.05]  # unsorted, rotated covariance
    task = LinearRegressionTask(LinearRegressionConfig(d=3, n_points=9, covariance="rotated", eigenvalues=lam),
                                dtype=torch.float64)
    order = np.argsort(lam)[::-1]
    R = task.rotation[:, torch.as_tensor(order.copy())]
    v, u = 0.7, torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)  # u by decreasing λ
    w_pv, w_kq = torch.zeros(1, 4, 4, dtype=torch.float64), torch.zeros(1, 4, 4, dtype=torch.float64)
    w_pv[0, 3, 3] = v
    w_kq[0, :3, :3] = R @ torch.diag(u) @ R.T
    got = mode_progress(w_pv, w_kq, task.eigenvalues, task.rotation, 9)[0].numpy()
    system = ReducedLSA(sorted(lam, reverse=True), 9)
    np.testing.assert_allclose(got, system.gamma * v * u.numpy(), rtol=1e-12)
    # the same numbers the ODE calls mode progress
    np.testing.assert_allclose(got, system._curves(np.zeros(1), np.array([[v, *u.tolist()]]))["mode_progress"][0])


def test_conserved_quantity_identity_for_one_minibatch_sgd_step():
    """ŷ is bilinear in (p, Q): C = ‖p‖² − ‖Q‖² is invariant under (αp, Q/α)-rescaling of the
    prediction's symmetry, so a step changes it by exactly lr²(‖∇_p‖² − ‖∇_Q‖²), minibatch or not."""
    task = LinearRegressionTask(LinearRegressionConfig(d=3, n_points=10, covariance="anisotropic"), dtype=torch.float64)
    model = LSA(LSAConfig(init="gaussian", init_scale=0.4), LinearRegressionConfig(d=3), [0], dtype=torch.float64)
    b = task.sample([0], 0, 32)
    loss = model.loss(model(b), b).sum()
    g_pv, g_kq = torch.autograd.grad(loss, [model.w_pv[0], model.w_kq[0]])
    gp, gQ = split(g_pv, g_kq)
    lr = 0.3
    with torch.no_grad():
        before = conserved(model.w_pv[0], model.w_kq[0])
        after = conserved(model.w_pv[0] - lr * g_pv, model.w_kq[0] - lr * g_kq)
    expected = lr**2 * (gp.pow(2).sum() - gQ.pow(2).sum())
    assert abs(expected.item()) > 1e-6
    torch.testing.assert_close(after - before, expected.reshape(1), atol=1e-13, rtol=1e-9)


def test_eigen_overlaps_find_the_eigenvector():
    lam = torch.tensor([0.2, 1.0, 0.5], dtype=torch.float64)
    R = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64))[0]
    M = 5 * R[:, 2:3] @ R[:, 2:3].T + 0.01 * torch.eye(3, dtype=torch.float64)  # top direction: λ = 0.5's
    ov = eigen_overlaps(M[None], lam, R)[0]
    torch.testing.assert_close(ov.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert ov[1] > 0.999 and ov[0] < 1e-3  # index 1 = the second-largest λ


def test_overlap_rows_against_previous_and_final():
    g = torch.Generator().manual_seed(1)
    mats = [torch.randn(2, 4, 4, generator=g, dtype=torch.float64) for _ in range(3)]
    ckpts = [(k, 0.1 * k, {"w_pv.0": m, "w_kq.0": m.flip(-1)}) for k, m in enumerate(mats)]
    rows = pd.DataFrame(overlap_rows(ckpts, seeds=[5, 6], k=1))
    final = rows[rows["name"] == "probe/overlap_final/w_pv.0"].sort_values(["step", "seed"])
    assert final[final["step"] == 2]["value"].tolist() == pytest.approx([1.0, 1.0])
    prev = rows[rows["name"] == "probe/overlap_prev/kq_x"]
    assert sorted(prev["step"].unique()) == [1, 2]  # the first record has no previous one
    expected = subspace_overlap(x_block(mats[1].flip(-1)), x_block(mats[0].flip(-1)), 1)
    got = prev[prev["step"] == 1].sort_values("seed")["value"].values
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-12)


def test_records_are_log_spaced_in_time_for_a_piecewise_lr(staged_run):
    tc = staged_run.config.train
    times = clock(tc)
    steps = record_steps_in_time(tc, 60, t_min=0.05)
    assert steps[0] == 0 and steps[-1] == tc.steps
    gaps = np.diff(np.log(times[steps[1:]]))
    assert gaps.max() < 2.5 * np.log(60 / 0.05) / 59  # no decade of time left unrecorded
    # and the trainer's clock is the same Σ lr, to the last bit (the theory is joined to the metrics on time)
    grid = record_grid(staged_run.metrics)
    np.testing.assert_array_equal(grid["time"].values, times[grid["step"].values])
    assert piecewise([(8.0, 0.01), (60.0, 0.1)])["steps"] == 800 + 520


# -- claims on a tiny staged run, and their negative controls --------------------------------------
def test_tiny_run_records_every_probe_and_the_theory(staged_run):
    names = set(staged_run.metrics["name"])
    for m in ("w_pv.0", "w_kq.0", "kq_x"):
        for kind in ("erank", "stable_rank", "overlap_prev", "overlap_final"):
            assert f"probe/{kind}/{m}" in names
        assert f"probe/sv/{m}/0" in names
    assert {f"probe/mode_progress/{i}" for i in range(3)} <= names and "probe/conserved" in names
    assert staged_run.final("probe/overlap_final/kq_x").tolist() == pytest.approx([1.0])
    th = staged_run.theory
    constants = {"saddle_loss", "optimal_loss", "escape_rate", "erank_gamma_inv", "erank_lambda_squared",
                 "crossing_time/0", "crossing_time/1", "crossing_time/2"}
    curves = {"loss", "conserved", "mode_progress/0", "mode_progress/1", "mode_progress/2"}
    assert set(th["name"]) == constants | curves
    assert (th["name"].value_counts()[sorted(constants)] == 1).all()  # one row each
    np.testing.assert_array_equal(np.sort(th[th["name"] == "loss"]["time"].values),
                                  record_grid(staged_run.metrics)["time"].values)
    # the stored constants are the theory's: the ODE's fixed-point loss is R*/2 of the task
    system = ReducedLSA(FAST, staged_run.config.task.n_points)
    assert th.loc[th["name"] == "optimal_loss", "value"].item() == pytest.approx(system.optimal_loss, rel=1e-12)
    # the crossings the ODE curves show lie where the stored crossing times say
    t, p = (th[th["name"] == "mode_progress/1"].sort_values("time")[c].values for c in ("time", "value"))
    t1 = th.loc[th["name"] == "crossing_time/1", "value"].item()
    assert np.interp(t1, t, p) == pytest.approx(0.5, abs=0.02)


def test_tiny_run_passes_its_claims(staged_run):
    by_id = {c["id"]: c for c in staged_run.claims}
    for ident in ("follows_ode_loss", "follows_ode_mode_0", "follows_ode_mode_1", "follows_ode_mode_2",
                  "crossing_times_match_ode", "modes_learned_in_order", "erank_rises_with_modes",
                  "erank_final_matches_gamma_inv"):
        assert by_id[ident]["passed"] is True, by_id[ident]
    assert by_id["crossing_times_match_ode"]["details"]["modes"] == [0, 1, 2]


def test_wrong_eigenvalues_fail_the_ode_claims(staged_run):
    claims = ODE_CLAIMS.evaluate(with_wrong_eigenvalues(staged_run, STAGED))  # the run trained on (1, 0.5, 0.25)
    for ident in ("follows_ode_loss", "follows_ode_mode_1", "crossing_times_match_ode"):
        assert claim(claims, ident).passed is False, ident


def test_untrained_run_fails_crossing_order_alignment_and_rank(frozen_run):
    claims = ODE_CLAIMS.evaluate(frozen_run)
    assert claim(claims, "crossing_times_match_ode").passed is False
    assert claim(claims, "modes_learned_in_order").passed is False
    assert claim(claims, "follows_ode_mode_0").passed is False
    assert spec_claim("kq_aligns_with_top_eigenvector", frozen_run).passed is False
    assert spec_claim("erank_rises_with_modes", frozen_run).passed is False
    assert spec_claim("erank_final_matches_gamma_inv", frozen_run).passed is False


def test_modes_learned_together_fail_the_order_and_rank_claims(tmp_path):
    """Isotropic Λ: every mode switches on at once, so there is no order and no rank staircase."""
    run = icldyn.run(EXP, overrides=tiny(**{"task.covariance": "isotropic", "task.eigenvalues": None,
                                            **_train_overrides([(12.0, 0.01)])}), out=tmp_path)
    claims = ODE_CLAIMS.evaluate(run)
    assert claim(claims, "crossing_times_match_ode").passed is True  # it did learn, all at once
    assert claim(claims, "modes_learned_in_order").passed is False
    assert spec_claim("erank_rises_with_modes", run).passed is False


# -- the plateau law over a σ₀ sweep -----------------------------------------------------------------
def test_plateau_slope_over_a_sweep_and_against_the_wrong_lambda(tmp_path):
    over = {"role": "plateau", "task.eigenvalues": [1.0, 0.8, 0.6], "train.n_records": 60, **SMALL,
            **_train_overrides([(16.0, 0.04)])}
    run = icldyn.run(EXP, overrides=over, sweep={"model.init_scale": [1e-2, 1e-3, 1e-4, 1e-5]}, out=tmp_path)
    (c,) = [c for c in run.claims if c["id"] == "plateau_slope"]
    assert c["passed"] is True, c
    assert c["details"]["ci_excludes_lambda1_only"]
    runs = list(run.variants.values())
    wrong = sweep_of([with_wrong_eigenvalues(r, STAGED) for r in runs])
    assert spec_claim("plateau_slope", wrong).passed is False      # ρ of another Λ
    assert spec_claim("plateau_slope", sweep_of(runs[:3])).passed is None  # < 4 points: not measured


# -- conservation over learning rates, and Adam as the control ---------------------------------------
def conservation_runs(tmp_path, **extra):
    runs = []
    for lr in (0.01, 0.02, 0.05, 0.1):
        over = tiny(**{"role": "conservation", "model.init_scale": 0.1, "train.n_records": 20,
                       "conservation_time": 2.0, **_train_overrides([(2.0, lr)]), **extra})
        runs.append(icldyn.run(EXP, overrides=over, out=tmp_path))
    return runs


def test_conserved_drift_is_linear_in_lr_for_gd_and_not_for_adam(tmp_path):
    c = spec_claim("conserved_drift_linear_in_lr", sweep_of(conservation_runs(tmp_path / "gd")))
    assert c.passed is True and c.measured == pytest.approx(1.0, abs=0.05)
    adam = spec_claim("conserved_drift_linear_in_lr",
                      sweep_of(conservation_runs(tmp_path / "adam", **{"train.optimizer": "adam"})))
    assert adam.passed is False  # Adam is not a gradient flow of the loss: C drifts at O(1)


def test_conserved_drift_claim_for_sgd_fails_for_adam(tmp_path):
    sampled = {"train.gradient": "sampled", "train.batch_size": 32}
    runs = conservation_runs(tmp_path, **{**sampled, "train.optimizer": "adam"})
    assert spec_claim("conserved_drift_linear_in_lr", sweep_of(runs)) is None  # no population-gradient runs
    c = spec_claim("conserved_drift_linear_in_lr[sgd]", sweep_of(runs))
    assert c.id == "conserved_drift_linear_in_lr[sgd]" and c.passed is False


# -- spectral: alignment of W^KQ's x-block -----------------------------------------------------------
def test_noncommuting_init_aligns_with_the_top_eigenvector_and_not_another(tmp_path):
    over = tiny(**{"role": "noncommuting", "model.init": "zfb_random", "model.init_scale": 1e-3,
                   "task.eigenvalues": STAGED, **_train_overrides([(12.0, 0.05)])})
    run = icldyn.run(EXP, overrides=over, out=tmp_path)
    assert spec_claim("kq_aligns_with_top_eigenvector", run).passed is True
    wrong = spec_claim("kq_aligns_with_top_eigenvector", run, measure=lambda r: alignment(r, eigenvector=2))
    assert wrong.passed is False  # the wrong eigenvector of Λ


# -- claims as data: what this experiment's specs need of ClaimSpec ---------------------------------
def test_claim_spec_takes_a_run_dependent_tolerance_and_suffixes_ready_claims():
    from icldyn.claims import Below, Claim, ClaimSpec, Measurement

    spec = ClaimSpec("x", "s", "src", Below(1.0), lambda r: Measurement([0.5], expect=Below(0.1), tolerance="10%"),
                     tolerance="100%")
    c = spec.evaluate(None, "[a]")
    assert (c.id, c.passed, c.expected, c.tolerance) == ("x[a]", False, "< 0.1", "10%")
    ready = ClaimSpec("x", "s", "src", Below(1.0), lambda r: Claim("x", "s", "src", None, "< 1", False))
    assert ready.evaluate(None, "[b]").id == "x[b]" and ready.evaluate(None).id == "x"


# -- the experiment as a whole ---------------------------------------------------------------------
def test_quick_variants_cover_every_claim():
    exp = EXPERIMENTS[EXP]
    cfg = exp.config("quick")
    variants = exp.variants(cfg)
    roles = {}
    for ov in variants.values():
        sub = exp.config("quick", ov)  # every variant is a valid config
        roles.setdefault(sub.role, []).append(sub)
    assert set(roles) == {"staged", "plateau", "conservation", "sgd", "generic", "noncommuting"}
    sigma = [c.model.init_scale for c in roles["plateau"]]
    assert len(sigma) >= 4 and np.log10(max(sigma) / min(sigma)) >= 3
    for mode in ("population", "sampled"):
        lrs = [c.train.lr for c in roles["conservation"] if c.train.gradient == mode]
        assert len(lrs) >= 4 and np.log10(max(lrs) / min(lrs)) >= 1
        horizons = {round(float(learning_rates(c.train).sum()), 6) for c in roles["conservation"]}
        assert horizons == {cfg.conservation_time}
    assert roles["generic"][0].model.init == "gaussian" and roles["generic"][0].train.gradient == "sampled"
    assert roles["staged"][0].train.gradient == "population" and roles["staged"][0].model.init_scale == 1e-3
    assert float(learning_rates(roles["staged"][0].train).sum()) > 2 * 317.6  # the third ½-crossing is in the run
    assert exp.record_steps(cfg) != Experiment.record_steps(exp, cfg)
    paper = exp.config("paper")
    for ov in exp.variants(paper).values():
        exp.config("paper", ov)


@pytest.mark.slow
def test_quick_preset_end_to_end(tmp_path):
    run = icldyn.run(EXP, out=tmp_path)
    failed = [(c["id"], c["measured"], c["expected"], c.get("note")) for c in run.claims if c["passed"] is not True]
    assert not failed
    for fig in ("dynamics", "plateau_law", "conservation", "spectral"):
        assert (run.path / "figures" / f"{fig}.png").exists()
