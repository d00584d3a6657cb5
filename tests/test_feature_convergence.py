"""feature-convergence: probes, the reduced dynamics on the run's clock, phase markers, claims and
their negative controls.

Claims are checked on in-memory runs whose "trained" curves are the reduced dynamics (GD on the
scores at the preset's lr schedule) and whose theory.parquet is an independent computation — the
reduced gradient flow, integrated by an ODE solver, on the same clock — (positive controls: every
claim's logic passes on the curves the theory predicts) and on curves that must fail (negative controls: an exponential relaxation, swapped features, a monotone cross
score, a late peak, the wrong expectation, the wrong K-scaling). Real training is checked against
the reduced dynamics at small lr, and the model's autograd gradient against the reduced gradient.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import icldyn
from icldyn.config import apply_overrides
from icldyn.experiments import EXPERIMENTS
from icldyn.errors import UsageError
from icldyn.experiments.base import sweep_variants
from icldyn.analysis import feature_convergence as fa
from icldyn.analysis import phases
from icldyn.analysis.fits import fit_power_law
from icldyn.experiments import feature_convergence as fc
from icldyn.experiments.feature_convergence_claims import CLAIMS
from icldyn.models.softmax_attention import SoftmaxAttention, SoftmaxAttentionConfig
from icldyn.probes.features import feature_probe, per_feature_statistics
from icldyn.report.feature_convergence_scaling import scaling_figure
from icldyn.store import Run
from icldyn.tasks.structured_features import (StructuredFeaturesConfig, StructuredFeaturesTask,
                                              mean_by_query_feature)
from icldyn.theory import structured_features as theory
from icldyn.probes.base import RecordContext
from icldyn.theory.structured_features import balanced_crossing_time
from icldyn.train.schedule import learning_rates, time_at

F64 = torch.float64
EXP = EXPERIMENTS["feature-convergence"]


def by_id(claims):
    return {(c["id"] if isinstance(c, dict) else c.id): (c if isinstance(c, dict) else c.to_dict()) for c in claims}


def config(**overrides):
    return EXP.config("quick", {"compare": [], "scaling_K": [], **overrides})


def model_with_scores(s: torch.Tensor, V: torch.Tensor, **kw) -> SoftmaxAttention:
    """The "q" model with v_nᵀ Q v_k = s_{k,n} (s (E, K, K) or (K, K))."""
    s = s.reshape(-1, *s.shape[-2:])
    m = SoftmaxAttention(SoftmaxAttentionConfig(**kw), StructuredFeaturesConfig(d=V.shape[1], K=2), list(range(s.shape[0])), F64)
    with torch.no_grad():
        m.q.copy_(torch.einsum("ekn,nd,kf->edf", s, V, V))
    return m


# -- in-memory runs ---------------------------------------------------------------------------------
def make_run(tmp_path: Path, cfg, metrics: pd.DataFrame, theory_frame: pd.DataFrame) -> Run:
    """A Run whose metrics are `metrics` (time, name, value; one seed) and whose theory.parquet is
    `theory_frame` (given explicitly: a claim must never compare a curve with itself)."""
    m = metrics.copy()
    m["seed"] = cfg.seed
    m["step"] = m.groupby("name").cumcount()
    return Run(path=tmp_path, config=cfg, metrics=m[["step", "time", "seed", "name", "value"]],
               curves=pd.DataFrame(), theory=theory_frame, claims=[], env={})


def claims_of(run, *ids) -> dict:
    """The named claims (spec ids, without the view suffix) evaluated on one run, by id."""
    specs = [s for s in CLAIMS.specs if s.id in ids]
    assert {s.id for s in specs} == set(ids), ids
    return by_id([c for s in specs if (c := s.evaluate(run)) is not None])


CONVERGENCE = ("attention_concentrates", "error_vanishes")
BALANCED = ("two_phases", "phase2_power_law")
IMBALANCED = ("dominant_first", "cross_scores_non_monotone", "minor_phase_order")
MATCH = ("matches_reduced_dynamics", "error_matches_reduced_dynamics", "full_training_vs_reduced")
SCALING = ("k_scaling_attention", "k_scaling_error", "k_scaling_training_check")


def flow_frame(cfg, slowdown: float = 1.0) -> pd.DataFrame:
    """theory.parquet rows of the reduced gradient FLOW (scipy ODE solver, not the GD the experiment
    writes) at the run's record times: an independent reference for curves from GD at the schedule.
    slowdown > 1: the flow as if time ran `slowdown`× slower (a reference that must be rejected)."""
    p = torch.tensor(cfg.task.probabilities(), dtype=F64)
    N, K = cfg.task.n_points, cfg.task.K
    times = time_at(cfg.train, fc.run_records(cfg))
    flow = theory.gradient_flow(p, N, times / slowdown, expectation=cfg.theory_expectation, rtol=1e-8, atol=1e-10)
    rows = []
    for t, s in zip(times, flow.scores):
        st = theory.score_stats(s, p, N, cfg.theory_expectation)
        for k in range(K):
            rows.append((t, f"probe/feature_error/{k}", float(st.loss[k])))
            rows.append((t, f"probe/same_feature_attention/{k}", float(st.attention[k, k])))
            for n in range(K):
                rows.append((t, f"probe/attention_mass/{k}/{n}", float(st.attention[k, n])))
                rows.append((t, f"probe/score/{k}/{n}", float(s[k, n])))
    return pd.DataFrame(rows, columns=["time", "name", "value"])


@pytest.fixture(scope="module")
def large_n_frames():
    """(config, reduced GD frame, reduced flow frame) at the quick preset's schedule (large-N
    expectation: cheap): the GD frame stands in for training, the flow for the theory."""
    out = {}
    for balance in ("balanced", "imbalanced"):
        cfg = config(**{"task.balance": balance, "theory_expectation": "large_n"})
        out[balance] = (cfg, fc.reduced_dynamics_frame(cfg), flow_frame(cfg))
    return out


def replace_curves(frame: pd.DataFrame, fn) -> pd.DataFrame:
    """frame with value ← fn(name, time, value) for every metric (fn returns None to keep it)."""
    parts = []
    for name, g in frame.groupby("name", sort=False):
        g = g.sort_values("time").copy()
        new = fn(name, g["time"].values, g["value"].values)
        if new is not None:
            g["value"] = new
        parts.append(g)
    return pd.concat(parts, ignore_index=True)


# -- registry and presets ---------------------------------------------------------------------------
def test_registered_with_presets_and_variants():
    assert "feature-convergence" in EXPERIMENTS
    quick, paper = EXP.config("quick"), EXP.config("paper")
    assert quick.train.optimizer == "gd" and quick.task.n_points == 100 and quick.task.K == 5
    # both presets train the K-scaling: ≥ 4 values of K, one balanced run each
    assert quick.scaling_source == paper.scaling_source == "training" and len(quick.scaling_K) >= 4
    assert set(EXP.variants(quick)) == {"balanced", "imbalanced", "full"} | {f"K={K}" for K in quick.scaling_K}
    full = apply_overrides(quick, EXP.variants(quick)["full"])
    assert full.model.train == "full" and full.task.balance == "imbalanced" and full.compare == []
    assert set(EXP.variants(paper)) == {"balanced", "imbalanced", "full", "K=3", "K=5", "K=9", "K=16", "K=32"}
    assert EXP.variants(config()) is None                                 # compare=[]: one run as given
    assert EXP.variants(EXP.config("quick", {"compare": []})) is None     # ... without the K-scaling runs too
    with pytest.raises(UsageError, match="scaling_K"):
        config(scaling_K=[2, 4])
    with pytest.raises(UsageError, match="train.stages"):
        config(**{"train.stages": [{"params": ["q"], "steps": 600}]})


@pytest.mark.parametrize("preset", ["quick", "paper"])
def test_scaling_variants_cover_the_closed_form_horizon(preset):
    base = EXP.config(preset)
    for K in base.scaling_K:
        c = apply_overrides(base, EXP.variants(base)[f"K={K}"])
        assert c.task.K == K and c.task.d >= K and c.task.n_points == 20 * K and c.task.balance == "balanced"
        assert c.model.train == "q" and c.train.batch_size == base.scaling_batch_size
        horizon = sum(learning_rates(c.train))
        assert horizon >= base.scaling_horizon * balanced_crossing_time(K, "error", fa.EPS_ERROR) * 0.999
        assert c.train.lr == pytest.approx(base.train.lr * K / 5)           # feature clock lr/K fixed


def test_a_swept_K_moves_d_n_lr_and_steps_with_it():
    """`--sweep task.K=[...]` (api: sweep_variants, then apply_overrides per variant) gives the K-scaling's
    runs; settings given along with K are kept; follow_K=false changes K alone."""
    quick = EXP.config("quick")
    for name, ov in sweep_variants({"task.K": [5, 10, 20, 40]}).items():
        c = apply_overrides(quick, ov)
        K = c.task.K
        assert c.task.d >= K and c.task.n_points == 20 * K and c.train.lr == pytest.approx(10.0 * K / 5)
        assert sum(learning_rates(c.train)) >= 1.3 * balanced_crossing_time(K, "error", fa.EPS_ERROR) * 0.999
        # the same settings spelt out give the same run (follow_K's bookkeeping is not hashed)
        spelt = apply_overrides(quick, {"follow_K": False, "task.K": K, "task.d": c.task.d,
                                        "task.n_points": c.task.n_points, "train.lr": c.train.lr,
                                        "train.steps": c.train.steps})
        assert spelt.config_hash() == c.config_hash()
    # a K-scaling variant is what follow_K gives, at the scaling runs' batch and records
    assert {k: v for k, v in fc.scaling_overrides(quick, 13).items() if k in fc.FOLLOW_KEYS} == {
        k: v for k, v in fc.k_settings(apply_overrides(quick, {"task.K": 13})).items()}
    # settings given with K stay; the steps follow the given lr
    own = apply_overrides(quick, {"task.K": 10, "task.n_points": 300, "train.lr": 5.0})
    assert (own.task.n_points, own.train.lr, own.task.d) == (300, 5.0, 10)
    assert sum(learning_rates(own.train)) >= 1.3 * balanced_crossing_time(10, "error", fa.EPS_ERROR) * 0.999
    # re-validating a followed config changes nothing (the stored config.yaml loads as it was)
    again = apply_overrides(apply_overrides(quick, {"task.K": 10}), {"seed": 1})
    assert fc.k_settings(again) == fc.k_settings(apply_overrides(quick, {"task.K": 10}))
    # negative control: without follow_K a larger K keeps d = 5, which cannot hold 10 orthonormal features
    with pytest.raises(UsageError, match="task.d"):
        apply_overrides(quick, {"follow_K": False, "task.K": 10})


def test_sweep_K_shorthand_is_the_trained_scaling():
    short = EXP.config("quick", ["sweep.K=[5,10,20,40]"])
    long = EXP.config("quick", {"scaling_K": [5, 10, 20, 40], "scaling_source": "training"})
    assert short.scaling_K == [5, 10, 20, 40] and short.scaling_source == "training" and short.sweep is None
    assert short.config_hash() == long.config_hash()
    assert {f"K={K}" for K in (5, 10, 20, 40)} <= set(EXP.variants(short))


def test_explicit_balance_or_training_mode_is_not_overridden_silently():
    # with the default compare, the config's own task.balance / model.train win: one run as given
    imb = EXP.config("quick", ["task.balance=imbalanced"])
    assert imb.compare == [] and EXP.variants(imb) is None and imb.task.balance == "imbalanced"
    full = EXP.config("quick", ["model.train=full", "task.balance=imbalanced"])
    assert full.compare == [] and full.model.train == "full"
    assert EXP.config("quick").compare == ["balanced", "imbalanced", "full"]     # defaults: the variants
    # with an explicit compare the variants would override it: a config error naming compare=[]
    with pytest.raises(UsageError, match=r"compare=\[\]") as err:
        EXP.config("quick", ["task.balance=imbalanced", "compare=[balanced,full]"])
    assert "task.balance=imbalanced" in str(err.value) and "\n" not in str(err.value)


# -- probes ----------------------------------------------------------------------------------------
def test_probes_match_the_model_and_the_scores():
    task = StructuredFeaturesTask(StructuredFeaturesConfig(d=5, K=3, n_points=12, balance="imbalanced"), F64)
    s = torch.randn(2, 3, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    m = model_with_scores(s, task.features)
    b = task.eval_batch(3000, eval_seed=4)
    stats = per_feature_statistics(m, b, 3, chunk=700)                      # chunking is exact
    whole = per_feature_statistics(m, b, 3, chunk=10_000)
    assert torch.allclose(stats["error"], whole["error"]) and torch.allclose(stats["mass"], whole["mass"])
    with torch.no_grad():
        err = 0.5 * (m(b)[..., 0] - b.y[..., -1]) ** 2
    assert torch.allclose(stats["error"], mean_by_query_feature(err, b.extras["feature"], 3))
    same = mean_by_query_feature(m.same_feature_attention(b), b.extras["feature"], 3)
    assert torch.allclose(torch.diagonal(stats["mass"], dim1=1, dim2=2), same)
    assert torch.allclose(stats["mass"].sum(-1), torch.ones(2, 3, dtype=F64))
    ctx = RecordContext(0, 0.0, m, task, b, False, [0, 1])
    out = feature_probe(None, task, all_masses=True)(ctx)
    assert torch.allclose(out["probe/score/2/1"], s[:, 2, 1]) and out["probe/feature_error/0"].shape == (2,)
    assert "probe/value_scale" not in out and "probe/attention_mass/1/2" in out
    few = feature_probe(None, task, all_masses=False)(ctx)
    assert {n for n in few if n.startswith("probe/attention_mass/2/")} == {"probe/attention_mass/2/0",
                                                                          "probe/attention_mass/2/2"}
    full = SoftmaxAttention(SoftmaxAttentionConfig(train="full"), StructuredFeaturesConfig(d=5, K=2), [0], F64)
    assert feature_probe(None, task, all_masses=True)(RecordContext(0, 0.0, full, task, b, False, [0]))["probe/value_scale"].item() == 1.0


# -- the reduced dynamics on the run's clock ---------------------------------------------------------
def test_reduced_gd_at_a_schedule_applies_the_lrs_in_order():
    """GD at per-update lrs (a schedule) is the composition of single constant-lr steps, in order, on
    the clock time = Σ lr; the order matters (GD is not linear in the lr)."""
    p, lrs = [0.6, 0.2, 0.2], [0.5, 2.0, 4.0, 1.0]
    sched = theory.gradient_descent(p, 20, lrs, len(lrs))
    s = torch.zeros(3, 3, dtype=F64)
    for i, lr in enumerate(lrs):
        s = theory.gradient_descent(p, 20, lr, 1, s0=s).scores[-1]
        assert torch.allclose(sched.scores[i + 1], s)
    assert np.allclose(sched.time.numpy(), np.concatenate([[0], np.cumsum(lrs)]))
    backwards = theory.gradient_descent(p, 20, lrs[::-1], len(lrs)).scores[-1]
    assert not torch.allclose(backwards, sched.scores[-1], atol=1e-6)
    with pytest.raises(ValueError, match="per-update"):
        theory.gradient_descent(p, 20, lrs, 5)


def test_theory_frame_uses_the_trainers_records_and_clock():
    cfg = config(**{"train.steps": 40, "train.warmup_steps": 10, "train.n_records": 8, "theory_expectation": "large_n"})
    frame = fc.reduced_dynamics_frame(cfg)
    t = np.sort(frame.loc[frame["name"] == "loss/test", "time"].values)
    lrs = learning_rates(cfg.train)
    records = EXP.record_steps(cfg)                                   # what the trainer records at
    assert np.allclose(t, [sum(lrs[:s]) for s in records])
    # log-spaced on the time clock, although the warm-up makes early steps short
    ratios = np.diff(np.log(t[t > 0]))
    assert records[-1] == 40 and ratios.max() < 3 * np.median(ratios)
    assert lrs[0] == pytest.approx(cfg.train.lr / 10) and lrs[-1] == cfg.train.lr   # linear warm-up
    assert {f"probe/score/{k}/{n}" for k in range(5) for n in range(5)} <= set(frame["name"])


def test_reduced_dynamics_match_direct_training_at_small_lr(tmp_path):
    """The framework's trainer (fresh prompts, plain GD, lr 2) against theory.parquet."""
    overrides = {"compare": [], "scaling_K": [], "task.balance": "imbalanced", "task.K": 3, "task.d": 4,
                 "task.n_points": 20, "train.lr": 2.0, "train.warmup_steps": 0, "train.steps": 40,
                 "train.batch_size": 2048, "train.n_records": 8, "train.eval_prompts": 8192,
                 "train.eval_prompts_during": 4096, "train.checkpoint_every": 100}
    run = icldyn.run("feature-convergence", overrides=overrides, out=tmp_path)
    claims = by_id(run.claims)
    for cid in ("matches_reduced_dynamics[imbalanced]", "error_matches_reduced_dynamics[imbalanced]"):
        assert claims[cid]["passed"] is True, claims[cid]
    assert run.final("probe/same_feature_attention/1").iloc[0] > 0.5                 # it learned (from 0.2)
    # negative control: the large-N dynamics (no count fluctuations, no error floor) are rejected at N = 20
    large = fc.reduced_dynamics_frame(apply_overrides(run.config, {"theory_expectation": "large_n"}))
    wrong = claims_of(Run(run.path, run.config, run.metrics, run.curves, large, [], {}), *MATCH)
    assert wrong["matches_reduced_dynamics"]["passed"] is False
    assert wrong["error_matches_reduced_dynamics"]["passed"] is False
    for name in ("feature_error.png", "attention.png"):
        assert (run.path / "figures" / name).stat().st_size > 10_000


