"""Claims of induction-ngram (spec claims 1–5) and induction-full (claim 6), from stored runs only.

Thresholds are fixed here, before any run. Losses are compared on one scale across the two
training losses: the fraction of the in-context unigram → oracle gap, (loss − oracle)/(unigram −
oracle), all measured on the same validation prompts of the same seed.
"""

from __future__ import annotations

import math

import numpy as np

from icldyn.claims import Claim, above, below
from icldyn.analysis import phases

SOURCE = "Chen, Sheen, Wang & Yang 2024 (arXiv 2409.10559)"

SELECTOR_MIN = 0.9          # claim 1: normalised c² of S* at the end
COPIER_MIN = 0.9            # claim 2: each S* head's positional mass on its parent offset
OUTSIDE_MAX = 0.02          # claim 2: loss rise from ablating a head outside S*, / the largest rise
A_SLOPE_MIN = 0.3           # claim 3: growth of a per decade of time over the last decade
A_RATIO = (0.5, 1.5)        # claim 3: last half-decade's slope / the half-decade before (log: 1)
GIH_GAP = 0.05              # claim 5: |loss − GIH| in units of the unigram → oracle gap
UNIGRAM_FRACTION = 0.25     # claim 5: (loss − oracle) / (unigram − oracle)
BAYES_GAP = 0.10            # claim 5: (loss − Bayes) / (unigram − oracle)
GENERALISATION_GAP = 0.1    # claim 5: |loss − GIH|/(unigram − GIH), code loss, every L and α
GENERALISATION_LEFT = 0.5   # claim 5: (loss − oracle)/(unigram − oracle) at every L, training α
PLATEAU_DECADES = 0.5       # claim 6: a flat stretch of the loss this long (phases.detect_plateaus)
EMERGENCE_DEPTH = 0.3       # claim 6: then a drop losing this fraction (phases.detect_drops)
ACCELERATION_MIN = 3.0      # claim 6: peak rate of loss decrease / the rate at the start
FULL_SELECTOR_MIN = 0.5     # claim 6: the subset the selector ends on holds a majority of c²


# -- reading the store -----------------------------------------------------------------------------
def stored_s_star(run) -> tuple[int, ...]:
    th = run.theory
    rows = th[th["name"].str.startswith("s_star/")].sort_values("name")
    return tuple(int(v) for v in rows["value"])


def theory_value(run, name: str) -> float:
    th = run.theory
    v = th.loc[th["name"] == name, "value"]
    return float(v.iloc[0]) if len(v) else float("nan")


