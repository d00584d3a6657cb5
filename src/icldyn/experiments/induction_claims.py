"""Claims of induction-ngram (spec claims 1–5) and induction-full (claim 6), from stored runs only.

Thresholds are fixed here, before any run. Losses are compared on one scale across the two
training losses: the fraction of the in-context unigram → oracle gap, (loss − oracle)/(unigram −
oracle), all measured on the same validation prompts of the same seed. The curve analysis they
read (S*, stage times, a's growth, the plateau test, the generalisation gaps) is `analysis/induction.py`.
Per-view claims are measured on each training loss's run: `[paper]`/`[code]` (`loss_views`).
"""

from __future__ import annotations

import math

import numpy as np

from icldyn.analysis import induction as an
from icldyn.analysis.induction import EMERGENCE_ACCELERATION, EMERGENCE_DEPTH, PLATEAU_DECADES
from icldyn.analysis.runs import final_values as final
from icldyn.analysis.runs import metric_curve
from icldyn.claims import Above, Below, Claim, ClaimList, Judged, Measurement

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
ACCELERATION_MIN = EMERGENCE_ACCELERATION  # claim 6: 3.0, peak rate of loss decrease / the rate at the start
FULL_SELECTOR_MIN = 0.5     # claim 6: the subset the selector ends on holds a majority of c²

NGRAM = ClaimList("induction-ngram", views=an.loss_views)
FULL = ClaimList("induction-full", views=an.loss_views)


def _loss_text(r) -> str:
    return "−log(ŷ_y + ε)" if r.config.model.loss == "paper" else "softmax cross-entropy of ŷ (the authors' code)"


# -- induction-ngram: claims 1–5 -------------------------------------------------------------------
@NGRAM.claim("s_star_is_parents",
             "S* = argmax_{{|S|≤{max_degree}}} Ĩ(S) is the true parent set {parents} (paired z-score of "
             "Ĩ(S*) − Ĩ(runner-up), {draws} draws of π)",
             f"{SOURCE}, Thm (selection by modified χ² MI)", Judged("S* = the parents and z > 3"),
             tolerance="3 standard errors")
def _(run):
    first = an.loss_views(run)[0][1]
    s_star = an.stored_s_star(first)
    if not s_star:
        return Claim("s_star_is_parents", "Ĩ(S) was computed", SOURCE, None, "theory.parquet", None,
                     note="no theory.parquet rows: the run did not finish")
    c, parents, star = first.config, list(first.config.task.parents), an.subset_label(s_star)
    ok = list(s_star) == parents and an.margin_z(first) > 3
    return Measurement(
        an.margin_z(first), passed=ok, note=None if ok else f"S* = {star}",
        fmt={"max_degree": c.model.max_degree, "parents": parents, "draws": c.info_draws},
        expect=Judged(f"S* = {an.subset_label(parents)} and z > 3"),
        details={"s_star": star, "runner_up": an.runner_up(first),
                 "info_modified": an.information(first, "modified"), "info_chi2": an.information(first, "chi2")})


@NGRAM.claim("selector_on_s_star", "The selector's normalised c_S² concentrates on S* = {star} (final weight; "
             "loss {loss})", f"{SOURCE}, stage I", Above(SELECTOR_MIN), per_view=True)
def _(r):
    if not (s_star := an.stored_s_star(r)):
        return None
    star = an.subset_label(s_star)
    return Measurement(final(r, f"probe/selector/{star}"), fmt={"star": star, "loss": _loss_text(r)},
                       details={"final_weights": {n: final(r, f"probe/selector/{n}").tolist()
                                                  for n in an.selector_subsets(r)}})


@NGRAM.claim("copier_on_parents", "Each S* head's RPE concentrates on its parent offset: min over heads {heads} "
             "(offsets {offsets}) of the final attention mass", f"{SOURCE}, stage II", Above(COPIER_MIN),
             per_view=True)
def _(r):
    if not (s_star := an.stored_s_star(r)):
        return None
    pairs = an.head_offsets(r, s_star)
    masses = np.array([final(r, f"probe/rpe_mass/{h}/{o}") for h, o in pairs])       # (heads, seeds)
    return Measurement(masses.min(0) if len(masses) else [],
                       fmt={"heads": [h for h, _ in pairs], "offsets": [o for _, o in pairs]},
                       details={f"head{h}_offset{o}": masses[k].tolist() for k, (h, o) in enumerate(pairs)})


