"""Claims of multihead-tasks (Chen, Sheen, Wang & Yang 2024; He, Pan, Chen & Yang 2025), from stored runs only.

How the claims read the quick preset's sweep (thresholds fixed here and in `analysis/multihead.py`, from theory):
- emergence_specialises_heads: the emergence phase is located on min_h r_h (`emergence_window`); the
  loss must fall over it by ≥ half the gap between the best single-head and the best one-head-per-task
  loss (what the allocation is worth), and the phase detector must see the loss dropping over ≥ half of it.
- allocation_one_task_per_head: at the peak of min_h r_h, r_h ≥ 0.9 for every head, the heads cover all
  tasks, and the loss there is within 10% of the best one-head-per-task loss (the allocated stationary point).
- optimal_among_multihead: final loss / global optimum in [1 − 3 stderr, c], c = (best one-head-per-task
  loss)/(global optimum), the constant factor the allocated model has (both computed numerically).
- pairing_beats_allocation (finite-L finding, ours): final loss / one-head-per-task optimum ≤ (1 + g)/2,
  g = global / one-head-per-task optimum: at least halfway from the allocated to the global optimum.
- debiased_heads_pair_up: measured on the main run, where training produced it from the all-positive init
  (cancellation |Σ_h μ_i^h|/Σ_h|μ_i^h| = 1 at init, < 0.1 at the end). With one task, two heads started alike
  stay at the single-head optimum over this training time; the one-task run therefore starts paired and
  tests debiased_matches_centred_gd (loss ≤ 1.1 × centred GD's closed form).
- noise_spreads_attention: σ is chosen so that theory predicts a visible effect: the optimal centred-GD
  step shrinks by (L + d₀)/(L + d₀ + σ²d₀) = 0.84 at σ = 2 (L = 80, d₀ = 4); at the spec's example σ = 0.5 it
  is 0.99, too small to test, and the claim reports None below a predicted 10%. The measure is the score
  scale √Var_l(s_l), noisy / clean at the same Σ lr, < 0.9. (The best one-head-per-task model does not
  shrink its score with noise — ω* 0.490 at σ = 0, 0.504 at σ = 2 —; the effect is the trained paired heads'.)
- stays_decomposable: off-family part / norm < 0.05 at the end of every run on fresh prompts (the exact
  invariance is tested on a symmetrised batch in tests/test_multihead.py).
- paired_allocation_h_2i: with H = 2I (the main I) training from the same all-positive init ends with one
  task per head (r_h ≥ 0.9) and each task held by an opposite-sign pair, at a loss within 10% of I × centred
  GD's closed form (the debiased limit per task).

The theory values (numerical optima, closed forms) are read from theory.parquet, where the experiment
wrote them after training (`theory_constant`).
"""

from __future__ import annotations

import numpy as np

from icldyn.analysis.multihead import (CONVERGED_SLOPE, SPECIALISED, allocation, at_time, cancellation,
                                       emergence_window, head_mean, loss_curve, loss_phases, main_view, noisy_view,
                                       one_task_view, semi_singular, specialisation, variant)
from icldyn.analysis.runs import metric_curve, theory_constant, views
from icldyn.claims import Claim, ClaimList, Judged, Measurement
from icldyn.theory.multihead import noise_step_factor

SOURCE = "Chen, Sheen, Wang & Yang 2024 (arXiv 2402.19442)"
SOURCE_FOLLOWUP = "He, Pan, Chen & Yang 2025 (arXiv 2503.12734)"
NOISE_EFFECT = 0.9          # the noise claim needs σ large enough that theory predicts ≥ 10% less step
PAIRED = 0.1                # |Σ_h μ_i^h| / Σ_h |μ_i^h| below this: task i's heads cancel their bias
DEBIASED_RATIO = 1.10       # loss / centred GD's closed form at most this: the pair is debiased GD
DECOMPOSABLE_BOUND = 0.05   # off-family part / norm of (W, U) below this: still decomposable

