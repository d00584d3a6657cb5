"""Figures of the feature-convergence experiment: per-feature error and attention over training
(trained solid, reduced dynamics dashed, phase markers from the stored curves) and the K-scaling.

Layout rules: every panel's time axis starts at the latest first record of the runs shown (the
warm-up's first lr) and ends at its own run's last record; marker lines carry their names in the
legend (not as rotated text over the curves); phase numerals sit in a strip above the curves.
"""

from __future__ import annotations

import matplotlib.ticker as mticker
import numpy as np

from icldyn.report.plots import PALETTE, finish, log_axes, new_figure

FEATURE_COLORS = ["#1b1b1b"] + [PALETTE[i] for i in (0, 1, 2, 4, 5, 6, 8, 9)]
MINOR_PHASES = (("t_cross_peak", r"$\bar B_k$ peaks", PALETTE[3]),
                ("t_overtake", r"$a_k$ > dominant mass", PALETTE[4]),
                ("t_attention_half", r"$a_k = ½$", PALETTE[2]),
                ("t_error_0.01", r"$\ell_k = 10^{-2}$", PALETTE[0]))
NUMERALS = ("I", "II", "III", "IV")
Y_MIN = 1e-6
STRIP = 1.16   # linear attention axes run to this; the strip above 1.02 holds the phase numerals


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
    if v.size == 0:
        return
    keep = t > 0
    ax.plot(t[keep], v.mean(0)[keep], color=color, lw=lw, ls=ls, label=label)
    if v.shape[0] > 1:
        ax.fill_between(t[keep], v.min(0)[keep], v.max(0)[keep], color=color, alpha=0.2, lw=0)


def _plot_theory(ax, run, name, label=None):
    """The reduced dynamics, dashed on top of the trained curve (which it mostly hides)."""
    t, v = _fc().theory_curve(run, name)
    keep = t > 0
    if keep.any():
        ax.plot(t[keep], v[keep], color="k", lw=0.9, ls=(0, (3, 3)), label=label, alpha=0.75, zorder=5)


def _views_by_kind(views):
    """The first run of each kind (balanced, imbalanced, full)."""
    fc = _fc()
    out = {}
    for label, r in views:
        out.setdefault(fc.run_kind(r), (label, r))
    return out


def _vline(ax, t, color, label=None):
    """A phase marker: a dotted vertical line, named in the legend."""
    if t is None or not np.isfinite(t) or t <= 0:
        return
    ax.axvline(t, color=color, lw=1.0, ls=":", alpha=0.95, label=label)


def _median(values) -> float:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    return float(np.median(v[np.isfinite(v)])) if np.isfinite(v).any() else float("nan")


def _data_range(run) -> tuple[float, float]:
    """First positive and last recorded time of a run."""
    t, _ = _fc().seed_curves(run, "probe/feature_error/0")
    t = t[t > 0]
    return (float(t.min()), float(t.max())) if t.size else (1e-1, 1e4)


def _left_edge(runs) -> float:
    """The common left edge of a figure's time axes: the latest first record among its runs."""
    return max(_data_range(r)[0] for r in runs) if runs else 1e-1


def _no_data(ax, text):
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def _numerals(ax, edges, names, color="grey"):
    """Phase names centred (in log t) between consecutive edges, in the strip above the curves."""
    for a, b, name in zip(edges[:-1], edges[1:], names):
        if np.isfinite(a) and np.isfinite(b) and b > a > 0:
            ax.text((a * b) ** 0.5, (1.02 + STRIP) / 2, name, ha="center", va="center", fontsize=8,
                    color=color, weight="bold")


def _strip(ax):
    """A linear [0, 1] axis with a strip for the phase numerals above it."""
    ax.set_ylim(0, STRIP)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.axhspan(1.02, STRIP, color="0.95", lw=0, zorder=0)


