"""Claims of classification-icl (spec claims 1–6), from the stored run only.

Bounds are fixed here, before any run: from the spec (OOD error ≤ 2e-2 once S₁ ≥ 1, the −2/3
exponent, attention → ≈ 1, a small group of about 15% of W_O's rows, ICL within 1 percentage
point of logistic regression) or, where the spec gives a shape without a number, stated here
(UNSEEN_MAX, the share window of the small group, PRUNE_FLAT, LARGEST_SLOPE). The curves they
read are `analysis/classification.py`; the claims of the main model read the `main` variant,
the iterations law the `alpha=<α>` variants.
"""

from __future__ import annotations

import numpy as np

from icldyn.analysis import classification as an
from icldyn.analysis.fits import fit_power_law
from icldyn.analysis.runs import final_values, metric_curve
from icldyn.claims import Above, Below, ClaimList, Judged, Measurement

SOURCE = "Li, Wang, Lu, Cui & Chen 2024 (arXiv 2402.15607)"
UNSEEN_MAX = 0.05          # claim 1: ε, the error on unseen in-domain tasks at l = 20
OOD_MAX = 0.02             # claim 2: error once S₁ ≥ 1 (the spec)
CONTEXT_ERROR = 0.02       # claim 3: the error the context length n*(α′) is counted to
LAW_EXPONENT = -2 / 3      # claim 3: iterations ∝ α^{−2/3}
LAW_MAX_WIDTH = 1.0        # claim 3: no verdict if the 95% interval is wider
MASS_MIN = 0.9             # claim 4: final same-pattern attention (slides: 0.96)
GAP_MIN = 2.0              # claim 4: sorted row norms jump by at least this factor between the groups
SMALL_SHARE = (0.05, 0.30)  # claim 4: the small group's share (slides: about 15%)
SMALL_CHANGE_MAX = 0.5     # claim 4: small rows stay within 50% of their initial norm
PLANE_MIN = 0.8            # claim 4: large rows' squared-norm share in span{(μ̄; 0), (0; q)}
PRUNE_FLAT = 0.01          # claim 5: error rise under smallest-first pruning up to the small share
LARGEST_SLOPE = 0.05       # claim 5: largest-first error rise ≥ LARGEST_SLOPE·R at every R > 0
LOGISTIC_MARGIN = 0.01     # claim 6: ICL ≤ logistic + 1 percentage point at α′ = 0.8, l = 20


def main_view(run):
    return run.variants.get("main", run) if run.variants else run


CLAIMS = ClaimList("classification-icl", views=lambda run: [("", main_view(run))])


def gpt_view(run):
    """The paper preset's `gpt` variant (the project's GPT on the same data), None when not trained."""
    return run.variants.get("gpt") if run.variants else None


GPT_ABSENT = ("not measured: this run has no `gpt` variant (only `--preset paper` trains the project's GPT, "
              "3 layers, 2 heads, on the same data)")


def _model(run, x_name, **conditions):
    return an.curve(main_view(run), "model", x_name, **conditions)


@CLAIMS.claim("unseen_tasks", "Trained on {n_train} of {n_tasks} tasks, the model classifies the unseen "
              "in-domain tasks: error at l = {l}, α = {alpha} (ε = {eps})", f"{SOURCE}, claim 1",
              Below(UNSEEN_MAX))
def _(run):
    r = main_view(run)
    rows = _model(run, "n_examples", split="unseen_at_alpha")
    c = r.config.task
    M = c.n_relevant
    n_train = c.n_train_tasks or min(3 * M, M * (M - 1))
    return Measurement(rows.sort_values("seed")["value"].to_numpy(),
                       fmt={"n_train": n_train, "n_tasks": M * (M - 1), "l": c.context_length, "alpha": c.alpha,
                            "eps": UNSEEN_MAX},
                       note=None if len(rows) else "no unseen tasks (task.n_train_tasks covers every task)",
                       details={"train_tasks_error": _model(run, "n_examples", split="train_at_alpha")["value"].tolist()})


def ood_small(view) -> Measurement:
    """Per seed, the worst OOD error at S₁ ≥ 1 of one trained model (a view of the run)."""
    rows = an.curve(view, "model", "S1", split="ood")
    high = rows[rows["x"] >= 1.0]
    per_seed = high.groupby("seed")["value"].max().to_numpy()
    return Measurement(per_seed, details={"by_S1": an.seed_mean(rows)["value"].to_dict()})