def test_model_gradient_projected_on_the_features_is_the_reduced_gradient():
    """Autograd of the model's ½·MSE on many prompts, projected on v_n v_kᵀ, against ∂L/∂s."""
    K, N = 3, 8
    task = StructuredFeaturesTask(StructuredFeaturesConfig(d=4, K=K, n_points=N, balance="imbalanced"), F64)
    s = 0.8 * torch.randn(K, K, dtype=F64, generator=torch.Generator().manual_seed(5))
    m = model_with_scores(s, task.features)
    V = task.features
    grads = []
    for chunk in range(20):
        b = task.sample([0], chunk, 5000)
        (g,) = torch.autograd.grad(m.loss(m(b), b).sum(), m.q)
        grads.append(torch.einsum("nd,df,kf->kn", V, g[0], V))               # v_nᵀ (∂L/∂Q) v_k
    grads = torch.stack(grads)
    mean, se = grads.mean(0), grads.std(0) / math.sqrt(len(grads))
    reduced = theory.score_gradient(s, task.p, N)
    z = (mean - reduced) / se
    assert z.abs().max() < 4.5, z
    assert reduced.abs().max() > 10 * se.max()                                  # a non-trivial gradient


# -- the closed form of the balanced flow -------------------------------------------------------------
def test_balanced_closed_form_matches_the_large_n_flow():
    for K in (4, 7):
        t_half = balanced_crossing_time(K, "attention")
        t_err = balanced_crossing_time(K, "error", 1e-3)
        times = np.concatenate([[0.0], np.geomspace(t_half / 3, t_err * 1.5, 120)])
        flow = theory.gradient_flow([1 / K] * K, 10, times, expectation="large_n", rtol=1e-9, atol=1e-12)
        a, err = flow.same_feature_attention[:, 0].numpy(), flow.feature_loss[:, 0].numpy()
        got = fa.crossing_times(times, a, err)
        assert got[0] == pytest.approx(t_half, rel=2e-3) and got[1] == pytest.approx(t_err, rel=2e-3)
    # and the finite-N dynamics (N = 20K) sit close to it but not on it
    frame = fc.scaling_frame(config(scaling_K=[3, 4], **{"task.K": 3, "task.n_points": 60}))
    for K in (3, 4):
        rows = frame[frame["name"] == f"scaling/K={K},N={20 * K}/same_feature_attention"]
        t_half = phases.first_crossing(rows["time"].values, rows["value"].values, 0.5, "up")
        assert 0.001 < abs(t_half / balanced_crossing_time(K, "attention") - 1) < 0.05