CLAIMS = ClaimList("multihead-tasks")


def _missing(what: str) -> Measurement:
    return Measurement(values=None, note=f"not measured: {what} is not in this run")


def _verdict(id: str, measured, passed, **fields) -> Claim:
    """A ready Claim of spec `id` for the few results a Measurement cannot carry (a verdict without a value,
    a value without a verdict)."""
    spec = next(s for s in CLAIMS.specs if s.id == id)
    fields.setdefault("tolerance", spec.tolerance)
    return Claim(spec.id, spec.statement, spec.source, measured, spec.expect.text, passed, **fields)


# -- phases (claim 1) ------------------------------------------------------------------------------------
@CLAIMS.claim("phases_three",
              "The loss shows three phases: a slow warm-up (a plateau at the initial loss), fast drops (the emergence), "
              "then convergence (the loss at rest)",
              f"{SOURCE}, abstract (three-phase dynamics)",
              Judged("warm-up ≥ 0.5 decades within 10% of the initial loss; a drop losing ≥ 50%; then a final "
                     f"log-log slope < {CONVERGED_SLOPE}"),
              tolerance="phase detection thresholds of analysis/phases.py")
def phases_three(top):
    run = main_view(top)
    if run is None:
        return _missing("a multi-head run")
    per_seed, ok, details = [], [], {}
    for seed in run.seeds:
        ph = loss_phases(*loss_curve(run, seed))
        em = ph["emergence"]
        ok.append(ph["warmup"] is not None and em is not None and em[3] >= 0.5 and ph["converged"])
        per_seed.append(em[2] if em else float("nan"))
        details[f"seed {seed}"] = ph
    note = "measured: time (Σ lr) of the first drop's midpoint"
    if not np.isfinite(per_seed).any():
        return _verdict("phases_three", None, bool(all(ok)), per_seed=per_seed, note=note, details=details)
    return Measurement(float(np.nanmedian(per_seed)), details, note, passed=bool(all(ok)), per_seed=per_seed)


@CLAIMS.claim("emergence_specialises_heads",
              "Emergence: each head picks a task while the loss drops. The emergence phase is where min_h r_h "
              "(r_h = max_i|ω_iμ_i|/Σ_i|ω_iμ_i|) rises from ≈1/I (its last upward crossing of 1/I + (1 − 1/I)/4) "
              "to ≈1 (95% of the way from 1/I to its peak, the peak ≥ 0.9); measured: the loss's fall over that "
              "phase as a fraction of the gap between the best shared (single-head) model and the best "
              "one-head-per-task model, which is what allocating the tasks is worth",
              f"{SOURCE}, emergence phase",
              Judged("≥ 0.5, with the loss detected as dropping over ≥ half the phase (in ln t)"),
              tolerance="half the single-head → one-head-per-task gap")
