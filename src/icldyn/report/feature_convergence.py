"""Figures of the feature-convergence experiment: per-feature error and attention over training
(trained solid, reduced dynamics dashed, phase markers from the stored curves); the K-scaling is
`feature_convergence_scaling.py`. Everything drawn comes from the run directory, read and analysed
by `analysis.feature_convergence`.

Layout rules: every panel's time axis starts at the latest first record of the runs shown (the
warm-up's first lr) and ends at its own run's last record; marker lines carry their names in the
legend (not as rotated text over the curves); phase numerals sit in a strip above the curves.
"""

from __future__ import annotations

import numpy as np

from icldyn.analysis import feature_convergence as fa
from icldyn.analysis.feature_convergence import EPS_ATTENTION, EPS_ERROR, STAGE_ERROR
from icldyn.analysis.runs import seed_matrix, theory_curve
from icldyn.report.plots import PALETTE, finish, log_axes, new_figure

FEATURE_COLORS = ["#1b1b1b"] + [PALETTE[i] for i in (0, 1, 2, 4, 5, 6, 8, 9)]
MINOR_PHASES = (("t_cross_peak", r"$\bar B_k$ peaks", PALETTE[3]),
                ("t_overtake", r"$a_k$ > dominant mass", PALETTE[4]),
                ("t_attention_half", r"$a_k = ½$", PALETTE[2]),
                ("t_error_0.01", r"$\ell_k = 10^{-2}$", PALETTE[0]))
NUMERALS = ("I", "II", "III", "IV")
Y_MIN = 1e-6
STRIP = 1.16   # linear attention axes run to this; the strip above 1.02 holds the phase numerals


def _color(k: int, imbalanced: bool):
    return FEATURE_COLORS[k % len(FEATURE_COLORS)] if imbalanced else PALETTE[k % 10]


def _feature_label(k: int, run) -> str:
    c = run.config
    p = c.task.probabilities()[k]
    if c.task.balance == "imbalanced":
        return f"k = {k} ({'dominant' if k == 0 else 'minor'}, p = {p:.2g})"
    return f"k = {k}"


def plot_trained(ax, t, v, color, label=None, lw=1.8, ls="-"):
    if v.size == 0:
        return
    keep = t > 0
    ax.plot(t[keep], v.mean(0)[keep], color=color, lw=lw, ls=ls, label=label)
    if v.shape[0] > 1:
        ax.fill_between(t[keep], v.min(0)[keep], v.max(0)[keep], color=color, alpha=0.2, lw=0)


def _plot_theory(ax, run, name, label=None):
    """The reduced dynamics, dashed on top of the trained curve (which it mostly hides)."""
    t, v = theory_curve(run, name)
    keep = t > 0
    if keep.any():
        ax.plot(t[keep], v[keep], color="k", lw=0.9, ls=(0, (3, 3)), label=label, alpha=0.75, zorder=5)


def _views_by_kind(views):
    """The first run of each kind (balanced, imbalanced, full)."""
    out = {}
    for label, r in views:
        out.setdefault(fa.run_kind(r), (label, r))
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
    t, _ = seed_matrix(run, "probe/feature_error/0")
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
    kinds = _views_by_kind(views)
    panels = [k for k in ("balanced", "imbalanced", "full") if k in kinds]
    fig, ax = new_figure(1, len(panels), size=(5.6, 4.3))
    t_lo = _left_edge([kinds[k][1] for k in panels])
    for j, kind in enumerate(panels):
        _feature_error_panel(ax[0, j], kinds[kind][1], kind, t_lo)
    return finish(fig, run.path / "figures" / "feature_error.png")


def _feature_error_panel(a, r, kind: str, t_lo: float):
    c = r.config
    imb = c.task.balance == "imbalanced"
    t_hi = _data_range(r)[1]
    for k in range(c.task.K):
        col = _color(k, imb)
        t, v = seed_matrix(r, f"probe/feature_error/{k}")
        plot_trained(a, t, v, col, _feature_label(k, r) if (imb or k == 0 or c.task.K <= 5) else None)
        _plot_theory(a, r, f"probe/feature_error/{k}")
    _error_levels(a, r)
    markers = fa.markers_of(r)
    if imb:
        _stage_markers(a, markers, t_lo)
        title = (r"imbalanced, full $W^{KQ}$, $W^{PV}$ trained" if kind == "full" else
                 f"imbalanced (p₀ = {c.task.p_dominant:g}): stage-wise convergence")
    else:
        _balanced_phases(a, markers, t_lo, t_hi)
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