def test_power_law_fit_and_its_interval():
    K = np.array([3, 5, 9, 16, 32], float)
    exact = fit_power_law(K, 7 * K ** 1.5)
    assert exact["exponent"] == pytest.approx(1.5) and exact["ci"][1] - exact["ci"][0] < 1e-9
    rng = np.random.default_rng(0)
    noisy = fit_power_law(K, 7 * K ** 1.5 * np.exp(0.1 * rng.standard_normal(5)))
    assert noisy["ci"][0] < 1.5 < noisy["ci"][1] and noisy["ci"][1] - noisy["ci"][0] > 0.05


# -- claims: positive controls and negative controls ---------------------------------------------------
def test_claims_pass_on_the_reduced_dynamics_balanced(tmp_path, large_n_frames):
    cfg, frame, flow = large_n_frames["balanced"]
    claims = claims_of(make_run(tmp_path, cfg, frame, flow), *CONVERGENCE, *BALANCED, *MATCH)
    assert set(claims) == {*CONVERGENCE, *BALANCED, "matches_reduced_dynamics", "error_matches_reduced_dynamics"}
    assert all(c["passed"] for c in claims.values()), claims
    markers = claims["two_phases"]["details"]["phase_markers"]["trained (seed mean)"]
    assert markers["0"]["attention_rises"], "the phase detector sees the rise of a_k"