def emergence_specialises_heads(top):
    run = main_view(top)
    if run is None:
        return _missing("a multi-head run")
    I = run.config.task.n_tasks
    single = theory_constant(run, "optimum/single_head/loss")
    alloc = theory_constant(run, "optimum/one_head_per_task/loss")
    gap = single - alloc
    frac, inside, details = [], [], {}
    for seed in run.seeds:
        t, loss = loss_curve(run, seed)
        ph = loss_phases(t, loss)
        _, tr, r = specialisation(run, seed)
        win = emergence_window(tr, r, I)
        d = {"one_over_I": 1.0 / I, "r_peak": float(r.max()), "t_peak": float(tr[np.argmax(r)]),
             "r_final": float(r[-1]), "emergence_window": win, "optimum_single_head": single,
             "optimum_one_head_per_task": alloc}
        if win is None or not np.isfinite(gap):
            frac.append(float("nan") if not np.isfinite(gap) else 0.0)
            inside.append(False)
        else:
            a, b = win
            la, lb = at_time(t, loss, a), at_time(t, loss, b)
            frac.append(float((la - lb) / gap))
            # share of the phase (in ln t) during which the phase detector sees the loss dropping
            covered = sum(max(0.0, np.log(min(b, dr[1]) / max(a, dr[0]))) for dr in ph["drops"]) / np.log(b / a)
            inside.append(bool(covered >= 0.5))
            d.update(loss_at_start=la, loss_at_end=lb, share_of_phase_in_a_loss_drop=float(covered),
                     r_at_first_drop_midpoint=at_time(tr, r, ph["drops"][0][2]) if ph["drops"] else None)
        details[f"seed {seed}"] = d
    frac = np.asarray(frac, float)
    if not np.isfinite(frac).all():
        return Measurement(None, details, "the numerical optima are not in this run", per_seed=frac.tolist())
    note = ("a first, faster drop comes before the emergence: both heads learn the same shared (single-head) "
            "solution while r_h stays ≈ 1/I (r at its midpoint in details), and the loss rests at the best "
            "single-head loss until the symmetry between the heads breaks")
    return Measurement(float(frac.min()), details, note, passed=bool(frac.min() >= 0.5 and all(inside)),
                       per_seed=frac.tolist())


# -- allocation (claim 2) ----------------------------------------------------------------------------------
@CLAIMS.claim("allocation_one_task_per_head",
              "At the end of the emergence each head keeps one task and every task has a head: at the peak of "
              "min_h r_h every head has r_h ≥ 0.9, the heads' dominant tasks cover all I tasks, and the model sits "
              "at the best one-head-per-task model (loss there / that optimum)",
              f"{SOURCE}, task allocation", Judged("in [0.9, 1.1], with min_h r_h ≥ 0.9 and all tasks covered"),
              tolerance="10% of the optimum")
def allocation_one_task_per_head(top):
    run = main_view(top)
    if run is None:
        return _missing("a multi-head run")
    H, I = run.config.model.n_heads, run.config.task.n_tasks
    alloc = theory_constant(run, "optimum/one_head_per_task/loss")
    ratios, details, oks = [], {"optimum_one_head_per_task": alloc}, []
    for s in run.seeds:
        steps, tr, r = specialisation(run, s)
        k = int(np.argmax(r))
        p = np.abs(allocation(run, s, int(steps[k])))
        covered = sorted(set(np.argmax(p, axis=1).tolist()))
        ratio = at_time(*loss_curve(run, s), tr[k]) / alloc
        on = tr[r >= SPECIALISED]
        ratios.append(float(ratio))
        oks.append(bool(r[k] >= SPECIALISED and len(covered) == min(H, I) == I and 0.9 <= ratio <= 1.1))
        omega, mu = semi_singular(run, s, int(steps[k]))
        omega_final, mu_final = semi_singular(run, s)
        details[f"seed {s}"] = {"t_peak": float(tr[k]), "r_peak": float(r[k]), "tasks_of_heads": covered,
                                "decades_with_all_heads_on_one_task":
                                    float(np.log10(on[-1] / on[0])) if on.size else 0.0,
                                "r_final": float(r[-1]), "omega_at_peak": omega.round(4).tolist(),
                                "mu_at_peak": mu.round(4).tolist(), "omega_final": omega_final.round(4).tolist(),
                                "mu_final": mu_final.round(4).tolist()}
    ratios = np.asarray(ratios)
    valid = bool(np.isfinite(ratios).all())
    return Measurement(float(ratios[np.argmax(np.abs(ratios - 1))]) if valid else None, details,
                       ("the allocation is a stage, not the end: later the heads pair up with opposite signs on the "
                        "other task (debiased_heads_pair_up) and the loss falls below this optimum "
                        "(pairing_beats_allocation); rows of the matrices are heads, columns tasks"),
                       passed=bool(all(oks)) if valid else None, per_seed=ratios.tolist())


