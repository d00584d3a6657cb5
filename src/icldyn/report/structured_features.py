"""Figures of the feature-convergence experiment: per-feature error and attention over training
(trained solid, reduced dynamics dashed, phase markers from the stored curves) and the K-scaling."""

from __future__ import annotations

import numpy as np

from icldyn.report.plots import PALETTE, finish, log_axes, new_figure

FEATURE_COLORS = ["#1b1b1b"] + [PALETTE[i] for i in (0, 1, 2, 4, 5, 6, 8, 9)]
PHASE_STYLE = {"t_cross_peak": ("B̄ peaks", PALETTE[3]), "t_overtake": ("a_k > dominant mass", PALETTE[4]),
               "t_attention_half": ("a_k = ½", PALETTE[2]), "t_error_0.01": ("ℓ_k = 10⁻²", PALETTE[0])}


def _fc():
    from icldyn.experiments import feature_convergence as fc

    return fc


def _color(k: int, imbalanced: bool):
    return FEATURE_COLORS[k % len(FEATURE_COLORS)] if imbalanced else PALETTE[k % 10]


def _feature_label(k: int, run) -> str:
    c = run.config
    p = c.task.probabilities()[k]
    if c.task.balance == "imbalanced":
        return f"k = {k} ({'dominant' if k == 0 else 'minor'}, p = {p:.2g})"
    return f"k = {k}"


def _plot_trained(ax, t, v, color, label=None, lw=1.8, ls="-"):
    keep = t > 0
    if v.size == 0:
        return
    ax.plot(t[keep], v.mean(0)[keep], color=color, lw=lw, ls=ls, label=label)
    if v.shape[0] > 1:
        ax.fill_between(t[keep], v.min(0)[keep], v.max(0)[keep], color=color, alpha=0.2, lw=0)


def _plot_theory(ax, run, name, color, label=None):
    """The reduced dynamics, dashed on top of the trained curve (which it mostly hides)."""
    t, v = _fc().theory_curve(run, name)
    keep = t > 0
    if keep.any():
        ax.plot(t[keep], v[keep], color="k", lw=0.9, ls=(0, (3, 3)), label=label, alpha=0.75, zorder=5)


def _views_by_kind(views):
    """The first run of each kind (balanced, imbalanced, full), K-scaling runs last."""
    fc = _fc()
    out = {}
    for label, r in sorted(views, key=lambda v: v[0].startswith("K=")):
        out.setdefault(fc.run_kind(r), (label, r))
    return out


def _mark(ax, t, color, text=None, y=0.97):
    if t is None or not np.isfinite(t) or t <= 0:
        return
    ax.axvline(t, color=color, lw=0.9, ls=":", alpha=0.9)
    if text:
        ax.text(t, y, f" {text}", transform=ax.get_xaxis_transform(), rotation=90, va="top", ha="right",
                fontsize=7, color=color)


Y_MIN = 1e-6


def _median(values) -> float:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    return float(np.median(v[np.isfinite(v)])) if np.isfinite(v).any() else float("nan")


def _time_range(runs) -> tuple[float, float]:
    """A common log-time window: from the first positive record of the Q runs to the last record."""
    fc = _fc()
    lo, hi = [], []
    for r in runs:
        t, _ = fc.seed_curves(r, "probe/feature_error/0")
        if t.size and (t > 0).any():
            lo.append(t[t > 0].min())
            hi.append(t.max())
    return (max(max(lo), 1e-3) if lo else 1e-1), (max(hi) if hi else 1e4)


def _no_data(ax, text):
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