def test_balanced_claims_fail_on_a_single_exponential_relaxation(tmp_path, large_n_frames):
    """Negative control: a_k relaxing as one exponential has no separate slow phase."""
    cfg, frame, flow = large_n_frames["balanced"]
    K, tau = cfg.task.K, 300.0

    def relax(name, t, v):
        a = 1 - (1 - 1 / K) * np.exp(-t / tau)
        if name.startswith("probe/same_feature_attention/"):
            return a
        if name.startswith("probe/feature_error/"):
            return 0.5 * (1 - a) ** 2 * K / (K - 1)
        return None

    claims = claims_of(make_run(tmp_path, cfg, replace_curves(frame, relax), flow), *BALANCED)
    assert claims["two_phases"]["passed"] is False and claims["phase2_power_law"]["passed"] is False


def test_convergence_claims_fail_when_training_stops_early(tmp_path):
    cfg = config(**{"task.balance": "imbalanced", "theory_expectation": "large_n", "train.steps": 60})
    claims = claims_of(make_run(tmp_path, cfg, fc.reduced_dynamics_frame(cfg), flow_frame(cfg)), *CONVERGENCE)
    assert claims["attention_concentrates"]["passed"] is False and claims["error_vanishes"]["passed"] is False


def test_imbalanced_claims_pass_on_the_reduced_dynamics(tmp_path, large_n_frames):
    """GD at the schedule ("trained") against the gradient flow (theory.parquet), two independent
    computations of the reduced dynamics: every claim passes, the match claims by a margin."""
    cfg, frame, flow = large_n_frames["imbalanced"]
    run = make_run(tmp_path, cfg, frame, flow)
    claims = claims_of(run, *IMBALANCED, *CONVERGENCE, *MATCH)
    assert set(claims) == {*IMBALANCED, *CONVERGENCE, "matches_reduced_dynamics", "error_matches_reduced_dynamics"}
    assert all(c["passed"] for c in claims.values()), claims
    assert 0 < claims["matches_reduced_dynamics"]["measured"] < 0.5 * 0.02     # not a curve against itself
    # negative control: the same trained curves against a reference running 1.5× slower
    slow = claims_of(make_run(tmp_path, cfg, frame, flow_frame(cfg, slowdown=1.5)), *MATCH)
    assert slow["matches_reduced_dynamics"]["passed"] is False
    assert slow["error_matches_reduced_dynamics"]["passed"] is False
    m = fa.markers_of(run)[1]
    assert m["t_cross_peak"] < m["t_overtake"] < m["t_attention_half"] < m["t_error_0.01"]
    assert claims["dominant_first"]["measured"] > 5


