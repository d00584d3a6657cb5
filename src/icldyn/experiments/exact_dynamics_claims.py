"""Claims of linear-exact-dynamics, from the stored sweep directory only (analysis/exact_dynamics.py).

Four lists, by which runs a claim reads:
- ODE_CLAIMS, per staged/sgd run (suffix "" for the staged run, "[sgd]" for the SGD one): training
  follows the reduced ODE (loss, every mode), crosses ½ when it does, and in order of λ;
- SWEEP_CLAIMS, over the σ₀ and lr sweeps: the plateau law and the conserved quantity's drift;
- ALIGNMENT_CLAIMS, per generic/noncommuting run ("[name]" in a sweep): W^KQ's x-block aligns with
  Λ's top eigenvector on the way out of the plateau;
- RANK_CLAIMS, per noncommuting/staged run: the effective rank of that block steps up with the
  modes and ends at erank(Γ⁻¹).

Bounds that depend on the run (tolerances in the config, fixed before the run; the ODE's times,
from theory.parquet) are filled in by each measurement; the rest are fixed here.
"""

from __future__ import annotations

import numpy as np

from icldyn.analysis import exact_dynamics as ed
from icldyn.analysis.runs import theory_constant
from icldyn.claims import Above, Below, Claim, ClaimList, Judged, Measurement, above

EXPERIMENT = "linear-exact-dynamics"
SOURCE = "Mainali & Teixeira 2025 (seed 004), reduced gradient flow of the 1-layer LSA"
SOURCE_PLATEAU = "Mainali & Teixeira 2025: escape from the saddle at rate ρ = sqrt(Σλ⁴)"
SOURCE_CONSERVED = "Mainali & Teixeira 2025: ‖p‖² − ‖Q‖_F² is conserved under gradient flow"
SOURCE_SPECTRAL = "Mainali & Teixeira 2025, spectral rank dynamics / subspace alignment (standard definitions)"
MAX_MODES = 12  # follows_ode_mode_<i> is registered for i < MAX_MODES (d = 3 in both presets)


def ode_views(run) -> list:
    """The staged and SGD runs: "" for the staged one (or a single run), "[label]" for the others."""
    rs = ed.roles(run)
    single = len(ed.views(run)) == 1
    return [("" if single or label == "staged" else f"[{label}]", r)
            for role in ("staged", "sgd") for label, r in rs.get(role, [])]


def role_views(*names: str):
    """Views of the runs of the given roles, in that order: "[label]" in a sweep, "" for a single run."""
    def views(run) -> list:
        rs = ed.roles(run)
        single = len(ed.views(run)) == 1
        return [("" if single else f"[{label}]", r) for role in names for label, r in rs.get(role, [])]
    return views


ODE_CLAIMS = ClaimList(EXPERIMENT, views=ode_views)
SWEEP_CLAIMS = ClaimList(EXPERIMENT)
ALIGNMENT_CLAIMS = ClaimList(EXPERIMENT, views=role_views("generic", "noncommuting"))
RANK_CLAIMS = ClaimList(EXPERIMENT, views=role_views("noncommuting", "staged"))
CLAIM_LISTS = (ODE_CLAIMS, SWEEP_CLAIMS, ALIGNMENT_CLAIMS, RANK_CLAIMS)


def evaluate(run) -> list[Claim]:
    """Every claim of a stored run or sweep directory, list by list."""
    return [c for claims in CLAIM_LISTS for c in claims.evaluate(run)]


# -- the reduced ODE -------------------------------------------------------------------------------------
def _not_applicable() -> Measurement:
    return Measurement(values=None, statement="the reduced ODE applies", expect=Judged("—"),
                       note="the ODE needs model.init=zfb, one layer, noiseless Gaussian data")


def _factor(c) -> float:
    return 1.0 if c.train.gradient == "population" else c.sampled_tolerance_factor


@ODE_CLAIMS.claim("follows_ode_loss", "Training ({mode}) follows the reduced ODE: max |L − L_ODE| over the run, "
                  "as a fraction of the loss drop {drop:.4f} ({metric})", SOURCE, Below(0.01), per_view=True)
def _(run):
    c = run.config
    if not ed.ode_applies(c):
        return _not_applicable()
    drop, bound = ed.loss_drop(run), c.ode_loss_tolerance * _factor(c)
    dev = np.array(ed.ode_deviation(run, ed.loss_metric(c), "loss")) / drop
    return Measurement(dev, fmt={"mode": ed.gradient_mode(run), "drop": drop, "metric": ed.loss_metric(c)},
                       expect=Below(bound), tolerance=f"{bound:g}")