def _minor_markers(markers, minors) -> dict:
    """The median over under-represented features of each phase marker."""
    return {key: _median([markers[k].get(key) for k in minors if k in markers]) for key, _, _ in MINOR_PHASES}


def _minor_phases(ax, m: dict, t_lo: float, with_labels: bool = True):
    """The four phase markers of an under-represented feature and the numerals I–IV between them."""
    for key, text, col in MINOR_PHASES:
        _vline(ax, m.get(key), col, text if with_labels else None)
    ts = [m.get(key, np.nan) for key, _, _ in MINOR_PHASES]
    if all(t is not None and np.isfinite(t) and t > 0 for t in ts):
        _numerals(ax, [min(t_lo, ts[0] / 3)] + ts, NUMERALS)


# -- per-feature prediction error -----------------------------------------------------------------
def feature_error_figure(run, views):
    """ℓ_k(t) per feature: balanced (two phases) and imbalanced (stage-wise), reduced dynamics dashed."""
    fc = _fc()
    kinds = _views_by_kind(views)
    panels = [k for k in ("balanced", "imbalanced", "full") if k in kinds]
    fig, ax = new_figure(1, len(panels), size=(5.6, 4.3))
    t_lo = _left_edge([kinds[k][1] for k in panels])
    for j, kind in enumerate(panels):
        label, r = kinds[kind]
        a = ax[0, j]
        c = r.config
        imb = c.task.balance == "imbalanced"
        t_hi = _data_range(r)[1]
        markers = fc.markers_of(r)
        for k in range(c.task.K):
            col = _color(k, imb)
            t, v = fc.seed_curves(r, f"probe/feature_error/{k}")
            _plot_trained(a, t, v, col, _feature_label(k, r) if (imb or k == 0 or c.task.K <= 5) else None)
            _plot_theory(a, r, f"probe/feature_error/{k}")
        # reference levels, named at the left edge where every curve is still high
        a.axhline(fc.EPS_ERROR, color="grey", lw=0.8, ls="-.")
        a.text(0.01, fc.EPS_ERROR, rf" $\varepsilon_\ell$ = {fc.EPS_ERROR:g}", transform=a.get_yaxis_transform(),
               ha="left", va="bottom", fontsize=7, color="grey")
        floor = max(0.5 * (1 - p) ** c.task.n_points for p in c.task.probabilities())
        if floor > Y_MIN:
            a.axhline(floor, color="grey", lw=0.8, ls=":")
            a.text(0.01, floor, r" error floor $\frac{1}{2}(1-p_k)^N$" + f" = {floor:.1e}",
                   transform=a.get_yaxis_transform(), ha="left", va="bottom", fontsize=7, color="grey")
        else:
            a.text(0.01, 0.01, r"error floor $\frac{1}{2}(1-p_k)^N$" + f" = {floor:.0e} (below the axis)",
                   transform=a.transAxes, ha="left", va="bottom", fontsize=7, color="grey")
        if imb:
            a.axhline(fc.STAGE_ERROR, color="grey", lw=0.8, ls="-.")
            key = f"t_error_{fc.STAGE_ERROR:g}"
            t_dom = markers.get(0, {}).get(key, np.nan)
            t_min = [markers[k][key] for k in markers if k != 0 and np.isfinite(markers[k].get(key, np.nan))]
            if np.isfinite(t_dom):
                a.axvspan(t_lo, t_dom, color=FEATURE_COLORS[0], alpha=0.06, lw=0)
                _vline(a, t_dom, FEATURE_COLORS[0], r"dominant: $\ell_0 = 10^{-2}$")
            if t_min:
                a.axvspan(t_dom if np.isfinite(t_dom) else t_lo, min(t_min), color=PALETTE[0], alpha=0.06, lw=0)
                _vline(a, min(t_min), PALETTE[0], r"first minor: $\ell_k = 10^{-2}$")
            title = (r"imbalanced, full $W^{KQ}$, $W^{PV}$ trained" if kind == "full" else
                     f"imbalanced (p₀ = {c.task.p_dominant:g}): stage-wise convergence")
        else:
            t_half = _median([m["t_attention_half"] for m in markers.values()])
            t_conv = _median([m[f"t_error_{fc.EPS_ERROR:g}"] for m in markers.values()])
            if np.isfinite(t_half):
                a.axvspan(t_lo, t_half, color=PALETTE[2], alpha=0.07, lw=0)
                _vline(a, t_half, PALETTE[2], r"$a_k = ½$ (phase 1 ends)")
                a.text((t_lo * t_half) ** 0.5, 0.86, "phase 1:\nattention grows", transform=a.get_xaxis_transform(),
                       fontsize=8, color=PALETTE[2], ha="center", va="top")
                a.text((t_half * t_hi) ** 0.5, 0.86, "phase 2:\n" + r"$\ell_k \propto 1/t$",
                       transform=a.get_xaxis_transform(), fontsize=8, color=PALETTE[0], ha="center", va="top")
            _vline(a, t_conv, PALETTE[0], rf"$\ell_k = {fc.EPS_ERROR:g}$")
            title = f"balanced (K = {c.task.K}): two phases"
        log_axes(a)
        a.set_xlim(t_lo, t_hi)
        a.set_ylim(Y_MIN, 1.0)
        a.set_xlabel("time = Σ lr")
        a.set_ylabel(r"$\ell_k$ (held-out, ½·squared error)")
        a.set_title(title, fontsize=10)
        a.plot([], [], color="k", ls=(0, (3, 3)), lw=0.9, label="reduced dynamics")
        # two columns, low: below every curve and above the floor's label
        a.legend(fontsize=6.5, loc="lower left", bbox_to_anchor=(0.0, 0.245), ncol=2, framealpha=0.9)
    return finish(fig, run.path / "figures" / "feature_error.png")


