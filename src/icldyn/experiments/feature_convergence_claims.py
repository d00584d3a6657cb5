"""Claims of feature-convergence (spec structured-features.md, claims 1–5), from the stored run only.

Per variant (balanced, imbalanced, full; the K-scaling's `K=<K>` runs are points of claim 5, not
variants with claims of their own): convergence (claim 1, Q-trained runs), the two balanced phases
(claim 2), the stage-wise imbalanced convergence (claim 3), training vs the reduced dynamics
(claim 4). Over the whole sweep: the K-scaling (claim 5). Thresholds are fixed here (and, where the
figures draw them too, in `analysis/feature_convergence.py`), before any run.
"""

from __future__ import annotations

import math

import numpy as np

from icldyn.analysis import feature_convergence as fa
from icldyn.analysis.feature_convergence import EPS_ATTENTION, EPS_ERROR, STAGE_ERROR, clean, markers_of
from icldyn.analysis.fits import fit_power_law
from icldyn.analysis.runs import seed_matrix
from icldyn.claims import Above, Below, Claim, ClaimList, Judged, Measurement
from icldyn.theory.structured_features import balanced_crossing_time, error_floor

SOURCE = "Huang, Cheng & Liang 2023 (arXiv 2310.05249)"
SOURCE_BAL = f"{SOURCE}, balanced features: finite-time convergence in two phases"
SOURCE_IMB = f"{SOURCE}, imbalanced features: stage-wise convergence, one and four phases"
SOURCE_RED = "spec structured-features.md: reduced score dynamics (our derivation), claim 4"
SOURCE_SCALE = "spec structured-features.md claim 5; large-N closed form of the balanced flow (our derivation)"

PHASE_SEPARATION = 10.0  # balanced: convergence takes ≥ 10× the attention-growth phase
PHASE2_SLOPE = (-1.25, -0.75)  # balanced, late training: ℓ_k ∝ t^β with β ≈ −1 (closed form)
MATCH_ATTENTION = 0.02   # max |a_k(t) − a_k^reduced(t)| for trained Q
# max |ln ℓ_k(t)/ℓ_k^reduced(t)| for trained Q: ℓ_k within a factor e^0.25 ≈ 1.28. The fixed held-out
# set alone moves a per-feature ℓ_k by ~sqrt(2/n_k) (5% at n_k ≈ 800 queries of a minor feature).
MATCH_LOG_ERROR = 0.25
MATCH_CROSSING = 0.10    # relative gap of the crossing times, trained vs reduced dynamics (training check)
EXPONENT_TOL = 0.10      # fitted K-exponents vs the closed form's over the same K


def claim_views(run) -> list[tuple[str, object]]:
    """("[name]", run) for every variant that carries per-variant claims (not the K-scaling's runs)."""
    return [(f"[{label}]", r) for label, r in fa.feature_views(run) if not fa.is_scaling_run(label, run)]


CLAIMS = ClaimList("feature-convergence", views=claim_views)


def evaluate(run) -> list[Claim]:
    """Every claim, grouped by variant (in the views' order), then the K-scaling's."""
    claims = CLAIMS.evaluate(run)
    order = {suffix: i for i, (suffix, _) in enumerate(claim_views(run))}

    def rank(c):
        return next((i for suffix, i in order.items() if suffix and c.id.endswith(suffix)), len(order))
    return sorted(claims, key=rank)


def _kind_is(run, *kinds) -> bool:
    return fa.run_kind(run) in kinds


def _mode(c) -> str:
    return f"{c.task.balance}, K = {c.task.K}, N = {c.task.n_points}"


def _convergence_details(run) -> dict:
    c = run.config
    return {"per_feature_attention": fa.final_per_feature(run, "probe/same_feature_attention").mean(0).tolist(),
            "per_feature_error": fa.final_per_feature(run, "probe/feature_error").mean(0).tolist(),
            "error_floor": _floors(c), "eval_prompts": c.train.eval_prompts,
            "time": float(run.metric("loss/test")["time"].max()) if len(run.metrics) else None}


def _floors(c) -> list[float]:
    return error_floor(c.task.probabilities(), c.task.n_points).tolist()


# -- claim 1: convergence ---------------------------------------------------------------------------
@CLAIMS.claim("attention_concentrates", "Same-feature attention a_k → 1 for every feature ({mode}): min_k a_k "
              "at the end of training", SOURCE, Above(1 - EPS_ATTENTION), tolerance=f"ε = {EPS_ATTENTION}",
              per_view=True)