def test_imbalanced_claims_fail_on_their_negative_controls(tmp_path, large_n_frames):
    cfg, frame, _ = large_n_frames["imbalanced"]

    # the dominant feature's curves swapped with an under-represented one's: it converges last
    def swap(name, t, v):
        parts = name.split("/")
        if name.startswith(("probe/feature_error/", "probe/same_feature_attention/")) and parts[-1] in "01":
            other = "/".join(parts[:-1] + ["1" if parts[-1] == "0" else "0"])
            g = frame[frame["name"] == other].sort_values("time")
            return g["value"].values
        return None

    swapped = claims_of(make_run(tmp_path, cfg, replace_curves(frame, swap), frame), *IMBALANCED)
    assert swapped["dominant_first"]["passed"] is False

    # a cross-feature score that only ever falls: no rise before the fall
    def monotone(name, t, v):
        parts = name.split("/")
        if name.startswith("probe/score/") and parts[2] != "0" and parts[3] not in ("0", parts[2]):
            return np.minimum(v, 0.0)
        return None

    mono = claims_of(make_run(tmp_path, cfg, replace_curves(frame, monotone), frame), *IMBALANCED)
    assert mono["cross_scores_non_monotone"]["passed"] is False
    assert mono["minor_phase_order"]["passed"] is False                        # the peak sits at t = 0

    # the rise of B̄ comes 30× later, after a_k has overtaken the dominant mass: phases out of order
    def late(name, t, v):
        parts = name.split("/")
        if name.startswith("probe/score/") and parts[2] != "0" and parts[3] not in ("0", parts[2]):
            return np.interp(t / 30, t, v)
        return None

    delayed = claims_of(make_run(tmp_path, cfg, replace_curves(frame, late), frame), *IMBALANCED)
    assert delayed["cross_scores_non_monotone"]["passed"] is True and delayed["minor_phase_order"]["passed"] is False