def ood_grows(view) -> Measurement:
    """The rise of the OOD error below S₁ = 1, and whether it is monotone (within one stderr)."""
    m = an.seed_mean(an.curve(view, "model", "S1", split="ood"))
    if len(m) < 2 or (m.index >= 1.0).sum() == 0 or (m.index < 1.0).sum() == 0:
        return Measurement(None, note="the S₁ sweep needs values on both sides of 1")
    v, se = m["value"].to_numpy(), m["stderr"].to_numpy()
    monotone = bool(np.all(v[1:] <= v[:-1] + np.hypot(se[1:], se[:-1])))
    high = m[m.index >= 1.0]
    rise = float(v[0] - high["value"].max())
    grows = rise > 2 * float(np.hypot(se[0], high["stderr"].max()))
    return Measurement(rise, passed=monotone and grows, details={"by_S1": m["value"].to_dict(), "monotone": monotone},
                       note=None if monotone and grows else ("not monotone in S₁" if not monotone else
                                                            "the error does not rise below S₁ = 1"))


OOD_SMALL = ("OOD tasks (patterns in the IDR span with coefficient sum S₁, irrelevant patterns rotated in the "
             "IDI span): error at l = 20 for S₁ ≥ 1 (worst S₁, worst seed)")
OOD_GROWS = ("The OOD error is non-increasing in S₁ (within one stderr) and grows as S₁ falls below 1 (error at "
             "the smallest S₁ minus the largest error at S₁ ≥ 1)")
OOD_GROWS_EXPECT = Judged("non-increasing within 1 stderr, and the difference > 2 stderr")


@CLAIMS.claim("ood_small_above_1", OOD_SMALL, f"{SOURCE}, claim 2 (slides' GPT-2 sweep)", Below(OOD_MAX))
def _(run):
    return ood_small(main_view(run))


@CLAIMS.claim("ood_grows_below_1", OOD_GROWS, f"{SOURCE}, claim 2", OOD_GROWS_EXPECT)
def _(run):
    return ood_grows(main_view(run))


@CLAIMS.claim("gpt_ood_small_above_1", f"GPT (3 layers, 2 heads): {OOD_SMALL}", f"{SOURCE}, claim 2 (slides' "
              "GPT-2 sweep: ≈ 2e-3 at S₁ = 1.3, 3.5e-3 at 1.1)", Below(OOD_MAX))
def _(run):
    view = gpt_view(run)
    return ood_small(view) if view is not None else Measurement([], note=GPT_ABSENT)


@CLAIMS.claim("gpt_ood_grows_below_1", f"GPT (3 layers, 2 heads): {OOD_GROWS}", f"{SOURCE}, claim 2 (slides' "
              "GPT-2 sweep: 1.3e-2, 2.3e-2, 4.5e-2 at S₁ = 0.9, 0.7, 0.5)", OOD_GROWS_EXPECT)
def _(run):
    view = gpt_view(run)
    return ood_grows(view) if view is not None else Measurement(None, note=GPT_ABSENT)


def context_needed(run) -> dict[float, float]:
    """n*(α′): the smallest context length on the grid where the model's error ≤ CONTEXT_ERROR (NaN: never)."""
    out = {}
    for alpha_test in main_view(run).config.alpha_tests:
        m = an.seed_mean(_model(run, "n_examples", split="unseen", alpha_test=float(alpha_test)))
        hit = m.index[m["value"].to_numpy() <= CONTEXT_ERROR]
        out[float(alpha_test)] = float(hit.min()) if len(hit) else float("nan")
    return out


@CLAIMS.claim("context_length_falls_with_alpha", "The context length needed for error ≤ {err} falls as α′ grows "
              "(∝ 1/α′): n*(min α′) / n*(max α′)", f"{SOURCE}, claim 3",
              Judged("n* non-increasing in α′ and n*(min α′) > n*(max α′)"))