def _attention_concentrates(run):
    if _kind_is(run, "full"):
        return None
    a = fa.final_per_feature(run, "probe/same_feature_attention")
    return Measurement(a.min(1), _convergence_details(run), fmt={"mode": _mode(run.config)})


@CLAIMS.claim("error_vanishes", "Prediction error ℓ_k → 0 for every feature ({mode}): max_k ℓ_k on held-out "
              "prompts (the floor ½(1−p_k)^N ≤ {floor:.1e} is far below)", SOURCE, Below(EPS_ERROR),
              tolerance=f"ε_ℓ = {EPS_ERROR:g}", per_view=True)
def _error_vanishes(run):
    if _kind_is(run, "full"):
        return None
    err = fa.final_per_feature(run, "probe/feature_error")
    return Measurement(err.max(1), _convergence_details(run),
                       fmt={"mode": _mode(run.config), "floor": max(_floors(run.config))})


# -- claim 2: the two balanced phases --------------------------------------------------------------
def _closed_form_ratio(K: int) -> float:
    return balanced_crossing_time(K, "error", EPS_ERROR) / balanced_crossing_time(K, "attention")


def _phase2_slopes(run) -> np.ndarray:
    """(S, K) late log-log slopes of ℓ_k per seed and feature."""
    out = []
    for i in range(run.config.n_seeds):
        row = []
        for k in range(run.config.task.K):
            t, v = seed_matrix(run, f"probe/feature_error/{k}")
            row.append(fa.late_slope(t, v[i]) if v.size else np.nan)
        out.append(row)
    return np.asarray(out)


@CLAIMS.claim("two_phases", "Balanced: two phases — a_k first rises from 1/K to ½ (phase 1), then ℓ_k converges "
              f"over a much longer phase 2: min_k t(ℓ_k ≤ {EPS_ERROR:g}) / t(a_k ≥ ½)", SOURCE_BAL,
              Above(PHASE_SEPARATION), tolerance=f"≥ min({PHASE_SEPARATION:g}, ½ the closed form's ratio "
              "(large N), details: closed_form_ratio)", per_view=True)
def _two_phases(run):
    if not _kind_is(run, "balanced"):
        return None
    K = run.config.task.K
    ratios = []
    for i in range(run.config.n_seeds):
        m = markers_of(run, seed_index=i)
        r = [m[k][f"t_error_{EPS_ERROR:g}"] / m[k]["t_attention_half"] if k in m and m[k]["t_attention_half"] > 0
             else np.nan for k in range(K)]  # (a_k starts at ½ or above, e.g. K = 2: no phase 1 to measure)
        ratios.append(np.min(r) if np.all(np.isfinite(r)) else np.nan)
    expected_ratio = _closed_form_ratio(K)
    # phase 1 grows as K², phase 2 as K/ε_ℓ: the separation shrinks with K (closed form: 38 at K = 5,
    # 8 at K = 32), so the bound is 10× or half the closed form's ratio, whichever is smaller
    details = clean({"phase_markers": {"trained (seed mean)": markers_of(run),
                                       "reduced dynamics": markers_of(run, "theory")},
                     "closed_form_ratio": expected_ratio, "phase2_slopes": _phase2_slopes(run).tolist()})
    return Measurement(ratios, details, expect=Above(min(PHASE_SEPARATION, 0.5 * expected_ratio)))


@CLAIMS.claim("phase2_power_law", "Balanced, phase 2: ℓ_k decays as t^β with β ≈ −1 (closed form: x ∝ t^−½, "
              "ℓ ∝ x²); log-log slope of ℓ_k over the last decade of training, the one farthest from −1",
              SOURCE_BAL, Judged(f"in [{PHASE2_SLOPE[0]}, {PHASE2_SLOPE[1]}]"), tolerance="±0.25", per_view=True)
def _phase2_power_law(run):
    if not _kind_is(run, "balanced"):
        return None
    lo, hi = PHASE2_SLOPE
    slopes = _phase2_slopes(run)
    if not np.isfinite(slopes).all():
        return Measurement(None, {"slopes": slopes.tolist()}, note="no finite slopes")
    # per seed, the feature's slope farthest from −1; the aggregate is the worst of those
    worst = [float(row[np.argmax(np.abs(row + 1))]) for row in slopes]
    agg = worst[int(np.argmax(np.abs(np.asarray(worst) + 1)))]
    return Measurement(agg, {"slopes": slopes.tolist()}, passed=bool(((slopes >= lo) & (slopes <= hi)).all()),
                       per_seed=worst)