def _follows_mode(i: int):
    def measure(run):
        c = run.config
        if i >= c.task.d:
            return None
        if not ed.ode_applies(c):
            return _not_applicable()
        bound = c.ode_mode_tolerance * _factor(c)
        dev = ed.ode_deviation(run, f"probe/mode_progress/{i}", f"mode_progress/{i}")
        return Measurement(dev, fmt={"lam": ed.modes_eigenvalues(c)[i], "mode": ed.gradient_mode(run)},
                           expect=Below(bound), tolerance=f"{bound:g}")
    return measure


for _i in range(MAX_MODES):
    ODE_CLAIMS.claim(f"follows_ode_mode_{_i}", f"Mode {_i} (λ = {{lam:g}}) follows the ODE ({{mode}}): "
                     "max |γ_i b_i − ODE| over the run", SOURCE, Below(0.02), per_view=True)(_follows_mode(_i))


CROSSING = ("Each mode's progress crosses ½ when the ODE's does ({mode}): max relative error over modes "
            "{modes}; ODE: t = {times}")


def _crossing_note(run, skipped) -> str | None:
    expected = ed.ode_crossings(run)
    return (f"mode(s) {skipped} cross ½ after the run's end t = {ed.end_time(run):.4g} in the ODE "
            f"(t = {', '.join(f'{expected[i]:.4g}' for i in skipped)}): not checked") if skipped else None


def _crossings(run) -> dict:
    """The modes checked, the note on the others, measured and ODE times, and the details."""
    c = run.config
    modes, skipped = ed.modes_within_run(run, c.crossing_tolerance)
    expected_all = ed.ode_crossings(run)
    measured = ed.mode_crossings(run, modes)
    details = {"modes": modes, "measured_times": measured.tolist(), "ode_times": expected_all[modes].tolist(),
               "ode_times_all_modes": expected_all.tolist()}
    return {"modes": modes, "note": _crossing_note(run, skipped), "measured": measured,
            "expected": expected_all[modes], "details": details,
            "fmt": {"mode": ed.gradient_mode(run), "modes": modes,
                    "times": ", ".join(f"{expected_all[i]:.4g}" for i in modes)}}


@ODE_CLAIMS.claim("crossing_times_match_ode", CROSSING, SOURCE, Judged("< 0.2"), per_view=True)
def _(run):
    c = run.config
    if not ed.ode_applies(c):
        return _not_applicable()
    tol, x = c.crossing_tolerance, _crossings(run)
    expect, tolerance = Judged(f"< {tol:g}"), f"{tol:.0%}"
    if not x["modes"]:
        return Measurement(None, fmt=x["fmt"], expect=expect, tolerance=tolerance,
                           note=x["note"] or "no mode crosses ½ within the run")
    rel = np.abs(x["measured"] / x["expected"] - 1).max(1)
    missing = [m for k, m in enumerate(x["modes"]) if not np.isfinite(x["measured"][:, k]).all()]
    if missing:  # the theory says it crosses within the run, training did not: a failure (measured ∞)
        rel = np.where(np.isfinite(rel), rel, np.inf)
        note = "; ".join(filter(None, [x["note"], f"mode(s) {missing} never crossed ½ by t = {ed.end_time(run):.4g}"]))
        return Claim("crossing_times_match_ode", CROSSING.format(**x["fmt"]), SOURCE, float(rel.max()), expect.text,
                     False, tolerance, rel.tolist(), note, x["details"])
    return Measurement(float(rel.max()), x["details"], x["note"], x["fmt"], passed=bool(rel.max() < tol),
                       per_seed=rel.tolist(), expect=expect, tolerance=tolerance)


@ODE_CLAIMS.claim("modes_learned_in_order", "Modes are learned in order of decreasing λ ({mode}): smallest ratio "
                  "t_(i+1)/t_i of the ½-crossings of modes {modes}", SOURCE, Judged("> 1 for every i"), per_view=True)