def _error_levels(a, r):
    """ε_ℓ, the stage level (imbalanced) and the error floor ½(1 − p_k)^N stored with the run, named at
    the left edge where every curve is still high."""
    a.axhline(EPS_ERROR, color="grey", lw=0.8, ls="-.")
    a.text(0.01, EPS_ERROR, rf" $\varepsilon_\ell$ = {EPS_ERROR:g}", transform=a.get_yaxis_transform(),
           ha="left", va="bottom", fontsize=7, color="grey")
    if r.config.task.balance == "imbalanced":
        a.axhline(STAGE_ERROR, color="grey", lw=0.8, ls="-.")
    floors = np.asarray(fa.error_floors(r))
    if not np.isfinite(floors).any():
        return  # a run stored before the floors were written to theory.parquet
    floor = float(np.nanmax(floors))
    if floor > Y_MIN:
        a.axhline(floor, color="grey", lw=0.8, ls=":")
        a.text(0.01, floor, r" error floor $\frac{1}{2}(1-p_k)^N$" + f" = {floor:.1e}",
               transform=a.get_yaxis_transform(), ha="left", va="bottom", fontsize=7, color="grey")
    else:
        a.text(0.01, 0.01, r"error floor $\frac{1}{2}(1-p_k)^N$" + f" = {floor:.0e} (below the axis)",
               transform=a.transAxes, ha="left", va="bottom", fontsize=7, color="grey")


def _stage_markers(a, markers, t_lo):
    """Imbalanced: when the dominant feature, then the first minor one, reach ℓ = STAGE_ERROR."""
    key = f"t_error_{STAGE_ERROR:g}"
    t_dom = markers.get(0, {}).get(key, np.nan)
    t_min = [markers[k][key] for k in markers if k != 0 and np.isfinite(markers[k].get(key, np.nan))]
    if np.isfinite(t_dom):
        a.axvspan(t_lo, t_dom, color=FEATURE_COLORS[0], alpha=0.06, lw=0)
        _vline(a, t_dom, FEATURE_COLORS[0], r"dominant: $\ell_0 = 10^{-2}$")
    if t_min:
        a.axvspan(t_dom if np.isfinite(t_dom) else t_lo, min(t_min), color=PALETTE[0], alpha=0.06, lw=0)
        _vline(a, min(t_min), PALETTE[0], r"first minor: $\ell_k = 10^{-2}$")


def _balanced_phases(a, markers, t_lo, t_hi):
    """Balanced: phase 1 (attention grows) until a_k = ½, then phase 2 (ℓ_k ∝ 1/t) to ℓ_k = ε_ℓ."""
    t_half = _median([m["t_attention_half"] for m in markers.values()])
    t_conv = _median([m[f"t_error_{EPS_ERROR:g}"] for m in markers.values()])
    if np.isfinite(t_half):
        a.axvspan(t_lo, t_half, color=PALETTE[2], alpha=0.07, lw=0)
        _vline(a, t_half, PALETTE[2], r"$a_k = ½$ (phase 1 ends)")
        a.text((t_lo * t_half) ** 0.5, 0.86, "phase 1:\nattention grows", transform=a.get_xaxis_transform(),
               fontsize=8, color=PALETTE[2], ha="center", va="top")
        a.text((t_half * t_hi) ** 0.5, 0.86, "phase 2:\n" + r"$\ell_k \propto 1/t$",
               transform=a.get_xaxis_transform(), fontsize=8, color=PALETTE[0], ha="center", va="top")
    _vline(a, t_conv, PALETTE[0], rf"$\ell_k = {EPS_ERROR:g}$")