# -- attention concentration ----------------------------------------------------------------------
def attention_figure(run, views):
    """a_k(t) balanced and imbalanced; the phases of an under-represented feature (masses and the
    cross-feature score B̄_k); full W^KQ, W^PV training against the Q-only reduced dynamics."""
    fc = _fc()
    kinds = _views_by_kind(views)
    fig, ax = new_figure(3, 2, size=(5.6, 3.9))
    t_lo = _left_edge([r for _, r in kinds.values()])
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
            if imb:  # the minor features move together: one legend entry for them
                lab = _feature_label(0, r) if k == 0 else (f"k = 1–{c.task.K - 1} (minor, p = "
                                                            f"{c.task.probabilities()[1]:.2g})" if k == 1 else None)
            else:
                lab = _feature_label(k, r) if c.task.K <= 5 else None
            _plot_trained(a, t, v, col, lab)
            _plot_theory(a, r, f"probe/same_feature_attention/{k}")
        a.axhline(0.5, color="grey", lw=0.8, ls=":")
        a.axhline(1 - fc.EPS_ATTENTION, color="grey", lw=0.8, ls="-.")
        a.text(0.99, 1 - fc.EPS_ATTENTION, r"$1 - \varepsilon$ ", transform=a.get_yaxis_transform(), ha="right",
               va="top", fontsize=7, color="grey")
        markers = fc.markers_of(r)
        _strip(a)
        t_hi = _data_range(r)[1]
        if imb:  # the markers are named in the legend of the panel below
            _minor_phases(a, _minor_markers(markers, fc.minor_features(r)), t_lo, with_labels=False)
        elif markers:
            t_half = _median([m["t_attention_half"] for m in markers.values()])
            _vline(a, t_half, PALETTE[2], r"$a_k = ½$: phase 1 ends")
            _numerals(a, [t_lo, t_half, t_hi], ("phase 1", "phase 2"))
        log_axes(a, y=False)
        a.set_xlim(t_lo, t_hi)
        a.set_xlabel("time = Σ lr")
        a.set_ylabel(r"$a_k$: attention on same-feature tokens")
        a.set_title("imbalanced: attention concentration, phases I–IV of the minor features" if imb
                    else "balanced: attention concentration, two phases", fontsize=9.5)
        if imb:
            a.legend(fontsize=6.5, loc="lower right", bbox_to_anchor=(1.0, 0.03))
        else:
            a.legend(fontsize=6.5, loc="center left", bbox_to_anchor=(0.0, 0.6))

    # an under-represented feature, phase by phase
    a_mass, a_score = ax[1, 0], ax[1, 1]
    if "imbalanced" in kinds:
        _, r = kinds["imbalanced"]
        c = r.config
        k = 1
        markers = fc.markers_of(r)
        t_hi = _data_range(r)[1]
        names = [(f"probe/attention_mass/{k}/{k}", rf"own feature ($a_{k}$)", PALETTE[0]),
                 (f"probe/attention_mass/{k}/0", "dominant feature 0", FEATURE_COLORS[0])]
        for name, lab, col in names:
            t, v = fc.seed_curves(r, name)
            _plot_trained(a_mass, t, v, col, lab)
            _plot_theory(a_mass, r, name)
        others = [n for n in range(1, c.task.K) if n != k]
        if others:
            stacks = [fc.seed_curves(r, f"probe/attention_mass/{k}/{n}") for n in others]
            if all(s[1].size for s in stacks):
                _plot_trained(a_mass, stacks[0][0], np.mean([s[1] for s in stacks], axis=0), PALETTE[3],
                              "other minor features (mean)")
        _strip(a_mass)
        _minor_phases(a_mass, markers.get(k, {}), t_lo)
        log_axes(a_mass, y=False)
        a_mass.set_xlim(t_lo, t_hi)
        a_mass.set_xlabel("time = Σ lr")
        a_mass.set_ylabel(f"attention mass, queries of feature {k}")
        a_mass.set_title(f"imbalanced: phases I–IV of minor feature {k} (between the markers)", fontsize=9.5)
        # upper left: above the dominant mass (≤ 0.6) and before the own mass rises
        a_mass.legend(fontsize=6, loc="upper left", bbox_to_anchor=(0.0, 0.87), labelspacing=0.3)

        # cross-feature score B̄_k: the rise before the fall
        m = markers.get(k, {})
        tt = None
        for kk in fc.minor_features(r):
            col = _color(kk, True)
            pairs, t = {}, None
            for n in range(1, c.task.K):
                if n != kk:
                    t, v = fc.seed_curves(r, f"probe/score/{kk}/{n}")
                    if v.size:
                        pairs[(kk, n)] = v
            cross = fc.cross_score_curve(pairs, kk, c.task.K)
            if cross is not None:
                _plot_trained(a_score, t, cross, col, rf"$\bar B_{kk}$" if kk <= 4 else None, lw=1.4)
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
        _vline(a_score, m.get("t_cross_peak"), MINOR_PHASES[0][2], r"$\bar B_1$ peaks")
        _vline(a_score, m.get("t_overtake"), MINOR_PHASES[1][2], r"$a_1$ overtakes the dominant mass")
        log_axes(a_score, y=False)
        a_score.set_xlim(t_lo, t_hi)
        hi = 2.5 * peak if peak and peak > 0 else 0.05
        a_score.set_ylim(-1.5 * hi, hi)
        fall = m.get("cross_fall")
        a_score.set_title(r"minor → other-minor cross score $\bar B_k = \mathrm{mean}_n\, v_n^\top Q v_k$",
                          fontsize=9.5)
        if fall is not None:
            a_score.text(0.98, 0.05, f"rises by {peak:.3f}, then falls by {fall:.2f}\n(y-axis zoomed on the rise)",
                         transform=a_score.transAxes, ha="right", va="bottom", fontsize=7)
        a_score.set_xlabel("time = Σ lr")
        a_score.set_ylabel("score")
        a_score.legend(fontsize=6.5, loc="lower left")
    else:
        _no_data(a_mass, "no imbalanced run")
        _no_data(a_score, "no imbalanced run")

    # full W^KQ, W^PV training vs the Q-only reduced dynamics
    a_full, a_val = ax[2, 0], ax[2, 1]
    if "full" in kinds:
        _, r = kinds["full"]
        c = r.config
        t_hi = _data_range(r)[1]
        for k in range(c.task.K):
            col = _color(k, True)
            t, v = fc.seed_curves(r, f"probe/same_feature_attention/{k}")
            _plot_trained(a_full, t, v, col, _feature_label(k, r))
            _plot_theory(a_full, r, f"probe/same_feature_attention/{k}")
        log_axes(a_full, y=False)
        a_full.set_xlim(t_lo, t_hi)
        a_full.set_ylim(0, 1.02)
        a_full.set_xlabel("time = Σ lr")
        a_full.set_ylabel(r"$a_k$")
        a_full.set_title(r"full $W^{KQ}$, $W^{PV}$ training (dashed: Q-only reduced dynamics)", fontsize=9.5)
        a_full.legend(fontsize=6.5, loc="upper left")
        t, v = fc.seed_curves(r, "probe/value_scale")
        _plot_trained(a_val, t, v, PALETTE[1], r"$W^{PV}$ label weight (full training)")
        a_val.axhline(1.0, color="grey", lw=0.8, ls="--", label="Q-only model: fixed at 1")
        # the per-prompt optimum of that weight, a_k / Σ_n a_n², from the reduced dynamics' masses
        opt = _optimal_value_scale(r)
        if opt is not None:
            a_val.plot(opt[0], opt[1], color=PALETTE[1], ls=":", lw=1.2,
                       label="loss-minimising weight at the Q-only\nreduced path's attention")
        log_axes(a_val, y=False)
        a_val.set_xlim(t_lo, t_hi)
        a_val.set_xlabel("time = Σ lr")
        a_val.set_ylabel("value weight")
        a_val.set_title("why full training departs from the reduced dynamics", fontsize=9.5)
        a_val.legend(fontsize=6.5, loc="upper left")
    else:
        _no_data(a_full, r"no full $W^{KQ}$, $W^{PV}$ run")
        _no_data(a_val, r"no full $W^{KQ}$, $W^{PV}$ run")
    return finish(fig, run.path / "figures" / "attention.png")


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
def scaling_figure(run, views):
    """Times to a_k > ½ and ℓ_k < ε_ℓ vs K with power-law fits, the closed form and the training
    check (left); ℓ_k(t) for each K with its crossings (right)."""
    fc = _fc()
    pts = fc.scaling_points(run, views)
    fig, ax = new_figure(1, 2, size=(5.6, 4.3))
    a = ax[0, 0]
    K = np.asarray(pts["K"], float)
    dense = np.geomspace(K.min() * 0.8, K.max() * 1.25, 100)
    trained = pts["source"] == "training"
    src = "trained" if trained else "reduced dynamics"
    chk = pts.get("check") or {}
    for i, (key, what, level, col, lab) in enumerate((
            ("t_half", "attention", None, PALETTE[2], r"$a_k > ½$"),
            ("t_error", "error", fc.EPS_ERROR, PALETTE[0], rf"$\ell_k < {fc.EPS_ERROR:g}$"))):
        y = np.asarray(pts[key], float)
        ok = np.isfinite(y)
        a.plot(K[ok], y[ok], "o", color=col, ms=6, label=f"time to {lab} ({src})")
        if ok.sum() >= 2:
            fit = fc.power_law_fit(K[ok], y[ok])
            a.plot(dense, fit["prefactor"] * dense ** fit["exponent"], color=col, lw=1.2,
                   label=rf"fit: $K^{{{fit['exponent']:.2f}}}$ [{fit['ci'][0]:.2f}, {fit['ci'][1]:.2f}]")
        closed = [fc.balanced_crossing_time(k, what, level) for k in dense]
        a.plot(dense, closed, color=col, ls="--", lw=1, alpha=0.8, label="closed form (large N)")
        if chk.get("K"):
            ref = np.asarray(chk["reference"], float)[:, i]
            if trained:
                a.plot(chk["K"], ref, "x", color="k", ms=6,
                       label="reduced dynamics, each run's clock" if i == 0 else None)
            else:
                a.plot(chk["K"], np.asarray(chk["trained"], float)[:, i], "*", color="k", ms=11,
                       label=f"trained run (K = {chk['K'][0]})" if i == 0 else None)
    log_axes(a)
    a.set_xticks(K)
    a.xaxis.set_major_formatter(mticker.FormatStrFormatter("%d"))
    a.xaxis.set_minor_formatter(mticker.NullFormatter())
    tpf = sorted({n // k for k, n in zip(pts["K"], pts["N"])})
    a.set_xlabel(f"K (balanced, N = {tpf[0]}·K)" if len(tpf) == 1 else "K (balanced)")
    a.set_ylabel("time = Σ lr")
    a.set_title("K-scaling of the two phases" + (" (one trained run per K)" if trained else ""), fontsize=10)
    a.legend(fontsize=7)

    a = ax[0, 1]
    cmap = __import__("matplotlib").pyplot.get_cmap("viridis")
    color = {Kv: cmap(i / max(len(pts["K"]) - 1, 1)) for i, Kv in enumerate(pts["K"])}
    if trained:
        for label, r in sorted(views, key=lambda v: v[1].config.task.K):
            Kv = r.config.task.K
            if not fc.is_scaling_run(label, run) or Kv not in color:
                continue
            # the mean over features (all alike), as the crossing times are read
            curves = [fc.seed_curves(r, f"probe/feature_error/{k}") for k in range(Kv)]
            t = curves[0][0]
            _plot_trained(a, t, np.mean([v for _, v in curves], axis=0), color[Kv], f"K = {Kv}", lw=1.5)
            tt, tv = zip(*[fc.theory_curve(r, f"probe/feature_error/{k}") for k in range(Kv)])
            keep = tt[0] > 0
            a.plot(tt[0][keep], np.mean(tv, axis=0)[keep], color="k", lw=0.9, ls=(0, (3, 3)), alpha=0.75, zorder=5)
        a.plot([], [], color="k", ls=(0, (3, 3)), lw=0.9, label="reduced dynamics")
        title = r"trained $\ell_k(t)$, mean over k, for each K (dashed: reduced dynamics)"
    else:
        for label, r in views:
            th = r.theory
            if not len(th) or not th["name"].str.startswith("scaling/").any():
                continue
            for i, Kv in enumerate(pts["K"]):
                t, e = fc.theory_curve(r, f"scaling/K={Kv},N={pts['N'][i]}/feature_error")
                if e.size:
                    keep = t > 0
                    a.plot(t[keep], e[keep], color=color[Kv], lw=1.5, label=f"K = {Kv}")
                    for tc in (pts["t_half"][i], pts["t_error"][i]):
                        if np.isfinite(tc):
                            a.plot([tc], [np.interp(np.log(tc), np.log(t[keep]), e[keep])], "o", color=color[Kv],
                                   ms=5)
            break
        title = r"$\ell_k(t)$ for each K (reduced gradient flow; dots: $a_k = ½$, $\ell_k = \varepsilon_\ell$)"
    a.axhline(fc.EPS_ERROR, color="grey", lw=0.8, ls="-.")
    log_axes(a)
    a.set_xlabel("time = Σ lr")
    a.set_ylabel(r"$\ell_k$")
    a.set_title(title, fontsize=10)
    a.legend(fontsize=7, loc="lower left")
    return finish(fig, run.path / "figures" / "k_scaling.png")