@NGRAM.claim("heads_outside_s_star_do_not_matter", "Heads outside S* ({outside}) do not matter: loss rise when "
             "one is made uniform, relative to the largest rise from an S* head", f"{SOURCE}, stage II",
             Below(OUTSIDE_MAX), per_view=True)
def _(r):
    inside = [h for h, _ in an.head_offsets(r, an.stored_s_star(r))]
    outside = [h for h in range(r.config.model.n_heads) if h not in inside]
    if not (outside and inside):
        return None
    rises = {h: final(r, f"probe/head_ablation/{h}") for h in range(r.config.model.n_heads)}
    ratio = np.max([rises[h] for h in outside], 0) / np.maximum(np.max([rises[h] for h in inside], 0), 1e-12)
    return Measurement(ratio, fmt={"outside": outside}, details={f"rise_head{h}": v.tolist() for h, v in rises.items()})


A_STATEMENT = ("The classifier's a keeps growing, roughly logarithmically in time (loss {loss}): growth of a per "
               "decade of time over the last decade")


@NGRAM.claim("a_grows_logarithmically", A_STATEMENT, f"{SOURCE}, stage III",
             Judged(f"> {A_SLOPE_MIN} per decade, and the last half-decade's slope / the previous one in "
                    f"[{A_RATIO[0]}, {A_RATIO[1]}] (1 for a ∝ log t)"), per_view=True)
def _(r):
    if not an.stored_s_star(r):
        return None
    slopes, ratios = np.array([an.a_growth(*metric_curve(r, "probe/a", seed)) for seed in r.seeds]).T
    ok = bool(np.all(slopes > A_SLOPE_MIN) and np.all((ratios >= A_RATIO[0]) & (ratios <= A_RATIO[1])))
    # a flat a has no slope ratio (0/0): it fails on the slope alone
    measurable = bool(np.isfinite(slopes).all())
    statement = None
    note = None if measurable else "a(t) has too few records in the last decade"
    if r.config.model.loss == "paper":
        statement = (A_STATEMENT.format(loss=_loss_text(r)) + " — spec claim 3 as stated holds for the "
                     "bounded code loss (the [code] run); under the true cross-entropy −log ŷ a finite a is "
                     "optimal, so this run is expected to level off")
        if measurable and not ok:
            note = (f"a levels off at {np.round(final(r, 'probe/a'), 2).tolist()}: a result, not a bug. Under "
                    "−log ŷ at finite L a sharper induction head pays a large loss whenever the target never "
                    "followed the matching history, so a has a finite optimum; independently of the model, "
                    f"the best GIH(S*, a) on the validation prompts under this loss has a = "
                    f"{np.round(final(r, 'probe/gih_best_a/paper'), 2).tolist()}. The bounded code loss has no "
                    "such penalty and a grows ∝ log t there (compare the [code] run).")
    return Measurement(float(slopes.min()) if measurable else None, passed=ok, per_seed=slopes.tolist(), note=note,
                       fmt={"loss": _loss_text(r)}, statement=statement,
                       details={"slope_ratio": ratios.tolist(), "final_a": final(r, "probe/a").tolist()})


@NGRAM.claim("stage_order", "Three stages in the order selector → copier → classifier: the smaller of "
             "t_copier/t_selector and t_classifier/t_copier, t = when each reaches half of its change (selector "
             "weight of S*, parent mass of the S* heads, a)", f"{SOURCE}, three-stage dynamics", Above(1.0),
             per_view=True)
def _(r):
    if not (s_star := an.stored_s_star(r)):
        return None
    times = an.stage_times(r, s_star)
    t_sel, t_cop, t_cls = (np.array(times[k]) for k in an.STAGES)
    return Measurement(np.minimum(t_cop / t_sel, t_cls / t_cop),
                       details={"t_selector": t_sel.tolist(), "t_copier": t_cop.tolist(),
                                "t_classifier": t_cls.tolist(), "rises": an.stage_rises(r, s_star)})