# -- claim 3: stage-wise convergence of imbalanced features ------------------------------------------
def _imb_mode(run) -> str:
    return "full W^KQ, W^PV" if run.config.model.train == "full" else "Q"


@CLAIMS.claim("dominant_first", "Imbalanced ({mode} trained): the dominant feature reaches ℓ ≤ {stage:g} before "
              "every under-represented one: min_minor t(ℓ_k ≤ {stage:g}) / t(ℓ_0 ≤ {stage:g})", SOURCE_IMB,
              Above(1.0), per_view=True)
def _dominant_first(run):
    if not _kind_is(run, "imbalanced", "full"):
        return None
    minors, key = fa.minor_features(run), f"t_error_{STAGE_ERROR:g}"
    ratios = []
    for i in range(run.config.n_seeds):
        m = markers_of(run, seed_index=i)
        if 0 not in m or any(k not in m for k in minors):
            ratios.append(np.nan)
            continue
        first_minor = min(m[k][key] for k in minors)
        ratios.append(first_minor / m[0][key] if m[0][key] > 0 else np.nan)
    train, reduced = markers_of(run), markers_of(run, "theory")
    details = clean({f"{key} (trained, seed mean)": {k: m.get(key) for k, m in train.items()},
                     f"{key} (reduced dynamics)": {k: m.get(key) for k, m in reduced.items()}})
    return Measurement(ratios, details, fmt={"mode": _imb_mode(run), "stage": STAGE_ERROR})


def _markers_details(run) -> dict:
    return clean({"phase_markers": {"trained (seed mean)": markers_of(run),
                                    "reduced dynamics": markers_of(run, "theory")}})


@CLAIMS.claim("cross_scores_non_monotone", "Imbalanced ({mode} trained): for every under-represented k, the mean "
              "cross-feature score B̄_k = mean_n B_{{k,n}} (n under-represented, ≠ k) first rises, then falls "
              "below its start: min_k rise (the fall must exceed it)", SOURCE_IMB, Judged("rise, then fall"),
              tolerance="50% of the reduced rise", per_view=True)
def _cross_scores_non_monotone(run):
    if not _kind_is(run, "imbalanced", "full"):
        return None
    minors = fa.minor_features(run)
    train, reduced = markers_of(run), markers_of(run, "theory")
    th_rise = [reduced[k]["cross_rise"] for k in minors if k in reduced and "cross_rise" in reduced[k]]
    expected_rise = 0.5 * min(th_rise) if th_rise else None
    rises, ok = [], []
    for i in range(run.config.n_seeds):
        m = markers_of(run, seed_index=i)
        r = [m[k].get("cross_rise", np.nan) for k in minors if k in m]
        f = [m[k].get("cross_fall", np.nan) for k in minors if k in m]
        rises.append(min(r) if r and np.all(np.isfinite(r)) else np.nan)
        ok.append(bool(r) and expected_rise is not None and min(r) > expected_rise and min(f) > min(r))
    rises = np.asarray(rises, dtype=float)
    if expected_rise is None or not np.isfinite(rises).all() or len(minors) < 2:
        return Measurement(None, _markers_details(run), note="needs K ≥ 3, the reduced dynamics and the score probes",
                           statement="Imbalanced: the cross-feature scores B_{k,n} toward other under-represented "
                                     "features rise, then fall")
    details = clean({f"{what} ({src})": {k: m.get(f"cross_{what}") for k, m in mk.items() if k in minors}
                     for what in ("rise", "fall") for src, mk in (("trained, seed mean", train),
                                                                  ("reduced dynamics", reduced))})
    return Measurement(float(rises.min()), details, fmt={"mode": _imb_mode(run)}, passed=all(ok),
                       per_seed=rises.tolist(),
                       expect=Judged(f"> {expected_rise:.3g} (½ the reduced dynamics' rise)"))


@CLAIMS.claim("minor_phase_order", "Imbalanced ({mode} trained): each under-represented feature goes through its "
              "phases in order — B̄_k peaks, a_k overtakes the dominant mass, a_k passes ½, ℓ_k ≤ {stage:g} — "
              "fraction of under-represented features in that order", SOURCE_IMB, Above(0.999),
              tolerance="all of them", per_view=True)
def _minor_phase_order(run):
    if not _kind_is(run, "imbalanced", "full"):
        return None
    minors = fa.minor_features(run)
    fracs = []
    for i in range(run.config.n_seeds):
        m = markers_of(run, seed_index=i)
        good = [fa.phase_order_ok(m.get(k, {})) for k in minors]
        fracs.append(np.mean(good) if good else np.nan)
    return Measurement(fracs, _markers_details(run), fmt={"mode": _imb_mode(run), "stage": STAGE_ERROR})