def test_error_match_fails_when_the_error_level_is_off(tmp_path, large_n_frames):
    """Negative control of the ℓ_k part of claim 4: the attention path is right but every ℓ_k is 1.5×
    the reduced dynamics' (e.g. a value weight off by ~20%): only the error match fails."""
    cfg, frame, flow = large_n_frames["imbalanced"]

    def inflate(name, t, v):
        return 1.5 * v if name.startswith("probe/feature_error/") else None

    claims = claims_of(make_run(tmp_path, cfg, replace_curves(frame, inflate), flow), *MATCH)
    assert claims["matches_reduced_dynamics"]["passed"] is True
    assert claims["error_matches_reduced_dynamics"]["passed"] is False
    # ln 1.5, up to the gap between GD at the schedule and the flow (≈ 0.04)
    assert claims["error_matches_reduced_dynamics"]["measured"] == pytest.approx(math.log(1.5), abs=0.06)


def test_full_training_comparison_has_no_verdict(tmp_path, large_n_frames):
    cfg, frame, flow = large_n_frames["imbalanced"]
    cfg = apply_overrides(cfg, {"model.train": "full"})
    (claim,) = claims_of(make_run(tmp_path, cfg, frame, flow), *MATCH).values()
    assert claim["id"] == "full_training_vs_reduced" and claim["passed"] is None and claim["note"]
    # no reduced dynamics (e.g. model.query_in_softmax=true): no verdict, and it says why
    empty = make_run(tmp_path, cfg, frame, pd.DataFrame({"time": [], "name": [], "value": []}))
    (missing,) = claims_of(empty, *MATCH).values()
    assert missing["passed"] is None and "query_in_softmax" in missing["note"]