# -- per-feature prediction error -----------------------------------------------------------------
def feature_error_figure(run, views):
    """ℓ_k(t) per feature: balanced (two phases) and imbalanced (stage-wise), reduced dynamics dashed."""
    fc = _fc()
    kinds = _views_by_kind(views)
    panels = [k for k in ("balanced", "imbalanced", "full") if k in kinds]
    fig, ax = new_figure(1, len(panels), size=(5.6, 4.3))
    t_lo, t_hi = _time_range([kinds[k][1] for k in panels])
    for j, kind in enumerate(panels):
        label, r = kinds[kind]
        a = ax[0, j]
        c = r.config
        imb = c.task.balance == "imbalanced"
        markers = fc.markers_of(r)
        for k in range(c.task.K):
            col = _color(k, imb)
            t, v = fc.seed_curves(r, f"probe/feature_error/{k}")
            _plot_trained(a, t, v, col, _feature_label(k, r) if (imb or k == 0 or c.task.K <= 5) else None)
            _plot_theory(a, r, f"probe/feature_error/{k}", col)
        a.axhline(fc.EPS_ERROR, color="grey", lw=0.8, ls="-.")
        a.text(1.0, fc.EPS_ERROR, f"ε_ℓ = {fc.EPS_ERROR:g} ", transform=a.get_yaxis_transform(), ha="right",
               va="bottom", fontsize=7, color="grey")
        floor = max(0.5 * (1 - p) ** c.task.n_points for p in c.task.probabilities())
        if floor > Y_MIN:
            a.axhline(floor, color="grey", lw=0.8, ls=":")
            a.text(1.0, floor, "error floor ½(1−p_k)^N ", transform=a.get_yaxis_transform(), ha="right",
                   va="bottom", fontsize=7, color="grey")
        else:
            a.text(0.99, 0.01, f"error floor ½(1−p_k)^N = {floor:.0e}", transform=a.transAxes, ha="right",
                   va="bottom", fontsize=7, color="grey")
        if imb:
            a.axhline(fc.STAGE_ERROR, color="grey", lw=0.8, ls="-.")
            key = f"t_error_{fc.STAGE_ERROR:g}"
            t_dom = markers.get(0, {}).get(key, np.nan)
            t_min = [markers[k][key] for k in markers if k != 0 and np.isfinite(markers[k].get(key, np.nan))]
            if np.isfinite(t_dom):
                a.axvspan(1e-3, t_dom, color=FEATURE_COLORS[0], alpha=0.06, lw=0)
                _mark(a, t_dom, FEATURE_COLORS[0], "dominant: ℓ₀ = 10⁻²", y=0.35)
            if t_min:
                a.axvspan(t_dom if np.isfinite(t_dom) else 1e-3, min(t_min), color=PALETTE[0], alpha=0.06, lw=0)
                _mark(a, min(t_min), PALETTE[0], "minor: ℓ_k = 10⁻²", y=0.35)
            title = ("imbalanced, full W^KQ, W^PV trained" if kind == "full" else
                     f"imbalanced (p₀ = {c.task.p_dominant:g}): stage-wise convergence")
        else:
            t_half = _median([m["t_attention_half"] for m in markers.values()])
            t_conv = _median([m[f"t_error_{fc.EPS_ERROR:g}"] for m in markers.values()])
            if np.isfinite(t_half):
                a.axvspan(1e-3, t_half, color=PALETTE[2], alpha=0.07, lw=0)
                _mark(a, t_half, PALETTE[2], "a_k = ½", y=0.35)
                a.text((t_lo * t_half) ** 0.5, 0.9, "phase 1:\nattention grows", transform=a.get_xaxis_transform(),
                       fontsize=8, color=PALETTE[2], ha="center", va="top")
            if np.isfinite(t_half) and np.isfinite(t_conv):
                a.text((t_half * t_hi) ** 0.5, 0.9, "phase 2:\nℓ_k ∝ 1/t", transform=a.get_xaxis_transform(),
                       fontsize=8, color=PALETTE[0], ha="center", va="top")
                _mark(a, t_conv, PALETTE[0], f"ℓ_k = {fc.EPS_ERROR:g}", y=0.35)
            title = f"balanced (K = {c.task.K}): two phases"
        a.set_xlim(t_lo, t_hi)
        log_axes(a)
        a.set_ylim(Y_MIN, 1.0)
        a.set_xlabel("time = Σ lr")
        a.set_ylabel("ℓ_k (held-out, ½·squared error)")
        a.set_title(title, fontsize=10)
        a.plot([], [], color="k", ls=(0, (3, 3)), lw=0.9, label="reduced dynamics")
        a.legend(fontsize=7, loc="lower left")
    return finish(fig, run.path / "figures" / "feature_error.png")