def _(run):
    if not ed.ode_applies(run.config):
        return _not_applicable()
    x = _crossings(run)
    if len(x["modes"]) < 2:
        note = (x["note"] or "no mode crosses ½ within the run") if not x["modes"] else \
            "fewer than two modes cross ½ within the run"
        return Measurement(None, fmt=x["fmt"], expect=Judged("> 1"), note=note)
    worst = ed.order_ratios(x["measured"])
    missing = [m for k, m in enumerate(x["modes"]) if not np.isfinite(x["measured"][:, k]).all()]
    note = "; ".join(filter(None, [x["note"], missing and
                                   f"mode(s) {missing} never crossed ½ by t = {ed.end_time(run):.4g}"])) or None
    return Measurement(float(worst.min()), x["details"], note, x["fmt"], passed=bool((worst > 1).all()),
                       per_seed=worst.tolist())


# -- the plateau law and the conserved quantity (over the sweeps) ----------------------------------------
def role_runs(run, role: str) -> list:
    return [r for _, r in ed.roles(run).get(role, [])]


def _lam_text(lam) -> str:
    return ", ".join(f"{v:g}" for v in lam)


PLATEAU = ("Plateau length grows by ln(10)/ρ per decade of smaller σ₀ (λ = ({lam}), ρ = {rho:.4g}): "
           "fitted slope of the escape time vs log10(1/σ₀)")


@SWEEP_CLAIMS.claim("plateau_slope", PLATEAU, SOURCE_PLATEAU, Judged("ln(10)/ρ ± plateau_tolerance"))
def plateau_slope(run):
    """The σ₀ sweep's escape times against log10(1/σ₀): the slope against ln(10)/ρ (ρ from theory.parquet)."""
    runs, _ = ed.by_init_scale(role_runs(run, "plateau"))
    if not runs:
        return None
    c = runs[0].config
    lam, sigma = np.asarray(c.task.eigenvalue_list(), float), np.array([r.config.model.init_scale for r in runs])
    rho, tol = theory_constant(runs[0], "escape_rate"), c.plateau_tolerance
    expected = np.log(10) / rho
    fmt = {"lam": _lam_text(lam), "rho": rho}
    short = Judged(f"{expected:.4g} ± {tol:.0%}")
    if len(runs) < 4 or np.log10(sigma.max() / sigma.min()) < 1:
        return Measurement(None, fmt=fmt, expect=short, note=f"needs ≥ 4 values of σ₀ over ≥ 1 decade, got {len(runs)}")
    fits = [ed.escape_fit(runs, seed) for seed in runs[0].seeds]
    for f in fits:
        if "slope" not in f:
            return Measurement(None, {"escape_times": f["escape_times"]}, fmt=fmt, expect=short,
                               note="a run never left its plateau (no halfway crossing of the loss)")
    per = [f["slope"] for f in fits]
    slope, lam1 = float(np.mean(per)), np.log(10) / lam.max() ** 2
    rel = abs(slope / expected - 1)
    # GD linearised at the saddle multiplies the unstable direction by 1 + lr ρ per step (not e^{lr ρ})
    lr = c.train.lr
    gd_expected = float(np.log(10) * lr / np.log1p(lr * rho)) if c.train.stages is None else None
    gd = "" if gd_expected is None else f"; discrete GD at lr {lr:g}: ln(10)·lr/ln(1 + lr ρ) = {gd_expected:.4g}"
    ci = fits[0]["ci"]
    statement = PLATEAU.format(**fmt) + f"; 95% CI {ci[0]:.4g}–{ci[1]:.4g}{gd}"
    details = {"fits": fits, "sigma0": sigma.tolist(), "relative_error": rel,
               "expected": expected, "expected_for_discrete_gd": gd_expected, "lambda1_only": lam1,
               "ci_excludes_lambda1_only": bool(not ci[0] <= lam1 <= ci[1])}
    return Measurement(slope, details, statement=statement, passed=bool(rel < tol), per_seed=per,
                       expect=Judged(f"{expected:.4g} ± {tol:.0%} (ln10/λ₁² would be {lam1:.4g})"),
                       tolerance=f"{tol:.0%}")

CONSERVED = ("‖p‖² − ‖Q‖_F² is conserved by gradient flow; under {how} its drift max_t |C(t) − C(0)| "
             "over t ≤ {horizon:g} shrinks ∝ lr: fitted exponent of drift vs lr")