# -- attention concentration ----------------------------------------------------------------------
def attention_figure(run, views):
    """a_k(t) balanced and imbalanced; the phases of an under-represented feature (masses and the
    cross-feature score B̄_k); full W^KQ, W^PV training against the Q-only reduced dynamics."""
    kinds = _views_by_kind(views)
    fig, ax = new_figure(3, 2, size=(5.6, 3.9))
    t_lo = _left_edge([r for _, r in kinds.values()])
    for j, kind in enumerate(("balanced", "imbalanced")):
        if kind in kinds:
            _attention_panel(ax[0, j], kinds[kind][1], kind, t_lo)
        else:
            _no_data(ax[0, j], f"no {kind} run")
    if "imbalanced" in kinds:
        _minor_mass_panel(ax[1, 0], kinds["imbalanced"][1], t_lo)
        _cross_score_panel(ax[1, 1], kinds["imbalanced"][1], t_lo)
    else:
        _no_data(ax[1, 0], "no imbalanced run")
        _no_data(ax[1, 1], "no imbalanced run")
    if "full" in kinds:
        _full_attention_panel(ax[2, 0], kinds["full"][1], t_lo)
        _value_scale_panel(ax[2, 1], kinds["full"][1], t_lo)
    else:
        _no_data(ax[2, 0], r"no full $W^{KQ}$, $W^{PV}$ run")
        _no_data(ax[2, 1], r"no full $W^{KQ}$, $W^{PV}$ run")
    return finish(fig, run.path / "figures" / "attention.png")


def _attention_panel(a, r, kind: str, t_lo: float):
    """a_k(t) of every feature, with the phase markers (balanced: two phases; imbalanced: I–IV)."""
    c = r.config
    imb = kind == "imbalanced"
    for k in range(c.task.K):
        t, v = seed_matrix(r, f"probe/same_feature_attention/{k}")
        if imb:  # the minor features move together: one legend entry for them
            lab = _feature_label(0, r) if k == 0 else (f"k = 1–{c.task.K - 1} (minor, p = "
                                                        f"{c.task.probabilities()[1]:.2g})" if k == 1 else None)
        else:
            lab = _feature_label(k, r) if c.task.K <= 5 else None
        plot_trained(a, t, v, _color(k, imb), lab)
        _plot_theory(a, r, f"probe/same_feature_attention/{k}")
    a.axhline(0.5, color="grey", lw=0.8, ls=":")
    a.axhline(1 - EPS_ATTENTION, color="grey", lw=0.8, ls="-.")
    a.text(0.99, 1 - EPS_ATTENTION, r"$1 - \varepsilon$ ", transform=a.get_yaxis_transform(), ha="right",
           va="top", fontsize=7, color="grey")
    markers = fa.markers_of(r)
    _strip(a)
    t_hi = _data_range(r)[1]
    if imb:  # the markers are named in the legend of the panel below
        _minor_phases(a, _minor_markers(markers, fa.minor_features(r)), t_lo, with_labels=False)
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


def _minor_mass_panel(a, r, t_lo: float, k: int = 1):
    """An under-represented feature, phase by phase: its queries' attention masses."""
    c = r.config
    names = [(f"probe/attention_mass/{k}/{k}", rf"own feature ($a_{k}$)", PALETTE[0]),
             (f"probe/attention_mass/{k}/0", "dominant feature 0", FEATURE_COLORS[0])]
    for name, lab, col in names:
        t, v = seed_matrix(r, name)
        plot_trained(a, t, v, col, lab)
        _plot_theory(a, r, name)
    others = [n for n in range(1, c.task.K) if n != k]
    if others:
        stacks = [seed_matrix(r, f"probe/attention_mass/{k}/{n}") for n in others]
        if all(s[1].size for s in stacks):
            plot_trained(a, stacks[0][0], np.mean([s[1] for s in stacks], axis=0), PALETTE[3],
                          "other minor features (mean)")
    _strip(a)
    _minor_phases(a, fa.markers_of(r).get(k, {}), t_lo)
    log_axes(a, y=False)
    a.set_xlim(t_lo, _data_range(r)[1])
    a.set_xlabel("time = Σ lr")
    a.set_ylabel(f"attention mass, queries of feature {k}")
    a.set_title(f"imbalanced: phases I–IV of minor feature {k} (between the markers)", fontsize=9.5)
    # upper left: above the dominant mass (≤ 0.6) and before the own mass rises
    a.legend(fontsize=6, loc="upper left", bbox_to_anchor=(0.0, 0.87), labelspacing=0.3)