def closed(K):
    return balanced_crossing_time(K, "attention"), balanced_crossing_time(K, "error", fa.EPS_ERROR)


def crossing_curves(t, K, th, te, prefix="probe/"):
    """Rows (time, name, value) of K alike features whose a_k crosses ½ at th and ℓ_k crosses ε_ℓ at te."""
    rows = []
    for k in range(K):
        rows += [(x, f"{prefix}same_feature_attention/{k}", x / (x + th)) for x in t]
        rows += [(x, f"{prefix}feature_error/{k}", 1e-3 * te / max(x, 1e-12)) for x in t]
    return pd.DataFrame(rows, columns=["time", "name", "value"])


def scaling_run(tmp_path, times_of, check_stretch=1.0) -> Run:
    """scaling_source="theory": a balanced run whose theory.parquet holds synthetic K-scaling curves
    crossing ½ and ε_ℓ at times_of(K) = (t_half, t_error), and whose trained curves cross at
    check_stretch × the flow's."""
    cfg = config(scaling_K=[3, 5, 9, 16, 32], scaling_source="theory")
    rows, t = [], np.concatenate([[0.0], np.geomspace(1e-2, 1e6, 400)])
    for K in [*cfg.scaling_K]:
        th, te = times_of(K)
        tag = f"scaling/K={K},N={20 * K}"
        rows += [(x, f"{tag}/same_feature_attention", x / (x + th)) for x in t]
        rows += [(x, f"{tag}/feature_error", 1e-3 * te / max(x, 1e-12)) for x in t]
    theory_frame = pd.DataFrame(rows, columns=["time", "name", "value"])
    th5, te5 = times_of(5)
    metrics = crossing_curves(t, 5, check_stretch * th5, check_stretch * te5)
    return make_run(tmp_path, cfg, metrics, theory_frame)


def test_scaling_claims_and_their_negative_controls(tmp_path):
    run = scaling_run(tmp_path, closed)
    claims = claims_of(run, *SCALING)
    assert all(c["passed"] for c in claims.values()) and len(claims) == 3, claims
    assert scaling_figure(run, fa.feature_views(run)).stat().st_size > 10_000
    assert claims["k_scaling_attention"]["measured"] == pytest.approx(
        claims["k_scaling_attention"]["details"]["closed_form_fit"]["exponent"], abs=1e-3)
    # the statement says plainly that these are the reduced dynamics' exponents, checked at one K
    assert "not of training" in claims["k_scaling_error"]["statement"]
    assert "K = 5 only" in claims["k_scaling_training_check"]["statement"]
    # wrong scaling: both times linear in K
    run = scaling_run(tmp_path, lambda K: (10 * K, 300 * K))
    wrong = claims_of(run, *SCALING)
    assert wrong["k_scaling_attention"]["passed"] is False and wrong["k_scaling_error"]["passed"] is False
    # the trained run crosses 1.5× later than the flow: the training check fails
    run = scaling_run(tmp_path, closed, check_stretch=1.5)
    slow = claims_of(run, *SCALING)
    assert slow["k_scaling_training_check"]["passed"] is False
    # fewer than four values of K: no fit, no verdict
    run = scaling_run(tmp_path, closed)
    run.config = apply_overrides(run.config, {"scaling_K": [3, 5, 9]})
    few = claims_of(run, *SCALING)
    assert few["k_scaling_attention"]["passed"] is None and "≥ 4" in few["k_scaling_attention"]["note"]


def trained_scaling_views(tmp_path, times_of, stretch_of=lambda K: 1.0, Ks=(3, 5, 9, 16, 32)):
    """scaling_source="training": one balanced run per K (views `K=<K>`) whose trained curves cross at
    stretch_of(K) × times_of(K) and whose reduced dynamics (theory.parquet) cross at times_of(K)."""
    t = np.concatenate([[0.0], np.geomspace(1e-2, 1e6, 200)])
    views = []
    for K in Ks:
        cfg = config(**{"task.K": K, "task.d": K, "task.n_points": 20 * K})
        th, te = times_of(K)
        s = stretch_of(K)
        views.append((f"K={K}", make_run(tmp_path, cfg, crossing_curves(t, K, s * th, s * te),
                                         crossing_curves(t, K, th, te))))
    return views