def conservation(runs, reference=(), staged=()) -> Measurement | None:
    """Drift of ‖p‖² − ‖Q‖_F² over one time horizon against lr, on log-log axes: exponent 1.

    Gradient flow conserves C for any loss of ŷ, a sampled minibatch's included (bilinear
    symmetry), and a step changes it by exactly lr²(‖∇_p‖² − ‖∇_Q‖²); over a horizon T that sums
    to lr·∫(‖∇_p‖² − ‖∇_Q‖²) dt: ∝ lr, with minibatch noise adding its variance to the integrand.
    `reference` (population runs at the same lrs) and `staged` (the long SGD run) are reported."""
    if not runs:
        return None
    runs = sorted(runs, key=lambda r: r.config.train.lr)
    c = runs[0].config
    sgd = c.train.gradient == "sampled"
    tol = c.conservation_sgd_exponent_tolerance if sgd else c.conservation_exponent_tolerance
    how = f"minibatch SGD (batch {c.train.batch_size}, sampled prompts)" if sgd else "GD on exact population gradients"
    fmt, expect = {"how": how, "horizon": c.conservation_time}, Judged(f"1 ± {tol:g}")
    lrs = np.array([r.config.train.lr for r in runs])
    if len(runs) < 4 or np.log10(lrs.max() / lrs.min()) < 1 - 1e-9:
        return Measurement(None, fmt=fmt, expect=expect, note=f"needs ≥ 4 learning rates over ≥ 1 decade, got {len(runs)}")
    f = ed.drift_fit(runs)
    if f is None:
        return Measurement(None, {"drift": [float(ed.conserved_drift(r).mean()) for r in runs]}, fmt=fmt,
                           expect=expect, note="a drift of exactly 0 cannot be fitted on log axes")
    drift = f["drift"]
    details = {"lr": lrs.tolist(), "drift": drift.tolist(), "drift_over_lr": (drift / lrs).tolist(),
               "relative_drift": [float(ed.relative_drift(r).mean()) for r in runs],
               **{k: f[k] for k in ("slope", "intercept", "stderr", "ci")}}
    extra = _conservation_extra(details, runs, reference, staged)
    return Measurement(f["slope"], details, statement=CONSERVED.format(**fmt) + f"; 95% CI {f['ci'][0]:.3g}–"
                       f"{f['ci'][1]:.3g}{extra}", passed=bool(abs(f["slope"] - 1) < tol), per_seed=[f["slope"]],
                       expect=expect, tolerance=f"±{tol:g}")


def _conservation_extra(details, runs, reference, staged) -> str:
    """SGD against GD at the same lrs, and the staged SGD run's relative drift (into details)."""
    ref = {r.config.train.lr: ed.conserved_drift(r).mean() for r in reference}
    extra = ""
    if ref:
        ratio = [float(d / ref[r.config.train.lr]) if r.config.train.lr in ref else None
                 for r, d in zip(runs, details["drift"])]
        details["drift_over_population_gd"] = ratio
        if all(v is not None for v in ratio):
            extra = f"; SGD/GD drift ratio {min(ratio):.3g}–{max(ratio):.3g}"
    for r in staged:
        t_end, rel = ed.end_time(r), float(ed.relative_drift(r).mean())
        details["staged_sgd_relative_drift"] = {"t_end": t_end, "relative_drift": rel}
        extra += f"; the staged SGD run drifts by {rel:.2g} of ‖p‖² + ‖Q‖² by t = {t_end:g}"
    return extra


@SWEEP_CLAIMS.claim("conserved_drift_linear_in_lr", CONSERVED, SOURCE_CONSERVED, Judged("1 ± 0.15"))
def _(run):
    return conservation(ed.by_gradient(role_runs(run, "conservation"), "population"))


@SWEEP_CLAIMS.claim("conserved_drift_linear_in_lr[sgd]", CONSERVED, SOURCE_CONSERVED, Judged("1 ± 0.25"))
def _(run):
    runs = role_runs(run, "conservation")
    return conservation(ed.by_gradient(runs, "sampled"), reference=ed.by_gradient(runs, "population"),
                        staged=role_runs(run, "sgd"))


# -- spectral: alignment and rank steps ------------------------------------------------------------------
ALIGNMENT = ("From a small {init} init (σ₀ = {sigma0:g}, {mode}), the top singular vector of W^KQ's x-block aligns "
             "with Λ's eigenvector {eigenvector} before the first loss drop ends: max overlap (u₁·r)² from the "
             "drop's start to its midpoint")