@CLAIMS.claim("allocation_covers_tasks",
              "With H ≥ I every task is covered at the end: each task's held-out loss is below half the zero "
              "predictor's (min over tasks of 1 − loss_i/loss_i(zero))",
              f"{SOURCE}, task allocation (H ≥ I)", Judged("> 0.5"))
def allocation_covers_tasks(top):
    run = main_view(top)
    if run is None:
        return _missing("a multi-head run")
    H, I = run.config.model.n_heads, run.config.task.n_tasks
    cover = []
    for s in run.seeds:
        losses = [float(run.final(f"probe/task_loss/{i}").get(s, np.nan)) for i in range(I)]
        cover.append(min(1 - li / 0.5 for li in losses))   # ½ E y_{q,i}² = ½: the zero predictor's loss
    cover = np.asarray(cover)
    valid = bool(np.isfinite(cover).all())
    return Measurement(float(cover.min()) if valid else None, {"H": H, "I": I},
                       passed=bool(cover.min() > 0.5) if valid else None, per_seed=cover.tolist())


# -- optimality (claim 3) and the finite-L pairing ---------------------------------------------------------
def _optima(run):
    """(global optimum, its stderr, one-head-per-task optimum, single-head optimum) from theory.parquet."""
    return tuple(theory_constant(run, f"optimum/{tag}") for tag in ("global/loss", "global/stderr",
                                                              "one_head_per_task/loss", "single_head/loss"))


def _optimality_details(run, loss, glob, glob_se, per, single) -> dict:
    return {"loss_test": loss.tolist(), "optimum_global": glob, "optimum_global_stderr": glob_se,
            "optimum_one_head_per_task": per, "optimum_single_head": single,
            "constant_factor_c": per / glob, "ratio_to_one_head_per_task": (loss / per).tolist(),
            "ratio_to_single_head_optimum": (loss / single).tolist(),
            "optimum_prompts": run.config.optimum_prompts}


def _optimum_matrix(run, tag, sym):
    H, I = run.config.model.n_heads, run.config.task.n_tasks
    return [[theory_constant(run, f"optimum/{tag}/{sym}/{h}/{i}") for i in range(I)] for h in range(H)]


OPTIMA_MISSING = "the numerical optima (H·I > optimum_max_params)"


def _main_optima(top):
    """(main run, its final losses (S,), global optimum, its stderr, one-head-per-task optimum, single
    head optimum), or the Measurement saying what is missing."""
    run = main_view(top)
    if run is None:
        return _missing("a multi-head run")
    glob, glob_se, per, single = _optima(run)
    if not (np.isfinite(glob) and np.isfinite(per)):
        return _missing(OPTIMA_MISSING)
    return run, run.final("loss/test").to_numpy(), glob, glob_se, per, single


@CLAIMS.claim("optimal_among_multihead",
              "The trained model's final loss is within a constant factor of the best H-head model: at most the "
              "factor by which the paper's limit, one head per task, exceeds the numerical optimum of the "
              "decomposable family (ratio trained / optimum)",
              f"{SOURCE}, optimality of the limit (up to a constant factor)",
              Judged("in [1 − 3·stderr, c], c = best one-head-per-task / global optimum"),
              tolerance="3 Monte-Carlo stderr below")
def optimal_among_multihead(top):
    got = _main_optima(top)
    if isinstance(got, Measurement):
        return got
    run, loss, glob, glob_se, per, single = got
    c, ratio, lo = per / glob, loss / glob, 1 - 3 * glob_se / glob
    return Measurement(float(ratio.max()), _optimality_details(run, loss, glob, glob_se, per, single),
                       passed=bool((ratio >= lo).all() and (ratio <= c).all()), per_seed=ratio.tolist(),
                       expect=Judged(f"in [{lo:.3f}, {c:.3f}] (c = best one-head-per-task / global optimum)"))