def _relative_val(r, reference: str, absolute: bool = False) -> np.ndarray:
    """(final validation loss − a baseline's) / (unigram − oracle), per seed, in the run's training loss."""
    kind = r.config.model.loss
    diff = final(r, f"loss/val/{kind}") - final(r, f"baseline/{reference}/{kind}")
    return (np.abs(diff) if absolute else diff) / an.loss_scale(r, kind)


def _loss_table(r) -> dict:
    kind = r.config.model.loss
    table = {f"{name}/{k}": final(r, f"baseline/{name}/{k}").tolist()
             for name in ("unigram", "ngram_bayes", "gih", "gih_model_a", "gih_best_a", "oracle")
             for k in ("paper", "code")}
    table["a_of_best_gih"] = final(r, f"probe/gih_best_a/{kind}").tolist()
    table["model_a"] = final(r, "probe/a").tolist()
    table.update({f"model/{k}": final(r, f"loss/val/{k}").tolist() for k in ("paper", "code")})
    return table


@NGRAM.claim("val_at_gih_level", "Final validation loss reaches the generalized-induction-head level: |loss − GIH| "
             "in units of the unigram → oracle gap, GIH on S* = {star} with the best a on these prompts (a → ∞ "
             "included)", f"{SOURCE}, Thm (GIH)", Below(GIH_GAP), per_view=True)
def _(r):
    if not (s_star := an.stored_s_star(r)):
        return None
    eps = r.config.model.loss_eps
    note = (f"the paper loss floors ŷ at ε = {eps:g}: an a → ∞ GIH costs −log ε = {-math.log(eps):.1f} on a target "
            "that never followed the matching history, so its best a is finite") if r.config.model.loss == "paper" \
        else None
    return Measurement(_relative_val(r, "gih_best_a", absolute=True), fmt={"star": an.subset_label(s_star)},
                       note=note, details={"losses": _loss_table(r)})


@NGRAM.claim("val_far_below_unigram", "Final validation loss is well below the in-context unigram: (loss − "
             "oracle)/(unigram − oracle)", SOURCE, Below(UNIGRAM_FRACTION), per_view=True)
def _(r):
    return Measurement(_relative_val(r, "oracle")) if an.stored_s_star(r) else None


@NGRAM.claim("val_close_to_bayes", "Final validation loss is close to the Bayes n-gram predictor with the true "
             "parents: (loss − Bayes)/(unigram − oracle)", SOURCE, Below(BAYES_GAP), per_view=True)
def _(r):
    return Measurement(_relative_val(r, "ngram_bayes")) if an.stored_s_star(r) else None


@NGRAM.claim("generalises", "Trained at L = {L}, α = {alpha:g} (loss {kind}), the model predicts as the GIH(S*, "
             "a → ∞) for L ∈ {lengths} and α ∈ {alphas}: worst |loss − GIH| in the bounded code loss, in units "
             "of the unigram → GIH gap (0: the GIH, 1: the unigram)", f"{SOURCE}, generalisation",
             Judged(f"< {GENERALISATION_GAP}, and (loss − oracle)/(unigram − oracle) < {GENERALISATION_LEFT} at "
                    "every L at the training α"), per_view=True)
def _(r):
    """The model against the GIH(S*, a → ∞) in the bounded code loss at every L and α, whatever
    loss it was trained on (spec claim 5's first option): an untrained model (≈ the unigram) sits
    at 1 and a GIH at 0. The reference owes nothing to the trained model (the GIH with the model's
    own a would follow an untrained a ≈ 0 to the unigram); the paper-loss gap to that GIH is
    reported in the details. Whether the model beats the unigram is required at the training α and
    reported elsewhere: with few examples under a flatter prior a sharp induction head is
    overconfident under −log ŷ."""
    if not an.stored_s_star(r):
        return None
    c, kind = r.config, r.config.model.loss
    if r.curves.empty:
        return Claim("generalises", "Generalisation to other L and α", SOURCE, None,  # the list adds the view suffix
                     "curves.parquet", None, note="no curves.parquet: the run did not finish")
    g = an.generalisation_gaps(r, kind)
    details = {"code_gap_in_unigram_to_gih_units_by_L": g["by_L"],
               "unigram_oracle_fraction_at_training_alpha": g["left"].tolist(),
               "model_not_below_unigram_at": g["behind"]}
    if g["own_a"]:
        details["paper_relative_gap_to_gih_with_model_a_by_L"] = g["own_a"]
    return Measurement(
        float(g["worst"].max()), per_seed=g["worst"].tolist(), details=details,
        passed=bool(g["worst"].max() < GENERALISATION_GAP and g["left"].max() < GENERALISATION_LEFT),
        note=f"under the {kind} loss the model does not beat the in-context unigram at {', '.join(g['behind'])}"
        if g["behind"] else None,
        fmt={"L": c.task.n_points, "alpha": c.task.alpha, "kind": kind, "lengths": list(c.generalisation_lengths),
             "alphas": an.generalisation_alphas(r)},
        expect=Judged(f"< {GENERALISATION_GAP}, and (loss − oracle)/(unigram − oracle) < {GENERALISATION_LEFT} at "
                      f"every L at the training α ({kind} loss)"))