def alignment(run, eigenvector: int = 0):
    """W^KQ's x-block: its top singular vector's overlap with Λ's eigenvector `eigenvector` (by
    decreasing λ) reaches ≈ 1 on the way out of the first plateau."""
    c = run.config
    values, where, note = [], [], None
    for seed in run.seeds:
        value, drop = ed.alignment_in_drop(run, seed, eigenvector)
        values.append(value)
        if drop is None:
            note = "no drop of the loss: the model never left the plateau"
        else:
            where.append([drop.start, drop.midpoint, drop.end])
    routes = ed.route_norms(run)
    rank_one = int(sum(r > v for v, r in zip(routes["vu"], routes["rank_one"])))
    if rank_one and note is None:
        note = (f"in {rank_one} of {len(run.seeds)} seeds B ends up carried by the rank-one route p_x q_yᵀ "
                f"(outside the ZFB blocks), not by v U")
    statement = ALIGNMENT.format(init=ed.INIT_NAMES[c.model.init], sigma0=c.model.init_scale,
                                 mode=ed.gradient_mode(run), eigenvector=eigenvector)
    details = {"drop_start_mid_end": where, "final_route_norms": routes, "rank_one_route_seeds": rank_one}
    if any(not np.isfinite(v) for v in values):  # no drop: the claim is about the way out of the plateau
        return _failed(above("kq_aligns_with_top_eigenvector", statement, SOURCE_SPECTRAL, values,
                             c.alignment_bound, note=note, details=details))
    return Measurement(values, details, note, statement=statement, expect=Above(c.alignment_bound))


def _failed(claim: Claim) -> Claim:
    claim.passed, claim.measured = False, None
    return claim


ALIGNMENT_CLAIMS.claim("kq_aligns_with_top_eigenvector", ALIGNMENT, SOURCE_SPECTRAL, Above(0.95),
                      per_view=True)(alignment)

RANK_STEPS = ("The effective rank of W^KQ's x-block falls on the plateau to erank(Λ²) = {collapse:.3f} "
              "(± {tol:.0%}; U grows along λ²) and rises as each later mode switches on ({init} init): smallest "
              "step of [min erank before the first drop's midpoint, erank at mode 1's ½-crossing, ..., at mode {last}'s]")


@RANK_CLAIMS.claim("erank_rises_with_modes", RANK_STEPS, SOURCE_SPECTRAL, Above(0.0), per_view=True)
def _(run):
    """The effective rank of U (W^KQ's x-block) first falls to that of Λ² — on the plateau U grows
    along the saddle's unstable direction, u ∝ λ² — and then rises as each later mode switches on:
    the sequence `ed.erank_sequence` increases and its first entry is within COLLAPSE_TOLERANCE of
    erank(Λ²). Measured: the smallest step of that sequence (> 0)."""
    c = run.config
    collapse = theory_constant(run, "erank_lambda_squared")
    steps, details, note = [], [], None
    for seed in run.seeds:
        seq = ed.erank_sequence(run, seed)
        if seq is None:
            note = "the run did not leave the plateau or not every mode crossed ½"
            steps.append(float("nan"))
            continue
        step = float(np.min(np.diff(seq["erank_sequence"])))
        collapsed = abs(seq["erank_sequence"][0] / collapse - 1) < ed.COLLAPSE_TOLERANCE
        steps.append(step if collapsed else min(step, 0.0))
        details.append({"erank_sequence": seq["erank_sequence"], "crossings": seq["crossings"],
                        "collapsed": collapsed, "erank_final": seq["erank_final"]})
    fmt = {"collapse": collapse, "tol": ed.COLLAPSE_TOLERANCE, "init": ed.INIT_SHORT[c.model.init], "last": c.task.d - 1}
    details = {"per_seed": details, "erank_lambda_squared": collapse}
    if note is not None:
        return _failed(above("erank_rises_with_modes", RANK_STEPS.format(**fmt), SOURCE_SPECTRAL, steps, 0.0,
                             note=note, details=details))
    return Measurement(steps, details, fmt=fmt)


@RANK_CLAIMS.claim("erank_final_matches_gamma_inv", "At the end the effective rank of W^KQ's x-block equals "
                       "that of Γ⁻¹ = {target:.4f} (the limit vU = Γ⁻¹): relative error", SOURCE_SPECTRAL,
                       Below(ed.ERANK_FINAL_TOLERANCE), tolerance=f"{ed.ERANK_FINAL_TOLERANCE:.0%}", per_view=True)
def _(run):
    """erank(U) at the end against erank(Γ⁻¹) (theory.parquet): the limit vU = Γ⁻¹ fixes U's spectrum up to scale."""
    target = theory_constant(run, "erank_gamma_inv")
    final = run.final(f"probe/erank/{ed.X_BLOCK}").values
    return Measurement(np.abs(final / target - 1), {"erank_final": final.tolist(), "erank_gamma_inv": target},
                       fmt={"target": target})
