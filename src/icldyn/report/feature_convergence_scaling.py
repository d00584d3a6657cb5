"""The K-scaling figure of feature-convergence: times to a_k > ½ and ℓ_k < ε_ℓ vs K with power-law
fits, the closed form (as the runs stored it in theory.parquet) and the training check (left);
ℓ_k(t) for each K with its crossings (right)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np

from icldyn.analysis import feature_convergence as fa
from icldyn.analysis.feature_convergence import EPS_ERROR
from icldyn.analysis.fits import fit_power_law
from icldyn.analysis.runs import theory_curve
from icldyn.report.feature_convergence import plot_trained
from icldyn.report.plots import PALETTE, finish, log_axes, new_figure

DASHED = (0, (3, 3))


def scaling_figure(run, views):
    """Times to a_k > ½ and ℓ_k < ε_ℓ vs K (left); ℓ_k(t) for each K (right)."""
    pts = fa.scaling_points(run, views)
    fig, ax = new_figure(1, 2, size=(5.6, 4.3))
    _times_panel(ax[0, 0], pts, views)
    cmap = plt.get_cmap("viridis")
    color = {Kv: cmap(i / max(len(pts["K"]) - 1, 1)) for i, Kv in enumerate(pts["K"])}
    a = ax[0, 1]
    if pts["source"] == "training":
        _trained_curves(a, run, views, color)
    else:
        _flow_curves(a, pts, views, color)
    a.axhline(EPS_ERROR, color="grey", lw=0.8, ls="-.")
    log_axes(a)
    a.set_xlabel("time = Σ lr")
    a.set_ylabel(r"$\ell_k$")
    a.legend(fontsize=7, loc="lower left")
    return finish(fig, run.path / "figures" / "k_scaling.png")


def _times_panel(a, pts: dict, views):
    """Crossing times vs K, their power-law fits, the closed form and the training check."""
    K = np.asarray(pts["K"], float)
    dense = np.geomspace(K.min() * 0.8, K.max() * 1.25, 100)
    trained = pts["source"] == "training"
    src = "trained" if trained else "reduced dynamics"
    chk = pts.get("check") or {}
    for i, (key, what, col, lab) in enumerate((("t_half", "attention", PALETTE[2], r"$a_k > ½$"),
                                               ("t_error", "error", PALETTE[0], rf"$\ell_k < {EPS_ERROR:g}$"))):
        y = np.asarray(pts[key], float)
        ok = np.isfinite(y)
        a.plot(K[ok], y[ok], "o", color=col, ms=6, label=f"time to {lab} ({src})")
        if ok.sum() >= 2:
            fit = fit_power_law(K[ok], y[ok])
            a.plot(dense, fit["prefactor"] * dense ** fit["exponent"], color=col, lw=1.2,
                   label=rf"fit: $K^{{{fit['exponent']:.2f}}}$ [{fit['ci'][0]:.2f}, {fit['ci'][1]:.2f}]")
        closed = np.asarray(fa.closed_form_times(views, pts["K"], what))
        has = np.isfinite(closed)
        if has.any():  # stored per K by the runs (at the K values, not between them)
            a.plot(K[has], closed[has], color=col, ls="--", lw=1, alpha=0.8, marker="_", ms=8,
                   label="closed form (large N)")
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


def _trained_curves(a, run, views, color):
    """The trained ℓ_k(t), mean over features (all alike, as the crossing times are read), per K."""
    for label, r in sorted(views, key=lambda v: v[1].config.task.K):
        Kv = r.config.task.K
        if not fa.is_scaling_run(label, run) or Kv not in color:
            continue
        trained = fa.mean_feature_curves(r, "train")
        if trained is not None:
            t, _, err = trained
            S = r.config.n_seeds
            # rows are feature-major (the seeds of feature 0, then of feature 1, ...): mean over features per seed
            plot_trained(a, t, err.reshape(Kv, S, -1).mean(0), color[Kv], f"K = {Kv}", lw=1.5)
        reduced = fa.mean_feature_curves(r, "theory")
        if reduced is not None:
            tt, _, terr = reduced
            keep = tt > 0
            a.plot(tt[keep], terr.mean(0)[keep], color="k", lw=0.9, ls=DASHED, alpha=0.75, zorder=5)
    a.plot([], [], color="k", ls=DASHED, lw=0.9, label="reduced dynamics")
    a.set_title(r"trained $\ell_k(t)$, mean over k, for each K (dashed: reduced dynamics)", fontsize=10)


def _flow_curves(a, pts, views, color):
    """scaling_source="theory": the reduced gradient flow's ℓ_k(t) per K with its two crossings."""
    for _, r in views:
        if not fa.has_scaling_flow(r):
            continue
        for i, Kv in enumerate(pts["K"]):
            t, e = theory_curve(r, f"scaling/K={Kv},N={pts['N'][i]}/feature_error")
            if e.size:
                keep = t > 0
                a.plot(t[keep], e[keep], color=color[Kv], lw=1.5, label=f"K = {Kv}")
                for tc in (pts["t_half"][i], pts["t_error"][i]):
                    if np.isfinite(tc):
                        a.plot([tc], [np.interp(np.log(tc), np.log(t[keep]), e[keep])], "o", color=color[Kv], ms=5)
        break
    a.set_title(r"$\ell_k(t)$ for each K (reduced gradient flow; dots: $a_k = ½$, $\ell_k = \varepsilon_\ell$)",
                fontsize=10)