# -- induction-full: claim 6 -----------------------------------------------------------------------
PLATEAU_EXPECTED = (f"> {ACCELERATION_MIN}, after a plateau ≥ {PLATEAU_DECADES} decades followed by a drop of ≥ "
                    f"{EMERGENCE_DEPTH:.0%} (analysis.phases)")


@FULL.claim("full_plateau_then_emergence", "Full model: the training loss sits on a plateau, then drops "
            "(emergence): peak rate of loss decrease / the rate at the start (a plateau in log time alone is "
            "what any smooth start shows)", f"{SOURCE}, appendix (full model)", Judged(PLATEAU_EXPECTED),
            per_view=True)
def _(r):
    found = [an.plateau_then_emergence(*metric_curve(r, "loss/train", seed)) for seed in r.seeds]
    accel = np.array([f["acceleration"] for f in found])
    ok = all(f["plateau"] is not None and a >= ACCELERATION_MIN for f, a in zip(found, accel))
    kind = r.config.model.loss
    m = r.config.model
    details = {"per_seed": found, "optimizer": r.config.train.optimizer, "lr": r.config.train.lr,
               "ingredients": {"fidelity": m.fidelity, "loss": m.loss, "w_plus": m.w_plus, "w_minus": m.w_minus,
                               "norm": getattr(m, "norm", None)},
               "val_losses": {n: final(r, n).tolist() for n in (
                   f"loss/val/{kind}", f"baseline/unigram/{kind}", f"baseline/gih/{kind}",
                   f"baseline/gih_model_a/{kind}", f"baseline/ngram_bayes/{kind}")}}
    note = None if ok else _full_note(found, accel, metric_curve(r, "loss/train", r.seeds[0]), m.fidelity == "code")
    note = _with_ingredients(r, note)
    if not np.isfinite(accel).any():  # not measured, but a verdict all the same (no plateau and drop found)
        spec = next(s for s in FULL.specs if s.id == "full_plateau_then_emergence")
        return Claim(spec.id, spec.statement, spec.source, None, PLATEAU_EXPECTED, ok,
                     None, accel.tolist(), note, details)
    return Measurement(float(np.nanmin(accel)), passed=ok, per_seed=accel.tolist(), note=note, details=details)


def _full_note(found, accel, first_curve, code: bool = False) -> str:
    if all(f["plateau"] is None for f in found):
        text = "no plateau followed by a drop was found in the training loss"
    else:
        text = (f"the loss shows a log-time plateau and drop, but it falls at most {np.nanmax(accel):.2g}× faster "
                "than at the start: a smooth descent seen on a log axis, not an escape from a plateau")
    d = an.descent_summary(*first_curve)
    t, y = first_curve
    after = y[t > 0]
    if d is not None and len(after) > 1 and (after[0] - after[-1]) / after[0] < an.FLAT_FRACTION:
        text += (f". First seed: a stall that lasts the run — after the first update ({y[0]:.4g} → {after[0]:.4g}) "
                 f"the loss falls only {(after[0] - after[-1]) / after[0]:.2%} by t = {t[-1]:.3g} "
                 f"(< {an.FLAT_FRACTION:.0%}: flat, no drop yet)")
    elif d is not None:
        text += (f". First seed: the loss falls from the first step (rate {d['initial_rate']:.3g} per unit time), "
                 f"fastest at t ≈ {d['t_fastest']:.3g} ({d['fastest_rate']:.3g}), and has made 90% of its drop by "
                 f"t ≈ {d['t_90']:.3g} of {d['t_end']:.3g}; likely because the RPE init already makes K "
                 "informative, leaving no saddle to escape")
    return text + (" (code-faithful run: the authors' loss, init, windows and selector together; which "
                   "ingredient makes the stall: `induction-full --preset ingredients`, claim "
                   "full_plateau_ingredient)" if code else "")