# -- attention concentration ----------------------------------------------------------------------
def attention_figure(run, views):
    """a_k(t) balanced and imbalanced; the phases of an under-represented feature (masses and the
    cross-feature score B̄_k); full W^KQ, W^PV training against the Q-only reduced dynamics."""
    fc = _fc()
    kinds = _views_by_kind(views)
    fig, ax = new_figure(3, 2, size=(5.6, 3.9))
    for j, kind in enumerate(("balanced", "imbalanced")):
        a = ax[0, j]
        if kind not in kinds:
            _no_data(a, f"no {kind} run")
            continue
        _, r = kinds[kind]
        c = r.config
        imb = kind == "imbalanced"
        for k in range(c.task.K):
            col = _color(k, imb)
            t, v = fc.seed_curves(r, f"probe/same_feature_attention/{k}")
            _plot_trained(a, t, v, col, _feature_label(k, r) if (imb or c.task.K <= 5) else None)
            _plot_theory(a, r, f"probe/same_feature_attention/{k}", col)
        a.axhline(0.5, color="grey", lw=0.8, ls=":")
        a.axhline(1 - fc.EPS_ATTENTION, color="grey", lw=0.8, ls="-.")
        a.text(1.0, 1 - fc.EPS_ATTENTION, f"1 − ε ", transform=a.get_yaxis_transform(), ha="right", va="top",
               fontsize=7, color="grey")
        markers = fc.markers_of(r)
        if not imb and markers:
            _mark(a, _median([m["t_attention_half"] for m in markers.values()]), PALETTE[2],
                  "phase 1 ends: a_k = ½", y=0.97)
        log_axes(a, y=False)
        a.set_ylim(0, 1.02)
        a.set_xlabel("time = Σ lr")
        a.set_ylabel("a_k: attention on same-feature tokens")
        a.set_title(f"{kind}: attention concentration (dashed: reduced dynamics)", fontsize=10)
        a.legend(fontsize=7, loc="upper left")

    # an under-represented feature, phase by phase
    a_mass, a_score = ax[1, 0], ax[1, 1]
    if "imbalanced" in kinds:
        _, r = kinds["imbalanced"]
        c = r.config
        k = 1
        markers = fc.markers_of(r)
        names = [(f"probe/attention_mass/{k}/{k}", f"own feature (a_{k})", PALETTE[0]),
                 (f"probe/attention_mass/{k}/0", "dominant feature 0", FEATURE_COLORS[0])]
        for name, lab, col in names:
            t, v = fc.seed_curves(r, name)
            _plot_trained(a_mass, t, v, col, lab)
            _plot_theory(a_mass, r, name, col)
        others = [n for n in range(1, c.task.K) if n != k]
        if others:
            stacks = [fc.seed_curves(r, f"probe/attention_mass/{k}/{n}") for n in others]
            if all(s[1].size for s in stacks):
                t = stacks[0][0]
                _plot_trained(a_mass, t, np.mean([s[1] for s in stacks], axis=0), PALETTE[3],
                              "each other minor feature (mean)")
        m = markers.get(k, {})
        for i, key in enumerate(("t_cross_peak", "t_overtake", "t_attention_half", f"t_error_{fc.STAGE_ERROR:g}")):
            text, col = PHASE_STYLE.get(key, (key, "grey"))
            _mark(a_mass, m.get(key), col, text, y=0.98)
        _phase_numbers(a_mass, m, fc)
        log_axes(a_mass, y=False)
        a_mass.set_ylim(0, 1.02)
        a_mass.set_xlabel("time = Σ lr")
        a_mass.set_ylabel(f"attention mass, queries of feature {k}")
        a_mass.set_title(f"imbalanced: phases I–IV of minor feature {k} (between the markers)", fontsize=10)
        a_mass.legend(fontsize=7, loc="center left", bbox_to_anchor=(0.0, 0.33))

        # cross-feature score B̄_k: the rise before the fall
        for kk in fc.minor_features(r):
            col = _color(kk, True)
            pairs = {}
            for n in range(1, c.task.K):
                if n != kk:
                    t, v = fc.seed_curves(r, f"probe/score/{kk}/{n}")
                    if v.size:
                        pairs[(kk, n)] = v
            cross = fc.cross_score_curve(pairs, kk, c.task.K)
            if cross is not None:
                _plot_trained(a_score, t, cross, col, f"B̄_{kk}" if kk <= 4 else None, lw=1.4)
            th = {}
            for n in range(1, c.task.K):
                if n != kk:
                    tt, v = fc.theory_curve(r, f"probe/score/{kk}/{n}")
                    if v.size:
                        th[(kk, n)] = v
            cth = fc.cross_score_curve(th, kk, c.task.K)
            if cth is not None and kk == 1:
                keep = tt > 0
                a_score.plot(tt[keep], cth[keep], color="grey", ls="--", lw=1.4, label="reduced dynamics")
        peak = m.get("cross_rise")
        a_score.axhline(0, color="grey", lw=0.8)
        _mark(a_score, m.get("t_cross_peak"), PHASE_STYLE["t_cross_peak"][1], "B̄ peaks", y=0.98)
        _mark(a_score, m.get("t_overtake"), PHASE_STYLE["t_overtake"][1], "overtake", y=0.98)
        log_axes(a_score, y=False)
        hi = 2.5 * peak if peak and peak > 0 else 0.05
        a_score.set_ylim(-1.5 * hi, hi)
        fall = m.get("cross_fall")
        a_score.set_title("minor → other-minor cross score B̄_k = mean_n v_nᵀQv_k", fontsize=10)
        if fall is not None:
            a_score.text(0.98, 0.05, f"rises by {peak:.3f}, then falls by {fall:.2f}\n(y-axis zoomed on the rise)",
                         transform=a_score.transAxes, ha="right", va="bottom", fontsize=7)
        a_score.set_xlabel("time = Σ lr")
        a_score.set_ylabel("score")
        a_score.legend(fontsize=7, loc="lower left")
    else:
        _no_data(a_mass, "no imbalanced run")
        _no_data(a_score, "no imbalanced run")

    # full W^KQ, W^PV training vs the Q-only reduced dynamics
    a_full, a_val = ax[2, 0], ax[2, 1]
    if "full" in kinds:
        _, r = kinds["full"]
        c = r.config
        for k in range(c.task.K):
            col = _color(k, True)
            t, v = fc.seed_curves(r, f"probe/same_feature_attention/{k}")
            _plot_trained(a_full, t, v, col, _feature_label(k, r))
            _plot_theory(a_full, r, f"probe/same_feature_attention/{k}", col)
        log_axes(a_full, y=False)
        a_full.set_ylim(0, 1.02)
        a_full.set_xlabel("time = Σ lr")
        a_full.set_ylabel("a_k")
        a_full.set_title("full W^KQ, W^PV training (dashed: Q-only reduced dynamics)", fontsize=10)
        a_full.legend(fontsize=7, loc="upper left")
        t, v = fc.seed_curves(r, "probe/value_scale")
        _plot_trained(a_val, t, v, PALETTE[1], "W^PV label weight (full training)")
        a_val.axhline(1.0, color="grey", lw=0.8, ls="--", label="Q-only model: fixed at 1")
        # the per-prompt optimum of that weight, a_k / Σ_n a_n², from the reduced dynamics' masses
        opt = _optimal_value_scale(r)
        if opt is not None:
            a_val.plot(opt[0], opt[1], color=PALETTE[1], ls=":", lw=1.2,
                       label="loss-minimising weight at the Q-only\nreduced path's attention")
        log_axes(a_val, y=False)
        a_val.set_xlabel("time = Σ lr")
        a_val.set_ylabel("value weight")
        a_val.set_title("why full training departs from the reduced dynamics", fontsize=10)
        a_val.legend(fontsize=7)
    else:
        _no_data(a_full, "no full W^KQ, W^PV run")
        _no_data(a_val, "no full W^KQ, W^PV run")
    return finish(fig, run.path / "figures" / "attention.png")