# -- claim 4: training follows the reduced dynamics ------------------------------------------------------
def _match_context(run) -> tuple[str, str, dict]:
    c = run.config
    mode = ("W^KQ and W^PV trained (compared with the Q-only reduced dynamics)" if c.model.train == "full"
            else "Q trained")
    how = f"GD on the scores at the run's lr schedule, {c.theory_expectation} expectation"
    details = {"batch_size": c.train.batch_size, "lr": c.train.lr, "expectation": c.theory_expectation,
               "eval_prompts_during": c.train.eval_prompts_during}
    return mode, how, details


def _gaps(run):
    """(max |a_k − a_k^reduced|, max |ln ℓ_k/ℓ_k^reduced|) per seed with the details, or None."""
    gaps = fa.reduced_dynamics_gaps(run)
    if gaps is None:
        return None
    mode, how, details = _match_context(run)
    details = {"max_abs_attention_gap": gaps[0].tolist(), "max_abs_log_ratio_feature_error": gaps[1].tolist(),
               **details}
    if run.config.model.train == "full":
        _, v = seed_matrix(run, "probe/value_scale")
        if v.size:
            details["value_scale_range"] = [float(v.min()), float(v.max())]
    return gaps, mode, how, details


@CLAIMS.claim("matches_reduced_dynamics", "{balance}, {mode}: max over t and k of |a_k(t) − a_k^reduced(t)| "
              "({how})", SOURCE_RED, Below(MATCH_ATTENTION), tolerance=f"{MATCH_ATTENTION}", per_view=True)
def _matches_reduced_dynamics(run):
    got = _gaps(run)
    if got is None:
        return Measurement([], statement="Training matches the reduced dynamics",
                           note="no reduced dynamics for this config (e.g. model.query_in_softmax=true) or no probes")
    (dev_a, _), mode, how, details = got
    if run.config.model.train == "full":
        return None  # full_training_vs_reduced: a comparison without a verdict
    return Measurement(dev_a, details, fmt={"balance": run.config.task.balance.capitalize(), "mode": mode, "how": how})


@CLAIMS.claim("error_matches_reduced_dynamics", "{balance}, {mode}: max over t and k of |ln(ℓ_k(t) / "
              "ℓ_k^reduced(t))|, held-out ℓ_k on {prompts} prompts ({how})", SOURCE_RED, Below(MATCH_LOG_ERROR),
              tolerance=f"ℓ_k within a factor e^{MATCH_LOG_ERROR:g} ≈ {math.exp(MATCH_LOG_ERROR):.2f} (the fixed "
                        f"held-out set's sampling error is ~√(2/n_k) per feature)", per_view=True)
def _error_matches_reduced_dynamics(run):
    got = _gaps(run)
    if got is None or run.config.model.train == "full":
        return None
    (_, dev_l), mode, how, details = got
    return Measurement(dev_l, details, fmt={"balance": run.config.task.balance.capitalize(), "mode": mode,
                                            "how": how, "prompts": run.config.train.eval_prompts_during})


@CLAIMS.claim("full_training_vs_reduced", "comparison only", SOURCE_RED,
              Judged("no prediction (the reduced dynamics cover Q-only training)"), per_view=True)
def _full_training_vs_reduced(run):
    """The reduced dynamics describe Q-only training: for full training there is no prediction to pass,
    so this claim is shown without a verdict (a ready Claim: a Judged spec always gives one)."""
    got = _gaps(run)
    if got is None or run.config.model.train != "full":
        return None
    (dev_a, dev_l), mode, how, details = got
    vs = details.get("value_scale_range", [np.nan, np.nan])
    statement = (f"{run.config.task.balance.capitalize()}, {mode}: max over t and k of |a_k(t) − a_k^reduced(t)| "
                 f"({how}) — comparison only")
    return Claim("full_training_vs_reduced", statement, SOURCE_RED, float(dev_a.max()),
                 "no prediction (the reduced dynamics cover Q-only training)", None, None, dev_a.tolist(),
                 f"comparison only: W^PV's label weight moved within [{vs[0]:.3f}, {vs[1]:.3f}] (Q-only: 1); "
                 f"ℓ_k(t) differs from the Q-only reduced dynamics by up to a factor {float(np.exp(dev_l.max())):.2f}",
                 details)