def _(run):
    need = context_needed(run)
    alphas = sorted(need)
    n = np.array([need[a] for a in alphas])
    details = {"n_star": need, "n_star_times_alpha": {a: need[a] * a for a in alphas}}
    if len(alphas) < 2 or not np.isfinite(n).all():
        return Measurement(None, fmt={"err": CONTEXT_ERROR}, details=details,
                           note=f"the model's error does not reach {CONTEXT_ERROR} within the context grid at every α′")
    ok = bool(np.all(n[1:] <= n[:-1]) and n[0] > n[-1])
    return Measurement(float(n[0] / n[-1]), passed=ok, fmt={"err": CONTEXT_ERROR}, details=details)


def iterations(run) -> dict[float, float]:
    """{training α: steps to reach iterations_error on held-out training-task prompts}."""
    out = {}
    for name, sub in run.variants.items():
        if name.startswith("alpha="):
            steps = []
            for seed in sub.seeds:
                s, e = metric_curve(sub, "error/test", seed, axis="step")
                steps.append(an.steps_to_error(s, e, run.config.iterations_error))
            out[float(sub.config.task.alpha)] = float(np.mean(steps))
    return dict(sorted(out.items()))


@CLAIMS.claim("iterations_law", "The training iterations needed to reach error {err} grow like α^(−2/3): "
              "fitted exponent over α ∈ {alphas} (95% interval)", f"{SOURCE}, claim 3 (Thm)",
              Judged(f"{LAW_EXPONENT:.3f} inside the 95% interval (no verdict if wider than {LAW_MAX_WIDTH})"))
def _(run):
    it = iterations(run)
    fmt = {"err": run.config.iterations_error, "alphas": list(it)}
    finite = {a: s for a, s in it.items() if np.isfinite(s) and s > 0}
    if len(finite) < 4:
        return Measurement(None, fmt=fmt, details={"iterations": it},
                           note=f"fewer than 4 α runs reached error {run.config.iterations_error} (iterations: {it})")
    fit = fit_power_law(list(finite), list(finite.values()))
    lo, hi = fit["ci"]
    passed = None if hi - lo > LAW_MAX_WIDTH else bool(lo <= LAW_EXPONENT <= hi)
    note = (f"95% interval [{lo:.2f}, {hi:.2f}] wider than {LAW_MAX_WIDTH}: no verdict" if passed is None else
            None if passed else f"measured exponent {fit['exponent']:.2f}, 95% interval [{lo:.2f}, {hi:.2f}]")
    return Measurement(fit["exponent"], passed=passed, fmt=fmt, note=note,
                       details={"iterations": it, "ci": fit["ci"], "range": "α ∈ (0, 1] cannot span a decade"})


@CLAIMS.claim("attention_on_same_pattern", "The summed attention on context examples sharing the query's relevant "
              "pattern rises to ≈ 1 (final; initial {initial})", f"{SOURCE}, claim 4 (slides: 0.42 → 0.96)",
              Above(MASS_MIN))
def _(run):
    r = main_view(run)
    m = r.metric("probe/same_pattern_mass")
    initial = m[m["step"] == m["step"].min()]["value"].round(3).tolist() if len(m) else []
    return Measurement(final_values(r, "probe/same_pattern_mass"), fmt={"initial": initial})


def row_groups(r, seed_index: int = 0) -> dict:
    """wo_groups of one seed's final W_O row norms against their initial norms."""
    width = r.config.model.width
    final = np.array([final_values(r, f"probe/wo_norm/{i}")[seed_index] for i in range(width)])
    init = np.array([metric_curve(r, f"probe/wo_norm/{i}", r.seeds[seed_index], axis="step")[1][0]
                     for i in range(width)])
    return an.wo_groups(final, init)


@CLAIMS.claim("wo_two_groups", "W_O's rows split into a large group and a small group that stays near its "
              "initialisation: small share (slides: ≈ 15%)", f"{SOURCE}, claim 4",
              Judged(f"gap ratio ≥ {GAP_MIN}, small share in [{SMALL_SHARE[0]}, {SMALL_SHARE[1]}], small rows "
                     f"within {SMALL_CHANGE_MAX:.0%} of their initial norm"))