@CLAIMS.claim("pairing_beats_allocation",
              "Finite L (our reconstruction): after the allocation the heads pair up into debiased GD and the loss "
              "falls below the best one-head-per-task model's, at least halfway to the global optimum "
              "(final loss / best one-head-per-task loss)",
              f"our reconstruction (finite L); debiased heads: {SOURCE_FOLLOWUP}",
              Judged("≤ (1 + g)/2, g = global / one-head-per-task optimum"),
              tolerance="halfway from the allocated to the global optimum")
def pairing_beats_allocation(top):
    got = _main_optima(top)
    if isinstance(got, Measurement):
        return got
    run, loss, glob, glob_se, per, single = got
    g = glob / per
    bound, pr = (1 + g) / 2, loss / per
    details = {**_optimality_details(run, loss, glob, glob_se, per, single),
               "optimum_global_omega": _optimum_matrix(run, "global", "omega"),
               "optimum_global_mu": _optimum_matrix(run, "global", "mu")}
    return Measurement(float(pr.max()), details,
                       ("with L finite the softmax's first-order term carries a bias μ·ȳ per head; heads of "
                        "opposite signs cancel it (debiased GD), which one head per task cannot; the global "
                        "optimum is such a pairing (an infimum as ω → 0)"),
                       passed=bool((pr <= bound).all()), per_seed=pr.tolist(),
                       expect=Judged(f"≤ {bound:.3f} = (1 + g)/2, g = {g:.3f} (global / one-head-per-task optimum)"))


# -- separation (claim 4) ----------------------------------------------------------------------------------
@CLAIMS.claim("single_vs_multihead_separation",
              "One head is strictly worse than H = I heads, and the gap grows with the number of tasks I "
              "(held-out loss ratio single/multi for each I)",
              f"{SOURCE}, single vs multi-head separation", Judged("ratio > 1.05 for every I, increasing in I"),
              tolerance="5%")
def single_vs_multihead_separation(top):
    pairs = {}
    for _, r in views(top):
        c = r.config
        I = c.task.n_tasks
        if I < 2 or c.task.noise_std != 0 or c.head_signs != "positive" or c.model.n_heads != I:
            continue
        one = variant(views(top), I, 1)
        if one is not None:
            pairs[I] = (one, r)
    if len(pairs) < 2:
        return _missing("a pair of single- and multi-head runs for two or more I")
    Is = sorted(pairs)
    details, means = {}, []
    for I in Is:
        one, multi = pairs[I]
        a, b = one.final("loss/test"), multi.final("loss/test")
        ratio = (a / b).dropna()
        means.append(float(ratio.mean()))
        details[f"I={I}"] = {"ratio": means[-1], "per_seed": ratio.tolist(), "loss_single": a.tolist(),
                             "loss_multi": b.tolist(),
                             "optimum_single_head": theory_constant(one, "optimum/single_head/loss")}
    means = np.array(means)
    return Measurement(float(means.min()), details, f"per_seed lists the seed-mean ratio for I = {Is}",
                       passed=bool((means > 1.05).all() and (np.diff(means) > 0).all()), per_seed=means.tolist())


# -- attention regime (claim 5) ----------------------------------------------------------------------------
@CLAIMS.claim("attention_scores_order_one",
              "Trained attention scores are O(1) (spread-out attention): the typical score √Var_l(x_lᵀW x_q), "
              "mean over heads",
              f"{SOURCE}, attention regime", Judged("in [0.1, 10]"), tolerance="one decade either side of 1")
def attention_scores_order_one(top):
    main = main_view(top)
    if main is None:
        return _missing("a multi-head run")
    scale = head_mean(main, "probe/score_scale")
    details = {"attention_spread (fraction of keys attended)": head_mean(main, "probe/attention_spread").tolist(),
               "max_attention_weight": head_mean(main, "probe/max_attention").tolist(),
               "uniform_weight": 1 / main.config.task.n_points}
    return Measurement(float(scale.mean()), details, passed=bool(((scale > 0.1) & (scale < 10)).all()),
                       per_seed=scale.tolist())