def scaling_sweep(tmp_path, views) -> Run:
    """A sweep directory in memory whose variants are `views`."""
    top = make_run(tmp_path, views[0][1].config, pd.DataFrame(columns=["time", "name", "value"]),
                   pd.DataFrame(columns=["time", "name", "value"]))
    top.variants = dict(views)
    return top


def test_trained_scaling_claims_and_their_negative_controls(tmp_path):
    views = trained_scaling_views(tmp_path, closed)
    claims = claims_of(scaling_sweep(tmp_path, views), *SCALING)
    assert all(c["passed"] for c in claims.values()) and len(claims) == 3, claims
    assert claims["k_scaling_error"]["details"]["source"] == "training"
    assert "trained crossing times" in claims["k_scaling_error"]["statement"]
    assert "every K = [3, 5, 9, 16, 32]" in claims["k_scaling_training_check"]["statement"]
    assert scaling_figure(views[0][1], views).stat().st_size > 10_000
    # wrong scaling (linear in K) in training and reduced dynamics alike: the exponents fail
    views = trained_scaling_views(tmp_path, lambda K: (10 * K, 300 * K))
    wrong = claims_of(scaling_sweep(tmp_path, views), *SCALING)
    assert wrong["k_scaling_attention"]["passed"] is False and wrong["k_scaling_error"]["passed"] is False
    # one K trains 1.3× slower than its reduced dynamics: the per-K training check fails
    views = trained_scaling_views(tmp_path, closed, stretch_of=lambda K: 1.3 if K == 9 else 1.0)
    slow = claims_of(scaling_sweep(tmp_path, views), *SCALING)
    assert slow["k_scaling_training_check"]["passed"] is False
    assert slow["k_scaling_training_check"]["measured"] == pytest.approx(0.3, rel=0.02)
    # a K whose training never reaches ε_ℓ: no exponent, no verdict
    views = trained_scaling_views(tmp_path, lambda K: (closed(K)[0], 1e9 if K == 32 else closed(K)[1]))
    stuck = claims_of(scaling_sweep(tmp_path, views), *SCALING)
    assert stuck["k_scaling_error"]["passed"] is None and stuck["k_scaling_attention"]["passed"] is True


# -- end to end ---------------------------------------------------------------------------------------
def test_tiny_end_to_end_sweep_over_K_is_read_as_a_scaling(tmp_path):
    """`--sweep task.K=[...]` (the generic sweep mechanism) trains the K-scaling's runs (d ≥ K, N = 20K,
    lr ∝ K, steps to the horizon follow K) and feeds the K-scaling claims from training."""
    overrides = {"train.batch_size": 128, "train.n_records": 12, "train.eval_prompts": 2048,
                 "train.eval_prompts_during": 2048, "train.checkpoint_every": 1000}
    run = icldyn.run("feature-convergence", overrides=overrides, out=tmp_path, sweep={"task.K": [3, 4, 6, 8]})
    assert len(run.variants) == 4
    for sub in run.variants.values():
        c = sub.config
        assert c.task.n_points == 20 * c.task.K and c.task.d >= c.task.K and c.train.lr == 2.0 * c.task.K
    pts = fa.scaling_points(run, fa.feature_views(run))
    assert pts["source"] == "training" and pts["K"] == [3, 4, 6, 8]
    claims = by_id(run.claims)
    assert "two_phases[task.K=3]" not in claims and "error_vanishes[task.K=3]" not in claims
    # every run crossed both levels, close to its reduced dynamics, and the exponents are the closed form's
    for cid in ("k_scaling_attention", "k_scaling_error", "k_scaling_training_check"):
        assert claims[cid]["passed"] is True, claims[cid]
    assert (run.path / "figures" / "k_scaling.png").exists()
    assert not (run.path / "figures" / "attention.png").exists()     # no balanced/imbalanced comparison here


@pytest.mark.slow
def test_quick_preset_passes_every_claim(tmp_path):
    run = icldyn.run("feature-convergence", out=tmp_path)
    claims = by_id(run.claims)
    failed = {k: c for k, c in claims.items() if c["passed"] is False}
    assert not failed, failed
    assert all(c["passed"] is True for k, c in claims.items() if not k.startswith("full_training_vs_reduced"))
    for name in ("feature_error.png", "attention.png", "k_scaling.png"):
        assert (run.path / "figures" / name).exists()