def _cross_scores(r, kk: int, source: str):
    """(time, B̄_kk) from the trained scores ((S, T)) or the reduced dynamics ((T,)), or (None, None)."""
    pairs, t = {}, None
    for n in range(1, r.config.task.K):
        if n != kk:
            t, v = seed_matrix(r, f"probe/score/{kk}/{n}") if source == "train" else theory_curve(
                r, f"probe/score/{kk}/{n}")
            if v.size:
                pairs[(kk, n)] = v
    return t, fa.cross_score_curve(pairs, kk, r.config.task.K)


def _cross_score_panel(a, r, t_lo: float, k: int = 1):
    """The cross-feature score B̄_k of the minor features: the rise before the fall."""
    m = fa.markers_of(r).get(k, {})
    for kk in fa.minor_features(r):
        t, cross = _cross_scores(r, kk, "train")
        if cross is not None:
            plot_trained(a, t, cross, _color(kk, True), rf"$\bar B_{kk}$" if kk <= 4 else None, lw=1.4)
        tt, cth = _cross_scores(r, kk, "theory")
        if cth is not None and kk == 1:
            keep = tt > 0
            a.plot(tt[keep], cth[keep], color="grey", ls="--", lw=1.4, label="reduced dynamics")
    peak = m.get("cross_rise")
    a.axhline(0, color="grey", lw=0.8)
    _vline(a, m.get("t_cross_peak"), MINOR_PHASES[0][2], r"$\bar B_1$ peaks")
    _vline(a, m.get("t_overtake"), MINOR_PHASES[1][2], r"$a_1$ overtakes the dominant mass")
    log_axes(a, y=False)
    a.set_xlim(t_lo, _data_range(r)[1])
    hi = 2.5 * peak if peak and peak > 0 else 0.05
    a.set_ylim(-1.5 * hi, hi)
    fall = m.get("cross_fall")
    a.set_title(r"minor → other-minor cross score $\bar B_k = \mathrm{mean}_n\, v_n^\top Q v_k$", fontsize=9.5)
    if fall is not None:
        a.text(0.98, 0.05, f"rises by {peak:.3f}, then falls by {fall:.2f}\n(y-axis zoomed on the rise)",
               transform=a.transAxes, ha="right", va="bottom", fontsize=7)
    a.set_xlabel("time = Σ lr")
    a.set_ylabel("score")
    a.legend(fontsize=6.5, loc="lower left")


def _full_attention_panel(a, r, t_lo: float):
    """Full W^KQ, W^PV training against the Q-only reduced dynamics."""
    for k in range(r.config.task.K):
        t, v = seed_matrix(r, f"probe/same_feature_attention/{k}")
        plot_trained(a, t, v, _color(k, True), _feature_label(k, r))
        _plot_theory(a, r, f"probe/same_feature_attention/{k}")
    log_axes(a, y=False)
    a.set_xlim(t_lo, _data_range(r)[1])
    a.set_ylim(0, 1.02)
    a.set_xlabel("time = Σ lr")
    a.set_ylabel(r"$a_k$")
    a.set_title(r"full $W^{KQ}$, $W^{PV}$ training (dashed: Q-only reduced dynamics)", fontsize=9.5)
    a.legend(fontsize=6.5, loc="upper left")


def _value_scale_panel(a, r, t_lo: float):
    """W^PV's label weight under full training, and the weight that would minimise the loss at the
    Q-only reduced path's attention (`analysis.feature_convergence.optimal_value_scale`)."""
    t, v = seed_matrix(r, "probe/value_scale")
    plot_trained(a, t, v, PALETTE[1], r"$W^{PV}$ label weight (full training)")
    a.axhline(1.0, color="grey", lw=0.8, ls="--", label="Q-only model: fixed at 1")
    opt = fa.optimal_value_scale(r)
    if opt is not None:
        a.plot(opt[0], opt[1], color=PALETTE[1], ls=":", lw=1.2,
               label="loss-minimising weight at the Q-only\nreduced path's attention")
    log_axes(a, y=False)
    a.set_xlim(t_lo, _data_range(r)[1])
    a.set_xlabel("time = Σ lr")
    a.set_ylabel("value weight")
    a.set_title("why full training departs from the reduced dynamics", fontsize=9.5)
    a.legend(fontsize=6.5, loc="upper left")