def _clean_score_at(main, seed: int, t_end: float) -> float:
    """The clean run's score scale (mean over heads) at time `t_end` (records are log-spaced in Σ lr)."""
    clean = []
    for h in range(main.config.model.n_heads):
        t, v = metric_curve(main, f"probe/score_scale/{h}", seed, positive_time=True)
        clean.append(at_time(t, v, t_end) if t_end < t[-1] else float(v[-1]))
    return float(np.mean(clean))


@CLAIMS.claim("noise_spreads_attention",
              "Label noise pushes toward more spread-out attention: score scale with noise / without, at the same "
              "training time (Σ lr), for a σ at which theory predicts a ≥ 10% smaller optimal in-context step",
              f"{SOURCE}, attention regime with noise",
              Judged(f"< {NOISE_EFFECT} (at least 10% smaller scores with noise)"), tolerance="10%")
def noise_spreads_attention(top):
    main, noisy = main_view(top), noisy_view(top)
    if main is None or noisy is None:
        return _missing("a run with label noise")
    tc = noisy.config.task
    factor = noise_step_factor(tc.d0, tc.test_points, tc.noise_std)
    H = noisy.config.model.n_heads
    fitted = "probe/fitted_step/centred_gd"
    ratios, details = [], {"noise_std": tc.noise_std, "theory_step_factor": factor}
    for s in noisy.seeds:
        t_end = float(noisy.metrics[noisy.metrics["seed"] == s]["time"].max())
        a = np.mean([float(noisy.final(f"probe/score_scale/{h}").get(s, np.nan)) for h in range(H)])
        b = _clean_score_at(main, s, t_end)
        ratios.append(a / b)
        details[f"seed {s}"] = {"time": t_end, "score_scale_noisy": a, "score_scale_clean": b,
                                "fitted_step_ratio_centred_gd": float(noisy.final(fitted).get(s, np.nan)
                                                                      / main.final(fitted).get(s, np.nan))
                                if len(main.final(fitted)) else None}
    ratios = np.asarray(ratios)
    if factor > NOISE_EFFECT:
        return _verdict("noise_spreads_attention", float(ratios.max()), None, tolerance=None,
                        per_seed=ratios.tolist(), details=details,
                        note=f"not tested: at σ = {tc.noise_std:g} theory predicts only a {1 - factor:.1%} smaller "
                             f"step (needs σ²d₀ ≥ (L + d₀)/9)")
    note = ("the best one-head-per-task model keeps its score as σ grows (its ω* rises slightly, our numerics); "
            "the spreading is seen in the trained, paired (debiased) heads")
    return Measurement(float(ratios.max()), details, note, passed=bool(ratios.max() < NOISE_EFFECT),
                       per_seed=ratios.tolist())


# -- debiased GD (claim 6) ---------------------------------------------------------------------------------
@CLAIMS.claim("debiased_heads_pair_up",
              "Training pairs the heads with opposite signs (debiased GD): from the all-positive init "
              "(|Σ_h μ_i^h| / Σ_h |μ_i^h| = 1 on every task), at the end every task's heads cancel their bias, "
              "|Σ_h μ_i^h| / Σ_h |μ_i^h| ≈ 0, while every head still takes a positive step ω_i^hμ_i^h on it "
              "(multi-head run, max over tasks)",
              f"{SOURCE_FOLLOWUP}, debiased-GD heads",
              Judged(f"< {PAIRED} with ω_i^hμ_i^h > 0 for all h, i, from an init > 0.9"))