def _phase_numbers(ax, m, fc):
    """Roman numerals between the phase markers of an under-represented feature."""
    keys = ["t_cross_peak", "t_overtake", "t_attention_half", f"t_error_{fc.STAGE_ERROR:g}"]
    ts = [m.get(k) for k in keys]
    if not all(t is not None and np.isfinite(t) and t > 0 for t in ts):
        return
    lo, hi = ax.get_xlim() if ax.lines else (ts[0] / 10, ts[-1] * 10)
    edges = [max(lo, ts[0] / 10)] + ts
    for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        ax.text((a * b) ** 0.5, 0.02, ["I", "II", "III", "IV"][i], transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=9, color="grey", weight="bold")


def _optimal_value_scale(run):
    """The value weight that would minimise the loss at the Q-only reduced path's attention:
    r* = Σ_k p_k E[a_k] / Σ_k p_k E[Σ_n a_kn²], with E[Σ_n a_kn²] = 2ℓ_k + 2E[a_k] − 1 (from
    ℓ_k = ½E[(1 − a_k)² + Σ_{n≠k} a_kn²])."""
    fc = _fc()
    c = run.config
    p = c.task.probabilities()
    num = den = t = None
    for k in range(c.task.K):
        t, a = fc.theory_curve(run, f"probe/same_feature_attention/{k}")
        _, l = fc.theory_curve(run, f"probe/feature_error/{k}")
        if a.size == 0 or l.size != a.size:
            return None
        num = p[k] * a if num is None else num + p[k] * a
        sq = 2 * l + 2 * a - 1
        den = p[k] * sq if den is None else den + p[k] * sq
    keep = t > 0
    return t[keep], (num / den)[keep]