def _(run):
    r = main_view(run)
    if r.metric("probe/wo_norm/0").empty:
        return None
    groups = [row_groups(r, i) for i in range(len(r.seeds))]
    ok = all(g["gap_ratio"] >= GAP_MIN and SMALL_SHARE[0] <= g["small_share"] <= SMALL_SHARE[1]
             and g["small_change"] <= SMALL_CHANGE_MAX for g in groups)
    return Measurement(float(np.mean([g["small_share"] for g in groups])), passed=ok,
                       per_seed=[g["small_share"] for g in groups],
                       details={k: [g[k] for g in groups] for k in ("gap_ratio", "small_change")})


@CLAIMS.claim("wo_large_rows_mean_pattern_and_label", "Large rows of W_O·W_V have feature part ≈ μ̄ and label "
              "part ≈ ±q: mean share of their squared norm in span{{(μ̄; 0), (0; q)}}", f"{SOURCE}, claim 4",
              Above(PLANE_MIN))
def _(run):
    r = main_view(run)
    if r.metric("probe/wo_norm/0").empty:
        return None
    width, values = r.config.model.width, []
    for e in range(len(r.seeds)):
        large = sorted(set(range(width)) - set(row_groups(r, e)["small"]))
        cos = np.array([final_values(r, f"probe/wo_feature_cos/{i}")[e] for i in large])
        label = np.array([final_values(r, f"probe/wo_label/{i}")[e] for i in large])
        values.append(float(np.mean(cos ** 2 * (1 - label ** 2) + label ** 2)))
    return Measurement(values)


def prune_rise(run, order: str, split: str = "ood", metric: str = "error") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rates, rise over R = 0, stderr) of the seed-mean pruning curve of one order: the error's rise,
    or for metric `margin` the relative margin's fall (1 − margin ratio)."""
    m = an.seed_mean(_model(run, "prune_rate", split=split, order=order, metric=metric))
    v, se = m["value"].to_numpy(), m["stderr"].to_numpy()
    rise = v - v[0] if metric == "error" else v[0] - v
    return m.index.to_numpy(), rise, np.hypot(se, se[0])


def small_share(run) -> float:
    r = main_view(run)
    return float(np.mean([row_groups(r, e)["small_share"] for e in range(len(r.seeds))]))


def flat_rise(run, order: str = "smallest", metric: str = "error") -> float:
    """The largest rise under `order` pruning for R up to the small group's share (OOD prompts)."""
    rates, rise, _ = prune_rise(run, order, metric=metric)
    upto = rates <= small_share(run) + 1e-9
    # NaN (not measured) when no positive rate lies within the share: R = 0 alone says nothing
    return float(rise[upto].max()) if (upto & (rates > 0)).any() else float("nan")


@CLAIMS.claim("prune_smallest_flat", "Pruning W_O rows smallest first leaves the OOD error flat up to the small "
              "group's share ({share:.0%}): largest rise", f"{SOURCE}, claim 5", Below(PRUNE_FLAT))
def _(run):
    if _model(run, "prune_rate").empty:
        return None
    return Measurement([flat_rise(run)], fmt={"share": small_share(run)})


@CLAIMS.claim("prune_random_rises", "Random pruning raises the OOD error from the start: its rise at the small "
              "group's share minus smallest-first's", f"{SOURCE}, claim 5",
              Judged("> 0 by more than 2 stderr"))
def _(run):
    if _model(run, "prune_rate").empty:
        return None
    return random_excess(run, "error")


def random_excess(run, metric: str) -> Measurement:
    """Random pruning's rise at the small group's share minus smallest-first's; passes above 2 stderr."""
    rates, rise_r, se_r = prune_rise(run, "random", metric=metric)
    _, rise_s, se_s = prune_rise(run, "smallest", metric=metric)
    i = int(np.searchsorted(rates, small_share(run) - 1e-9)) if rates.size else 0
    i = min(max(i, 1), len(rates) - 1)
    diff = float(rise_r[i] - rise_s[i])
    return Measurement(diff, passed=diff > 2 * float(np.hypot(se_r[i], se_s[i])), details={"rate": float(rates[i])})


@CLAIMS.claim("prune_largest_linear", "Pruning largest first raises the OOD error at least linearly in R: "
              "min over R > 0 of rise/R", f"{SOURCE}, claim 5 (theory)", Above(LARGEST_SLOPE))
def _(run):
    if _model(run, "prune_rate").empty:
        return None
    slope, rise = rise_per_rate(run, "largest")
    return Measurement([slope], details={"rise": rise})