def curve(run, name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(time, value) of one seed's metric, in step order."""
    m = run.metric(name)
    m = m[m["seed"] == seed].sort_values("step")
    return m["time"].to_numpy(), m["value"].to_numpy()


def final(run, name: str) -> np.ndarray:
    """Last value per seed, in seed order (NaN where missing)."""
    f = run.final(name)
    return np.array([float(f.get(s, np.nan)) for s in run.seeds])


def head_offsets(run, s_star) -> list[tuple[int, int]]:
    """(head, parent offset) for each offset of S* that has a head initialised on it (head o−1 ↔ offset o)."""
    H = run.config.model.n_heads
    return [(o - 1, o) for o in s_star if o - 1 < H]


def parent_mass(run, s_star, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean over the S* heads of the mass on their parent offsets, over time."""
    pairs = head_offsets(run, s_star)
    t, _ = curve(run, "probe/a", seed)
    vals = [curve(run, f"probe/rpe_mass/{h}/{o}", seed)[1] for h, o in pairs]
    return t, np.mean(vals, axis=0) if vals else np.full_like(t, np.nan)


def stage_curves(run, s_star, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    name = "+".join(str(s) for s in s_star)
    return {"selector": curve(run, f"probe/selector/{name}", seed),
            "copier": parent_mass(run, s_star, seed),
            "classifier": curve(run, "probe/a", seed)}


def stage_times(run, s_star) -> dict[str, list[float]]:
    """Per component, per seed: the time its progress (v − v₀)/(v_T − v₀) first reaches ½.

    a grows without bound, so its midpoint is taken against its value at the end of the run;
    a longer run can only move it later.
    """
    out: dict[str, list[float]] = {"selector": [], "copier": [], "classifier": []}
    for seed in run.seeds:
        for comp, (t, v) in stage_curves(run, s_star, seed).items():
            if len(v) < 3 or not np.isfinite(v).all() or v[-1] == v[0]:
                out[comp].append(float("nan"))
                continue
            progress = (v - v[0]) / (v[-1] - v[0])
            out[comp].append(phases.first_crossing(t, progress, 0.5, "up"))
    return out


def loss_scale(run, kind: str) -> np.ndarray:
    """unigram − oracle per seed on the validation prompts (the unit of the loss comparisons)."""
    return final(run, f"baseline/unigram/{kind}") - final(run, f"baseline/oracle/{kind}")


def a_growth(t: np.ndarray, a: np.ndarray) -> tuple[float, float]:
    """(slope of a per decade of t over the last decade, last half-decade's slope / the one before)."""
    keep = t > 0
    t, a = t[keep], a[keep]
    T = t[-1]

    def slope(lo, hi):
        sel = (t >= lo * (1 - 1e-9)) & (t <= hi * (1 + 1e-9))
        if sel.sum() < 3:
            return float("nan")
        return float(np.polyfit(np.log10(t[sel]), a[sel], 1)[0])

    last, late, before = slope(T / 10, T), slope(T / 10**0.5, T), slope(T / 10, T / 10**0.5)
    return last, (late / before if before and np.isfinite(before) and before > 0 else float("nan"))


# -- induction-ngram: claims 1–5 -------------------------------------------------------------------
def ngram_claims(run, views) -> list[Claim]:
    first = views[0][1]
    s_star = stored_s_star(first)
    if not s_star:
        return [Claim("s_star_is_parents", "Ĩ(S) was computed", SOURCE, None, "theory.parquet", None,
                      note="no theory.parquet rows: the run did not finish")]
    star = "+".join(str(s) for s in s_star)
    parents = list(first.config.task.parents)
    z = theory_value(first, "margin_z")
    ok = list(s_star) == parents and z > 3
    out = [Claim(
        "s_star_is_parents",
        f"S* = argmax_{{|S|≤{first.config.model.max_degree}}} Ĩ(S) is the true parent set {parents} "
        f"(paired z-score of Ĩ(S*) − Ĩ(runner-up), {first.config.info_draws} draws of π)",
        f"{SOURCE}, Thm (selection by modified χ² MI)", z, f"S* = {'+'.join(map(str, parents))} and z > 3",
        ok, "3 standard errors", [], None if ok else f"S* = {star}",
        {"s_star": star, "runner_up": _runner_up(first),
         "info_modified": _info(first, "modified"), "info_chi2": _info(first, "chi2")})]
    for sfx, r in views:
        out += _ngram_run_claims(r, sfx, s_star)
    return out


def _runner_up(run) -> str:
    info = _info(run, "modified")
    star = "+".join(str(s) for s in stored_s_star(run))
    rest = {k: v for k, v in info.items() if k != star}
    return max(rest, key=rest.get) if rest else star


def _info(run, kind: str) -> dict[str, float]:
    th = run.theory
    rows = th[th["name"].str.startswith(f"info/{kind}/") & ~th["name"].str.endswith("/stderr")]
    return {n.split("/")[-1]: float(v) for n, v in zip(rows["name"], rows["value"])}


def _ngram_run_claims(r, sfx: str, s_star) -> list[Claim]:
    c = r.config
    kind = c.model.loss
    star = "+".join(str(s) for s in s_star)
    loss_text = "−log(ŷ_y + ε)" if kind == "paper" else "softmax cross-entropy of ŷ (the authors' code)"
    out = []

    # 1. selector
    out.append(above(
        f"selector_on_s_star{sfx}",
        f"The selector's normalised c_S² concentrates on S* = {star} (final weight; loss {loss_text})",
        f"{SOURCE}, stage I", final(r, f"probe/selector/{star}"), SELECTOR_MIN,
        details={"final_weights": {n.split("/")[-1]: final(r, n).tolist()
                                   for n in sorted(set(r.metrics["name"])) if n.startswith("probe/selector/")}}))

    # 2. copier: parent mass of the S* heads; heads outside S* do not matter
    pairs = head_offsets(r, s_star)
    masses = np.array([final(r, f"probe/rpe_mass/{h}/{o}") for h, o in pairs])       # (heads, seeds)
    out.append(above(
        f"copier_on_parents{sfx}",
        f"Each S* head's RPE concentrates on its parent offset: min over heads {[h for h, _ in pairs]} "
        f"(offsets {[o for _, o in pairs]}) of the final attention mass",
        f"{SOURCE}, stage II", masses.min(0) if len(masses) else [], COPIER_MIN,
        details={f"head{h}_offset{o}": masses[k].tolist() for k, (h, o) in enumerate(pairs)}))
    H = c.model.n_heads
    inside = [h for h, _ in pairs]
    outside = [h for h in range(H) if h not in inside]
    rises = {h: final(r, f"probe/head_ablation/{h}") for h in range(H)}
    if outside and inside:
        ratio = np.max([rises[h] for h in outside], 0) / np.maximum(np.max([rises[h] for h in inside], 0), 1e-12)
        out.append(below(
            f"heads_outside_s_star_do_not_matter{sfx}",
            f"Heads outside S* ({outside}) do not matter: loss rise when one is made uniform, relative to "
            f"the largest rise from an S* head",
            f"{SOURCE}, stage II", ratio, OUTSIDE_MAX,
            details={f"rise_head{h}": v.tolist() for h, v in rises.items()}))

    # 3. classifier: a grows ~ log t
    slopes, ratios = [], []
    for seed in r.seeds:
        s, q = a_growth(*curve(r, "probe/a", seed))
        slopes.append(s)
        ratios.append(q)
    slopes, ratios = np.array(slopes), np.array(ratios)
    ok = bool(np.all(slopes > A_SLOPE_MIN) and np.all((ratios >= A_RATIO[0]) & (ratios <= A_RATIO[1])))
    # a flat a has no slope ratio (0/0): it fails on the slope alone
    measurable = bool(np.isfinite(slopes).all())
    note = None
    statement = (f"The classifier's a keeps growing, roughly logarithmically in time (loss {loss_text}): "
                 "growth of a per decade of time over the last decade")
    if kind == "paper":
        best_a = final(r, "probe/gih_best_a/paper")
        statement += (" — spec claim 3 as stated holds for the bounded code loss (the [code] run); under the "
                      "true cross-entropy −log ŷ a finite a is optimal, so this run is expected to level off")
        if measurable and not ok:
            note = (f"a levels off at {np.round(final(r, 'probe/a'), 2).tolist()}: a result, not a bug. Under "
                    "−log ŷ at finite L a sharper induction head pays a large loss whenever the target never "
                    "followed the matching history, so a has a finite optimum; independently of the model, "
                    f"the best GIH(S*, a) on the validation prompts under this loss has a = "
                    f"{np.round(best_a, 2).tolist()}. The bounded code loss has no such penalty and a grows "
                    "∝ log t there (compare the [code] run).")
    out.append(Claim(
        f"a_grows_logarithmically{sfx}", statement,
        f"{SOURCE}, stage III", float(slopes.min()) if measurable else None,
        f"> {A_SLOPE_MIN} per decade, and the last half-decade's slope / the previous one in "
        f"[{A_RATIO[0]}, {A_RATIO[1]}] (1 for a ∝ log t)",
        ok if measurable else None, None, slopes.tolist(),
        note if measurable else "a(t) has too few records in the last decade",
        {"slope_ratio": ratios.tolist(), "final_a": final(r, "probe/a").tolist()}))

    # 4. stage order
    times = stage_times(r, s_star)
    t_sel, t_cop, t_cls = (np.array(times[k]) for k in ("selector", "copier", "classifier"))
    sep = np.minimum(t_cop / t_sel, t_cls / t_cop)
    out.append(above(
        f"stage_order{sfx}",
        "Three stages in the order selector → copier → classifier: the smaller of t_copier/t_selector "
        "and t_classifier/t_copier, t = when each reaches half of its change (selector weight of S*, "
        "parent mass of the S* heads, a)",
        f"{SOURCE}, three-stage dynamics", sep, 1.0,
        details={"t_selector": t_sel.tolist(), "t_copier": t_cop.tolist(), "t_classifier": t_cls.tolist(),
                 "rises": _rises(r, s_star)}))

    # 5. final validation loss against every baseline
    scale = loss_scale(r, kind)
    val = final(r, f"loss/val/{kind}")
    table = {f"{name}/{k}": final(r, f"baseline/{name}/{k}").tolist()
             for name in ("unigram", "ngram_bayes", "gih", "gih_model_a", "gih_best_a", "oracle")
             for k in ("paper", "code")}
    table["a_of_best_gih"] = final(r, f"probe/gih_best_a/{kind}").tolist()
    table["model_a"] = final(r, "probe/a").tolist()
    table.update({f"model/{k}": final(r, f"loss/val/{k}").tolist() for k in ("paper", "code")})
    eps = c.model.loss_eps
    out.append(below(
        f"val_at_gih_level{sfx}",
        f"Final validation loss reaches the generalized-induction-head level: |loss − GIH| in units of "
        f"the unigram → oracle gap, GIH on S* = {star} with the best a on these prompts (a → ∞ included)",
        f"{SOURCE}, Thm (GIH)", np.abs(val - final(r, f"baseline/gih_best_a/{kind}")) / scale, GIH_GAP,
        note=f"the paper loss floors ŷ at ε = {eps:g}: an a → ∞ GIH costs −log ε = {-math.log(eps):.1f} "
             "on a target that never followed the matching history, so its best a is finite" if kind == "paper"
        else None,
        details={"losses": table}))
    out.append(below(
        f"val_far_below_unigram{sfx}",
        "Final validation loss is well below the in-context unigram: (loss − oracle)/(unigram − oracle)",
        SOURCE, (val - final(r, f"baseline/oracle/{kind}")) / scale, UNIGRAM_FRACTION))
    out.append(below(
        f"val_close_to_bayes{sfx}",
        "Final validation loss is close to the Bayes n-gram predictor with the true parents: "
        "(loss − Bayes)/(unigram − oracle)",
        SOURCE, (val - final(r, f"baseline/ngram_bayes/{kind}")) / scale, BAYES_GAP))
    out.append(_generalisation_claim(r, sfx, kind))
    return out


def _rises(r, s_star) -> dict:
    """Sharp rises (phases.detect_rises) of each component's progress, seed 0: start, end, midpoint."""
    out = {}
    for comp, (t, v) in stage_curves(r, s_star, r.seeds[0]).items():
        try:
            found = phases.detect_rises(t, (v - v[0]) / (v[-1] - v[0])) if v[-1] != v[0] else []
        except (ValueError, FloatingPointError):
            found = []
        out[comp] = [{"start": d.start, "end": d.end, "midpoint": d.midpoint} for d in found]
    return out


def _generalisation_claim(r, sfx: str, kind: str) -> Claim:
    """The model against the GIH(S*, a → ∞) in the bounded code loss at every L and α, whatever
    loss it was trained on (spec claim 5's first option): |loss − GIH| in units of the unigram →
    GIH gap, so an untrained model (≈ the unigram) sits at 1 and a GIH sits at 0. The reference
    owes nothing to the trained model (the GIH with the model's own a would follow an untrained
    a ≈ 0 to the unigram); the paper-loss gap to that GIH is reported in the details. Whether the
    model beats the unigram is required at the training α and reported elsewhere: with few
    examples under a flatter prior a sharp induction head is overconfident under −log ŷ."""
    c = r.config
    cv = r.curves
    if cv.empty:
        return Claim(f"generalises{sfx}", "Generalisation to other L and α", SOURCE, None, "curves.parquet", None,
                     note="no curves.parquet: the run did not finish")
    alphas = list(dict.fromkeys([float(c.task.alpha), float(c.generalisation_alpha)]))
    worst = np.full(len(r.seeds), -np.inf)
    left = np.full(len(r.seeds), -np.inf)   # (loss − oracle)/(unigram − oracle) at the training α
    behind_unigram, detail, own_a = [], {}, {}

    def get(name, loss, alpha, seed=None):
        rows = cv[cv["predictor"] == f"{name}/{loss}/alpha={alpha:g}"]
        if seed is not None:
            rows = rows[rows["seed"] == seed]
        return rows.groupby("x")["value"].mean()

    for alpha in alphas:
        gih, uni_code = get("gih", "code", alpha), get("unigram", "code", alpha)
        uni = get("unigram", kind, alpha)
        for e, seed in enumerate(r.seeds):
            model = get("model", "code", alpha, seed)
            gap = (model - gih).abs() / (uni_code - gih)
            worst[e] = max(worst[e], float(gap.max()))
            own = get("model", kind, alpha, seed)
            behind_unigram += [f"α={alpha:g}, L={L}" for L in own.index if own[L] >= uni[L]]
            if alpha == alphas[0]:
                left[e] = float(((own - get("oracle", kind, alpha)) / (uni - get("oracle", kind, alpha))).max())
            detail[f"alpha={alpha:g}/seed={seed}"] = {int(L): round(float(g), 4) for L, g in gap.items()}
            if kind == "paper":
                ref = get("gih_model_a", "paper", alpha, seed)
                own_a[f"alpha={alpha:g}/seed={seed}"] = {int(L): round(float(g), 4)
                                                         for L, g in ((own - ref).abs() / ref).items()}
    m = float(worst.max())
    behind = sorted(set(behind_unigram))
    ok = bool(m < GENERALISATION_GAP and left.max() < GENERALISATION_LEFT)
    details = {"code_gap_in_unigram_to_gih_units_by_L": detail,
               "unigram_oracle_fraction_at_training_alpha": left.tolist(), "model_not_below_unigram_at": behind}
    if own_a:
        details["paper_relative_gap_to_gih_with_model_a_by_L"] = own_a
    return Claim(
        f"generalises{sfx}",
        f"Trained at L = {c.task.n_points}, α = {c.task.alpha:g} (loss {kind}), the model predicts as the "
        f"GIH(S*, a → ∞) for L ∈ {list(c.generalisation_lengths)} and α ∈ {alphas}: worst |loss − GIH| in "
        "the bounded code loss, in units of the unigram → GIH gap (0: the GIH, 1: the unigram)",
        f"{SOURCE}, generalisation", m,
        f"< {GENERALISATION_GAP}, and (loss − oracle)/(unigram − oracle) < {GENERALISATION_LEFT} at every L "
        f"at the training α ({kind} loss)", ok, None, worst.tolist(),
        f"under the {kind} loss the model does not beat the in-context unigram at {', '.join(behind)}"
        if behind else None, details)


# -- induction-full: claim 6 -----------------------------------------------------------------------
def plateau_then_emergence(t: np.ndarray, y: np.ndarray) -> dict:
    """The first plateau (≥ PLATEAU_DECADES) followed by a drop (depth ≥ EMERGENCE_DEPTH), and the
    acceleration: the largest rate of loss decrease between records over the rate at the start.

    On a log time axis any curve L₀ − g·t looks flat at small t and then drops, so a plateau in
    log time alone is no evidence of one; a genuine plateau followed by emergence is a loss that
    falls much faster later than it did at the start (an escape from near a saddle)."""
    keep = np.isfinite(y)
    t, y = t[keep], y[keep]
    rate = -np.diff(y) / np.diff(t)
    accel = float(rate.max() / rate[0]) if rate.size and rate[0] > 0 else float("inf") if rate.size else float("nan")
    try:
        plateaus = phases.detect_plateaus(t, y, min_decades=PLATEAU_DECADES)
        drops = phases.detect_drops(t, y, min_depth=EMERGENCE_DEPTH)
    except ValueError:  # too few records to judge
        plateaus, drops = [], []
    pair = None
    for p in plateaus:
        after = [d for d in drops if d.start >= p.start and d.midpoint > p.end * 0.999]
        if after:
            pair = (p, after[0])
            break
    return {"acceleration": accel, "plateau": None if pair is None else (pair[0].start, pair[0].end, pair[0].value),
            "drop": None if pair is None else (pair[1].start, pair[1].end, pair[1].depth, pair[1].midpoint)}


def full_claims(run, views) -> list[Claim]:
    out = []
    for sfx, r in views:
        s_star = stored_s_star(r)
        star = "+".join(str(s) for s in s_star)
        found = [plateau_then_emergence(*curve(r, "loss/train", seed)) for seed in r.seeds]
        accel = np.array([f["acceleration"] for f in found])
        ok = [f["plateau"] is not None and a >= ACCELERATION_MIN for f, a in zip(found, accel)]
        out.append(Claim(
            f"full_plateau_then_emergence{sfx}",
            "Full model: the training loss sits on a plateau, then drops (emergence): peak rate of loss "
            "decrease / the rate at the start (a plateau in log time alone is what any smooth start shows)",
            f"{SOURCE}, appendix (full model)", float(np.nanmin(accel)) if np.isfinite(accel).any() else None,
            f"> {ACCELERATION_MIN}, after a plateau ≥ {PLATEAU_DECADES} decades followed by a drop of ≥ "
            f"{EMERGENCE_DEPTH:.0%} (analysis.phases)", bool(all(ok)), None, accel.tolist(),
            None if all(ok) else _full_note(found, accel, [curve(r, "loss/train", r.seeds[0])]),
            {"per_seed": found, "optimizer": r.config.train.optimizer, "lr": r.config.train.lr,
             "val_losses": {n: final(r, n).tolist() for n in (
                 f"loss/val/{r.config.model.loss}", f"baseline/unigram/{r.config.model.loss}",
                 f"baseline/gih/{r.config.model.loss}", f"baseline/gih_model_a/{r.config.model.loss}",
                 f"baseline/ngram_bayes/{r.config.model.loss}")}}))
        names = [n.split("/")[-1] for n in sorted(set(r.metrics["name"])) if n.startswith("probe/selector/")]
        weights = np.array([final(r, f"probe/selector/{n}") for n in names])          # (subsets, seeds)
        # a subset "ends on" only with a majority of c²: tied weights (an untrained selector) end on none
        ends = [names[k] if weights[k, e] > FULL_SELECTOR_MIN else "none"
                for e, k in enumerate(weights.argmax(0))] if weights.size else []
        star_w = weights[names.index(star)] if star in names else np.array([])
        ok = bool(len(star_w) and all(e == star for e in ends))
        out.append(Claim(
            f"full_selector_subset{sfx}",
            f"Full model: the selector ends on S* = {star} (which subset it ends on is reported); "
            "measured: final normalised c² of S*",
            f"{SOURCE}, appendix (full model)", float(star_w.min()) if len(star_w) else None,
            f"> {FULL_SELECTOR_MIN} (a majority), and the largest", ok, None, star_w.tolist(),
            None if ok else f"ends on {', '.join(ends) or 'nothing measured'} (none: no subset holds a majority)",
            {"ends_on": ends, "final_weights": {n: weights[k].tolist() for k, n in enumerate(names)}}))
    return out


def _full_note(found, accel, curves=()) -> str:
    if all(f["plateau"] is None for f in found):
        text = "no plateau followed by a drop was found in the training loss"
    else:
        text = (f"the loss shows a log-time plateau and drop, but it falls at most {np.nanmax(accel):.2g}× faster "
                "than at the start: a smooth descent seen on a log axis, not an escape from a plateau")
    for t, y in curves[:1]:
        keep = np.isfinite(y)
        t, y = t[keep], y[keep]
        if len(t) < 3:
            break
        rate = -np.diff(y) / np.diff(t)
        k = int(np.argmax(rate))
        done = float(t[np.argmax(y - y[-1] <= 0.1 * (y[0] - y[-1]))])
        text += (f". First seed: the loss falls from the first step (rate {rate[0]:.3g} per unit time), fastest at "
                 f"t ≈ {t[k + 1]:.3g} ({rate[k]:.3g}), and has made 90% of its drop by t ≈ {done:.3g} of "
                 f"{t[-1]:.3g}; likely because the RPE init (mass 0.57 on each head's offset) already makes K informative, leaving no saddle to escape")
    return text