def _with_ingredients(r, note):
    """In the authors' run of an `ingredients` sweep (view `[code]`), the note also gives the
    sweep's measured answer: which ingredients switched off alone end the stall, which switched on
    alone make one (analysis.induction.ingredient_answer)."""
    if r.path.parent.name != "variants" or r.path.name != "ingredient=code":
        return note
    from icldyn.store import load_run

    ans = an.ingredient_answer(load_run(r.path.parent.parent, r.parse_config))
    if ans is None:
        return note
    ing = ans["ingredients"]
    pick = lambda key: ", ".join(x for x, v in ing.items() if v[key]) or "none"  # noqa: E731
    text = (f"single-ingredient runs of this sweep (stall: loss falls < 5% from epoch 1, or a plateau then a "
            f"drop): the authors' run {'stalls' if ans['code_stalls'] else 'does not stall'}; switched off alone, "
            f"{pick('necessary')} end(s) it; switched on alone in the paper model, {pick('sufficient')} make(s) one")
    return f"{note}. {text}" if note else text


@FULL.claim("full_selector_subset", "Full model: the selector ends on S* = {star} (which subset it ends on is "
            "reported); measured: final normalised c² of S*", f"{SOURCE}, appendix (full model)",
            Judged(f"> {FULL_SELECTOR_MIN} (a majority), and the largest"), per_view=True)
def _(r):
    star = an.subset_label(an.stored_s_star(r))
    names = an.selector_subsets(r)
    weights = np.array([final(r, f"probe/selector/{n}") for n in names])          # (subsets, seeds)
    # a subset "ends on" only with a majority of c²: tied weights (an untrained selector) end on none
    ends = [names[k] if weights[k, e] > FULL_SELECTOR_MIN else "none"
            for e, k in enumerate(weights.argmax(0))] if weights.size else []
    star_w = weights[names.index(star)] if star in names else np.array([])
    ok = bool(len(star_w) and all(e == star for e in ends))
    note = None if ok else f"ends on {', '.join(ends) or 'nothing measured'} (none: no subset holds a majority)"
    details = {"ends_on": ends, "final_weights": {n: weights[k].tolist() for k, n in enumerate(names)}}
    if not len(star_w):  # not measured, and failed: S* was never a selector subset
        spec = next(s for s in FULL.specs if s.id == "full_selector_subset")
        return Claim(spec.id, spec.statement.format(star=star), spec.source, None,
                     spec.expect.text, False, None, [], note, details)
    return Measurement(float(star_w.min()), passed=ok, per_seed=star_w.tolist(), note=note, fmt={"star": star},
                       details=details)


@FULL.claim("full_plateau_ingredient", "Full model: which ingredient of the authors' code makes its plateau — one "
            "whose removal alone from the authors' run ends the stall and whose addition alone to the paper model "
            "makes one (stall: the training loss falls < 5% from epoch 1 to the end, or analysis.phases finds a "
            "plateau then a drop); measured: how many ingredients are both (preset `ingredients`)",
            f"{SOURCE}, appendix (full model); the authors' code", Judged("≥ 1"))
def _(r):
    ans = an.ingredient_answer(r)
    if ans is None:
        return None
    ing = ans["ingredients"]
    both = [x for x, v in ing.items() if v["sufficient"] and v["necessary"]]
    necessary = [x for x, v in ing.items() if v["necessary"]]
    sufficient = [x for x, v in ing.items() if v["sufficient"]]
    note = (f"the authors' run {'stalls' if ans['code_stalls'] else 'does not stall'}, the paper model "
            f"{'stalls' if ans['paper_stalls'] else 'does not'}; necessary (off alone ends the stall): "
            f"{', '.join(necessary) or 'none'}; sufficient (on alone makes one): {', '.join(sufficient) or 'none'}")
    return Measurement(float(len(both)), passed=len(both) >= 1, note=note, details=ans)