# The same three statements on the margin z·F (relative to the unpruned model): sign(F) is blind to
# the common rescaling that pruning near-copy rows causes, F itself is not (the theory's Ω(R) is a
# loss of F). Same bounds as the error claims, fixed before the run.
def _margin_rows_missing(run) -> bool:
    return _model(run, "prune_rate", metric="margin").empty


@CLAIMS.claim("prune_smallest_flat_margin", "Pruning W_O rows smallest first leaves the OOD margin z·F flat up to "
              "the small group's share ({share:.0%}): largest relative fall", f"{SOURCE}, claim 5 (F itself)",
              Below(PRUNE_FLAT))
def _(run):
    if _margin_rows_missing(run):
        return None
    return Measurement([flat_rise(run, metric="margin")], fmt={"share": small_share(run)})


@CLAIMS.claim("prune_random_rises_margin", "Random pruning lowers the OOD margin from the start: its relative fall "
              "at the small group's share minus smallest-first's", f"{SOURCE}, claim 5 (F itself)",
              Judged("> 0 by more than 2 stderr"))
def _(run):
    if _margin_rows_missing(run):
        return None
    return random_excess(run, "margin")


@CLAIMS.claim("prune_largest_linear_margin", "Pruning largest first lowers the OOD margin at least linearly in R: "
              "min over R > 0 of relative fall/R", f"{SOURCE}, claim 5 (theory, F itself)", Above(LARGEST_SLOPE))
def _(run):
    if _margin_rows_missing(run):
        return None
    slope, fall = rise_per_rate(run, "largest", metric="margin")
    return Measurement([slope], details={"fall": fall})


def rise_per_rate(run, order: str, metric: str = "error") -> tuple[float, dict]:
    """min over R > 0 of the OOD rise / R under `order` pruning, and the rises by R."""
    rates, rise, _ = prune_rise(run, order, metric=metric)
    pos = rates > 0
    return float(np.min(rise[pos] / rates[pos])), dict(zip(rates.tolist(), rise.tolist()))


def learner_errors(run, alpha_test: float) -> dict[str, dict[float, float]]:
    """{predictor: {n: seed-mean error}} on unseen tasks at α′."""
    out = {}
    for name in ("model", *an.LEARNERS):
        rows = an.curve(main_view(run), name, "n_examples", split="unseen", alpha_test=float(alpha_test))
        out[name] = an.seed_mean(rows)["value"].to_dict()
    return out


@CLAIMS.claim("icl_vs_learners_alpha_0.8", "At α′ = 0.8, l = 20: ICL within 1 percentage point of logistic "
              "regression or better, and better than both SVMs and both kNN (ICL − logistic)", f"{SOURCE}, claim 6",
              Judged(f"ICL − logistic ≤ {LOGISTIC_MARGIN} and ICL < SVMs, kNN"))
def _(run):
    errs = learner_errors(run, 0.8)
    if not errs["model"] or 20.0 not in errs["model"]:
        return Measurement(None, note="no α′ = 0.8 curve at l = 20")
    at = {k: v.get(20.0, np.nan) for k, v in errs.items()}
    ok = at["model"] - at["logistic"] <= LOGISTIC_MARGIN and all(
        at["model"] < at[k] for k in ("linear_svm", "rbf_svm", "nn_1", "nn_3"))
    return Measurement(float(at["model"] - at["logistic"]), passed=bool(ok), details={"errors_at_20": at})


@CLAIMS.claim("icl_best_alpha_0.6", "At α′ = 0.6, ICL has the lowest error of all predictors at every context "
              "length ≥ 10 (largest ICL − best learner)", f"{SOURCE}, claim 6", Judged("< 0 at every n ≥ 10"))
def _(run):
    errs = learner_errors(run, 0.6)
    ns = [n for n in errs["model"] if n >= 10]
    if not ns:
        return Measurement(None, note="no α′ = 0.6 curve at n ≥ 10")
    gaps = [errs["model"][n] - min(errs[k][n] for k in an.LEARNERS) for n in ns]
    return Measurement(float(max(gaps)), passed=bool(max(gaps) < 0), details={"gap_by_n": dict(zip(ns, gaps))})