# -- claim 5: the K-scaling ------------------------------------------------------------------------------
def _scaling_source_text(pts) -> str:
    tpf = sorted({n // k for k, n in zip(pts["K"], pts["N"])})
    per = f"N = {tpf[0]}K" if len(tpf) == 1 else f"N = {pts['N']}"
    if pts["source"] == "training":
        return f"trained crossing times, one balanced run per K, {per}"
    return (f"exponents of the reduced dynamics (multinomial, {per}), not of training: training is checked "
            f"against them at K = {pts['check']['K'][0] if pts.get('check') else '—'} only")


def _exponent(run, what: str, key: str, level, label: str):
    pts = fa.scaling_points(run, fa.feature_views(run))
    if not pts:
        return None
    K = np.asarray(pts["K"], float)
    y = np.asarray(pts[key], float)
    if len(K) < 4 or not np.isfinite(y).all():
        return Measurement(None, statement=f"K-scaling of the time to {label}", expect=Judged(""),
                           note=f"needs ≥ 4 values of K with finite crossing times (got {len(K)}: {y.tolist()})")
    fit = fit_power_law(K, y)
    closed = [balanced_crossing_time(int(k), what, level) for k in K]
    ref = fit_power_law(K, closed)
    details = {"fit": fit, "closed_form_fit": ref, "K": K.tolist(), "times": y.tolist(),
               "closed_form_times": closed, "N": pts["N"], "source": pts["source"],
               "local_exponents": (np.diff(np.log(y)) / np.diff(np.log(K))).tolist()}
    chk = pts.get("check") or {}
    if pts["source"] == "training" and chk.get("K") == pts["K"]:
        red = np.asarray(chk["reference"], float)[:, 0 if what == "attention" else 1]
        if np.isfinite(red).all():
            details["reduced_dynamics_fit"] = fit_power_law(K, red)
    decades = float(np.log10(K.max() / K.min()))
    return Measurement(fit["exponent"], clean(details), passed=abs(fit["exponent"] - ref["exponent"]) <= EXPONENT_TOL,
                       fmt={"K": K.astype(int).tolist(), "decades": decades, "src": _scaling_source_text(pts),
                            "lo": fit["ci"][0], "hi": fit["ci"][1]},
                       expect=Judged(f"{ref['exponent']:.3f} ± {EXPONENT_TOL} (closed form, large N, same K)"))


SCALING = ("Balanced: the time to {label} grows as K^α over K = {{K}} ({{decades:.2f}} decades; {{src}}): "
           "fitted α [95% CI {{lo:.2f}}, {{hi:.2f}}]")


@CLAIMS.claim("k_scaling_attention", SCALING.format(label="a_k > ½"), SOURCE_SCALE, Judged(""),
              tolerance=f"±{EXPONENT_TOL}")
def _k_scaling_attention(run):
    return _exponent(run, "attention", "t_half", None, "a_k > ½")


@CLAIMS.claim("k_scaling_error", SCALING.format(label=f"ℓ_k < {EPS_ERROR:g}"), SOURCE_SCALE, Judged(""),
              tolerance=f"±{EXPONENT_TOL}")
def _k_scaling_error(run):
    return _exponent(run, "error", "t_error", EPS_ERROR, f"ℓ_k < {EPS_ERROR:g}")


@CLAIMS.claim("k_scaling_training_check", "Training check of the K-scaling at {where}: trained crossing times of "
              f"a_k > ½ and ℓ_k < {EPS_ERROR:g} vs {{reference}} — worst relative gap", SOURCE_SCALE,
              Below(MATCH_CROSSING), tolerance=f"{MATCH_CROSSING:.0%} (includes the held-out sampling error and, "
                                               "against the flow, the lr's discretisation)")
def _k_scaling_training_check(run):
    pts = fa.scaling_points(run, fa.feature_views(run))
    chk = pts.get("check") if pts else None
    if not chk or not chk["K"]:
        return None
    tr, ref = np.asarray(chk["trained"], float), np.asarray(chk["reference"], float)   # (n_K, 2)
    rel = np.abs(tr / ref - 1)
    where = f"every K = {chk['K']}" if pts["source"] == "training" else f"K = {chk['K'][0]} only (N = {chk['N'][0]})"
    details = clean({"K": chk["K"], "N": chk["N"], "trained": tr.tolist(), "reference": ref.tolist(),
                     "relative_gap": rel.tolist(), "runs": chk["runs"]})
    return Measurement([rel.max()] if rel.size else [], details,
                       fmt={"where": where, "reference": chk["reference_name"]})