def debiased_heads_pair_up(top):
    main = main_view(top)
    if main is None:
        return _missing("a multi-head run")
    vals, details, ok = [], {}, True
    for s in main.seeds:
        first = int(main.metrics[main.metrics["seed"] == s]["step"].min())
        c0, c1 = cancellation(main, s, first), cancellation(main, s)
        omega, mu = semi_singular(main, s)
        pos = bool((omega * mu > 0).all())
        ok &= bool(c1.max() < PAIRED and pos and c0.min() > 0.9)
        vals.append(float(c1.max()))
        details[f"seed {s}"] = {"cancellation_init": c0.round(4).tolist(), "cancellation_final": c1.round(4).tolist(),
                                "positive_steps": pos, "omega": omega.round(4).tolist(), "mu": mu.round(4).tolist()}
    for tag, r in (("one_task_alternating_init", one_task_view(top, "alternating")),
                   ("one_task_same_sign_init", one_task_view(top, "positive"))):
        if r is not None:
            details[tag] = {"cancellation_final": [float(cancellation(r, s)[0]) for s in r.seeds],
                            "loss_test": r.final("loss/test").tolist()}
    note = ("with two tasks the allocation breaks the symmetry between the heads and the pairing follows it; "
            "with one task, two heads started alike stay together at the single-head optimum over this "
            "training time (one_task_same_sign_init), so the one-task runs start paired (alternating init)")
    return Measurement(float(max(vals)), details, note, passed=bool(ok), per_seed=vals)


@CLAIMS.claim("debiased_matches_centred_gd",
              "With one task and several heads the model matches one-step GD on centred data (debiased GD): "
              "held-out loss / centred GD's population loss",
              f"{SOURCE_FOLLOWUP}, debiased GD", Judged("≤ 1.10 (the pair reaches debiased GD only as ω → 0)"),
              tolerance="10%")
def debiased_matches_centred_gd(top):
    run, control = one_task_view(top, "alternating"), one_task_view(top, "positive")
    if run is None:
        return _missing("a one-task run with mixed head signs")
    loss = run.final("loss/test")
    cgd, gd = theory_constant(run, "theory/centred_gd_loss"), theory_constant(run, "theory/gd_loss")
    ratio = loss / cgd
    details = {"loss_test": loss.tolist(), "centred_gd_closed_form": cgd, "gd_closed_form": gd,
               "centred_gd_on_test_prompts": run.final("baseline/centred_gd").tolist(),
               "gd_on_test_prompts": run.final("baseline/gd").tolist(),
               "ratio_to_gd_estimator": (loss / run.final("baseline/gd").iloc[0]).tolist()
               if len(run.final("baseline/gd")) else None,
               "pred_rel_diff_centred_gd": run.final("probe/pred_rel_diff/centred_gd").tolist(),
               "pred_rel_diff_gd": run.final("probe/pred_rel_diff/gd").tolist(),
               "cancellation_final": [float(cancellation(run, s)[0]) for s in run.seeds],
               "optimum_two_heads": theory_constant(run, "optimum/global/loss"),
               "optimum_one_head": theory_constant(run, "optimum/single_head/loss")}
    if control is not None:
        details["same_sign_init_ratio_to_centred_gd"] = (control.final("loss/test") / cgd).tolist()
    return Measurement(float(ratio.max()), details,
                       (f"on this zero-mean data centring costs one example: centred GD {cgd:.4f} vs one-step GD "
                        f"{gd:.4f} (population), so the multi-head model cannot beat plain GD here"),
                       passed=bool(ratio.max() <= DEBIASED_RATIO), per_seed=ratio.tolist())


# -- H = 2I: allocation and pairing together ---------------------------------------------------------------
@CLAIMS.claim("paired_allocation_h_2i",
              "With H = 2I heads the limit keeps one task per head and pairs them: at the end every head has "
              "r_h ≥ 0.9, every task is held by ≥ 2 heads whose outputs cancel their bias (|Σ_h μ_i^h| / "
              "Σ_h |μ_i^h| < 0.1), and the loss approaches debiased GD on every task (final loss / I × centred "
              "GD's closed form)",
              f"{SOURCE}, task allocation; {SOURCE_FOLLOWUP}, debiased heads",
              Judged("≤ 1.10, with r_h ≥ 0.9 for all h and every task paired"), tolerance="10%")