# -- K-scaling ------------------------------------------------------------------------------------
def run_tpf(views) -> int:
    return views[0][1].config.scaling_tokens_per_feature


def scaling_figure(run, views):
    """Times to a_k > ½ and ℓ_k < ε_ℓ vs K with power-law fits, the closed form, and the check."""
    fc = _fc()
    pts = fc.scaling_points(run, views)
    fig, ax = new_figure(1, 2, size=(5.6, 4.3))
    a = ax[0, 0]
    K = np.asarray(pts["K"], float)
    dense = np.geomspace(K.min() * 0.8, K.max() * 1.25, 100)
    src = "reduced dynamics" if pts["source"] == "theory" else "trained"
    for key, what, level, col, lab in (("t_half", "attention", None, PALETTE[2], "a_k > ½"),
                                       ("t_error", "error", fc.EPS_ERROR, PALETTE[0], f"ℓ_k < {fc.EPS_ERROR:g}")):
        y = np.asarray(pts[key], float)
        ok = np.isfinite(y)
        a.plot(K[ok], y[ok], "o", color=col, ms=6, label=f"time to {lab} ({src})")
        if ok.sum() >= 2:
            fit = fc.power_law_fit(K[ok], y[ok])
            a.plot(dense, fit["prefactor"] * dense ** fit["exponent"], color=col, lw=1.2,
                   label=f"fit: K^{fit['exponent']:.2f} [{fit['ci'][0]:.2f}, {fit['ci'][1]:.2f}]")
        closed = [fc.balanced_crossing_time(k, what, level) for k in dense]
        a.plot(dense, closed, color=col, ls="--", lw=1, alpha=0.8, label="closed form (large N)")
    chk = pts.get("check")
    if chk:
        a.plot([chk["K"]] * 2, chk["trained"], "*", color="k", ms=11, label=f"trained run (K = {chk['K']})")
    log_axes(a)
    a.set_xticks(K)
    a.xaxis.set_major_formatter(__import__("matplotlib").ticker.FormatStrFormatter("%d"))
    a.xaxis.set_minor_formatter(__import__("matplotlib").ticker.NullFormatter())
    a.set_xlabel(f"K (balanced, N = {run_tpf(views)}·K)")
    a.set_ylabel("time = Σ lr")
    a.set_title("K-scaling of the two phases", fontsize=10)
    a.legend(fontsize=7)

    a = ax[0, 1]
    cmap = __import__("matplotlib").pyplot.get_cmap("viridis")
    shown = False
    for label, r in views:
        th = r.theory
        if not len(th):
            continue
        for i, Kv in enumerate(pts["K"]):
            N = pts["N"][i]
            t, e = fc.theory_curve(r, f"scaling/K={Kv},N={N}/feature_error")
            if e.size:
                keep = t > 0
                col = cmap(i / max(len(pts["K"]) - 1, 1))
                a.plot(t[keep], e[keep], color=col, lw=1.5, label=f"K = {Kv}")
                for tc in (pts["t_half"][i], pts["t_error"][i]):
                    if np.isfinite(tc):
                        a.plot([tc], [np.interp(np.log(tc), np.log(t[keep]), e[keep])], "o", color=col, ms=5)
                shown = True
        if shown:
            break
    if not shown:  # trained sweep: the trained curves of feature 0
        for i, (label, r) in enumerate(views):
            if fc.is_scaling_run(label, run):
                t, v = fc.seed_curves(r, "probe/feature_error/0")
                _plot_trained(a, t, v, cmap(i / max(len(views) - 1, 1)), label)
    a.axhline(fc.EPS_ERROR, color="grey", lw=0.8, ls="-.")
    log_axes(a)
    a.set_xlabel("time = Σ lr")
    a.set_ylabel("ℓ_k")
    a.set_title("ℓ_k(t) for each K" + (" (reduced gradient flow; dots: a_k = ½, ℓ_k = ε_ℓ)" if shown
                                       else " (trained)"), fontsize=10)
    a.legend(fontsize=7)
    return finish(fig, run.path / "figures" / "k_scaling.png")