def paired_allocation_h_2i(top):
    run = next((r for _, r in views(top) if r.config.task.n_tasks >= 2 and r.config.task.noise_std == 0
                and r.config.model.n_heads >= 2 * r.config.task.n_tasks and r.config.head_signs == "positive"), None)
    if run is None:
        return _missing("a run with H ≥ 2I")
    I = run.config.task.n_tasks
    cgd = theory_constant(run, "theory/centred_gd_loss")
    loss = run.final("loss/test")
    ratios, ok, details = [], True, {"centred_gd_closed_form": cgd}
    for s in run.seeds:
        r_final = np.array([float(run.final(f"probe/head_specialisation/{h}").get(s, np.nan))
                            for h in range(run.config.model.n_heads)])
        p = np.abs(allocation(run, s))
        holders = [int((np.argmax(p, axis=1) == i).sum()) for i in range(I)]
        c = cancellation(run, s)
        ratio = float(loss.get(s, np.nan) / cgd)
        ratios.append(ratio)
        ok &= bool(r_final.min() >= SPECIALISED and min(holders) >= 2 and c.max() < PAIRED
                   and ratio <= DEBIASED_RATIO)
        omega, mu = semi_singular(run, s)
        details[f"seed {s}"] = {"r_final": r_final.round(4).tolist(), "heads_per_task": holders,
                                "cancellation": c.round(4).tolist(), "omega": omega.round(3).tolist(),
                                "mu": mu.round(3).tolist()}
    ratios = np.asarray(ratios)
    valid = bool(np.isfinite(ratios).all())
    return Measurement(float(ratios.max()) if valid else None, details,
                       ("with H = I the heads must choose between one task each and opposite-sign pairs (the pairs "
                        "win, see pairing_beats_allocation); with H = 2I both hold together"),
                       passed=bool(ok) if valid else None, per_seed=ratios.tolist())


# -- decomposability (the paper's invariance) ---------------------------------------------------------------
@CLAIMS.claim("stays_decomposable",
              "Training the full matrices W, U from a decomposable init stays decomposable: the part of (W, U) "
              "outside the family, relative to its norm (every run of this command trained on fresh prompts, "
              "worst seed, last record)",
              f"{SOURCE}, decomposable dynamics", Judged(f"< {DECOMPOSABLE_BOUND}"),
              tolerance="minibatch noise, fresh prompts")
def stays_decomposable(top):
    vals, details, pooled = [], {}, []
    for name, r in views(top):
        v = r.final("probe/off_decomposable_relative")
        if not len(v) or r.config.model.parametrisation != "full":
            continue
        if r.config.train.dataset_size is not None:
            pooled.append(name)
            continue
        vals.append(float(v.max()))
        details[name] = v.tolist()
    if not vals:
        return _missing("a full-parametrisation run on fresh prompts")
    note = ("per_seed lists the worst seed of each run; on fresh prompts the off-family gradient has mean 0 "
            "(the population gradient at a decomposable point is in the family; tests/test_multihead.py shows "
            "it exactly on a symmetrised batch), so only minibatch noise leaks, as a random walk")
    if pooled:
        note += (f"; not counted: {', '.join(pooled)} trained on a finite prompt pool, whose off-family gradient "
                 f"has a non-zero mean (the pool is not symmetric), so the leak there drifts")
    bad = [n for n, v in details.items() if max(v) >= DECOMPOSABLE_BOUND]
    if bad:
        note += f"; off the family at the end: {', '.join(bad)}"
    return Measurement(max(vals), details, note, passed=bool(max(vals) < DECOMPOSABLE_BOUND), per_seed=vals)
