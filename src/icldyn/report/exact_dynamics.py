"""Figures of linear-exact-dynamics: training against the reduced ODE on the gradient-flow clock,
the plateau law over σ₀, the conserved quantity's drift over lr, and the spectral diagnostics.

Everything drawn comes from the run directory: metrics.parquet, and theory.parquet (the ODE's
curves and constants, written by the experiment after training); the markers and fits are
analysis/exact_dynamics.py's, the same the claims use.
"""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

from icldyn.analysis import exact_dynamics as ed
from icldyn.analysis.fits import fit_line
from icldyn.analysis.phases import detect_plateaus
from icldyn.analysis.runs import metric_curve, theory_constant, theory_curve
from icldyn.report.plots import PALETTE, finish, hline, log_axes, new_figure

MODE_COLORS = [PALETTE[i] for i in (0, 1, 2, 4, 5, 6, 8, 9)]
X_BLOCK = ed.X_BLOCK


def _curve(run, name: str, seed=None):
    """(time, value) of one metric for one seed (default: the first), t > 0, in step order."""
    return metric_curve(run, name, run.seeds[0] if seed is None else seed, positive_time=True)


def _theory(run, name: str):
    t, v = theory_curve(run, name)
    return t[t > 0], v[t > 0]


def _shade_stages(ax, times, alpha=0.06, labels=False):
    """Alternate light bands between consecutive ODE ½-crossing times (stage k: k modes learned),
    a dotted line at each crossing, and (optionally) the stage names along the top."""
    edges = [t for t in times if np.isfinite(t)]
    lo, hi = ax.get_xlim()
    bounds = [lo, *edges, hi]
    for k in range(len(bounds) - 1):
        if k % 2 == 0:
            ax.axvspan(bounds[k], bounds[k + 1], color="k", alpha=alpha, lw=0)
        if labels:
            mid = np.sqrt(bounds[k] * bounds[k + 1])
            text = "plateau" if k == 0 else f"{k} mode{'s' if k > 1 else ''}"
            ax.text(mid, 1.0, text, transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=7,
                    color="dimgrey")
    for k, t in enumerate(edges):
        ax.axvline(t, color=MODE_COLORS[k % len(MODE_COLORS)], lw=0.8, ls=":")
    ax.set_xlim(lo, hi)


def all_figures(run) -> list:
    roles = ed.roles(run)
    out = []
    if "staged" in roles or "sgd" in roles:
        out.append(dynamics_figure(run, roles))
    if len(roles.get("plateau", [])) >= 2:
        out.append(plateau_figure(run, [r for _, r in roles["plateau"]]))
    if len(roles.get("conservation", [])) >= 2:
        out.append(conservation_figure(run, [r for _, r in roles["conservation"]], roles))
    if any(k in roles for k in ("staged", "generic", "noncommuting")):
        out.append(spectral_figure(run, roles))
    return out


# -- 1. loss and modes against the ODE -------------------------------------------------------------
def dynamics_figure(run, roles):
    main = (roles.get("staged") or roles.get("sgd"))[0][1]
    sgd = roles.get("sgd", [(None, None)])[0][1] if "staged" in roles else None
    crossings = ed.ode_crossings(main) if ed.ode_applies(main.config) else []
    fig, ax = new_figure(1, 3, size=(5.4, 4.2))
    _loss_panel(ax[0, 0], main, sgd)
    _modes_panel(ax[0, 1], main, sgd, crossings)
    _drift_panel(ax[0, 2], main, sgd, crossings)
    return finish(fig, run.path / "figures" / "dynamics.png")


def _loss_panel(a, main, sgd):
    c = main.config
    metric = ed.loss_metric(c)
    t, y = _curve(main, metric)
    how = "population gradients" if metric == "loss/train" else "SGD"
    a.plot(t, y, color="k", lw=2.2, alpha=0.45, label=f"training ({how})")
    if sgd is not None:
        ts, ys = _curve(sgd, "loss/test")
        a.plot(ts, ys, color=PALETTE[3], lw=1.0, alpha=0.8,
               label=f"minibatch SGD (batch {sgd.config.train.batch_size}, held-out)")
    tt, yt = _theory(main, "loss")
    if len(tt):
        a.plot(tt, yt, color="k", ls="--", lw=1.2, label="reduced ODE")
    hline(a, theory_constant(main, "saddle_loss"), "saddle ½ tr Λ", "grey", ls=":")
    hline(a, theory_constant(main, "optimal_loss"), "R*/2 (fixed point)", PALETTE[2], ls=":")
    # detected on L − L* (just below the lowest value), so the slow approach to the fixed point and a
    # late mode's small drop are not read as one long plateau; the stages are the bands of the ½-crossings
    live = (t > 0) & np.isfinite(y)
    found = detect_plateaus(t[live], y[live], floor=0.99 * float(np.min(y[live]))) if live.sum() >= 3 else []
    for k, p in enumerate(found):
        a.axvspan(p.start, p.end, color="grey", alpha=0.15, lw=0,
                  label="plateau (detected on L − L*)" if k == 0 else None)
    log_axes(a)
    a.set_xlabel("time = Σ lr")
    a.set_ylabel("loss (½·MSE)")
    lam = ", ".join(f"{v:g}" for v in ed.modes_eigenvalues(c))
    a.set_title(f"loss vs the ODE (λ = {lam}, σ₀ = {c.model.init_scale:g})")
    a.legend(fontsize=7, loc="lower left")


def _modes_panel(a, main, sgd, crossings):
    lam = ed.modes_eigenvalues(main.config)
    for i in range(main.config.task.d):
        col = MODE_COLORS[i % len(MODE_COLORS)]
        t, y = _curve(main, f"probe/mode_progress/{i}")
        a.plot(t, y, color=col, lw=2.2, alpha=0.5, label=f"mode {i} (λ = {lam[i]:g})")
        tt, yt = _theory(main, f"mode_progress/{i}")
        if len(tt):
            a.plot(tt, yt, color=col, ls="--", lw=1.1)
        if sgd is not None:
            ts, ys = _curve(sgd, f"probe/mode_progress/{i}")
            a.plot(ts, ys, color=col, lw=0.8, ls="-.", alpha=0.9)
    a.plot([], [], color="k", ls="--", lw=1.1, label="reduced ODE")
    if sgd is not None:
        a.plot([], [], color="k", ls="-.", lw=0.8, label="minibatch SGD")
    a.axhline(ed.HALF, color="grey", lw=0.8)
    a.set_xscale("log")
    a.grid(True, alpha=0.3)
    a.set_ylim(-0.05, 1.12)
    _shade_stages(a, crossings, labels=True)
    a.set_xlabel("time = Σ lr")
    a.set_ylabel("mode progress γ_i b_i")
    a.set_title("modes switch on in order of λ (dotted: ODE ½-crossings)", pad=14)
    a.legend(fontsize=7, loc="upper left")


def _drift_panel(a, main, sgd, crossings):
    for r, label, col in ((main, "GD, population gradients", "k"), (sgd, "minibatch SGD", PALETTE[3])):
        if r is None:
            continue
        t, y = ed.relative_drift_curve(r, r.seeds[0])
        if len(t):
            a.plot(t, y, color=col, lw=1.5, label=label)
    a.set_xscale("log")
    a.set_yscale("log")
    a.grid(True, alpha=0.3)
    _shade_stages(a, crossings)
    a.set_xlabel("time = Σ lr")
    a.set_ylabel("|C(t) − C(0)| / max(‖p‖² + ‖Q‖²)")
    a.set_title("conserved C = ‖p‖² − ‖Q‖_F²: relative drift")
    a.legend(fontsize=7, loc="upper left")


# -- 2. plateau length vs σ₀ -------------------------------------------------------------------------
def plateau_figure(run, runs):
    runs, x = ed.by_init_scale(runs)
    c = runs[0].config
    lam = np.asarray(c.task.eigenvalue_list(), float)
    rho = theory_constant(runs[0], "escape_rate")
    fig, ax = new_figure(1, 2, size=(5.6, 4.2))
    a = ax[0, 0]
    cmap = matplotlib.colormaps["viridis"]
    for k, r in enumerate(runs):
        col = cmap(k / max(len(runs) - 1, 1))
        t, y = _curve(r, "loss/train")
        a.plot(t, y, color=col, lw=2.0, alpha=0.6, label=f"σ₀ = {r.config.model.init_scale:g}")
        tt, yt = _theory(r, "loss")
        if len(tt):
            a.plot(tt, yt, color="k", ls="--", lw=0.7)
        te = ed.escape_time(r, r.seeds[0])
        if np.isfinite(te):
            a.plot([te], [np.interp(np.log(te), np.log(t), y)], "o", color=col, ms=5, mec="k")
    a.plot([], [], color="k", ls="--", lw=0.7, label="reduced ODE")
    a.set_xscale("log")
    a.grid(True, alpha=0.3)
    a.set_xlabel("time = Σ lr")
    a.set_ylabel("loss (½·MSE)")
    a.set_title(f"escape from the saddle (λ = {', '.join(f'{v:g}' for v in lam)}); dots: halfway")
    a.legend(fontsize=7)

    a = ax[0, 1]
    t = np.array([ed.escape_time(r, r.seeds[0]) for r in runs])
    ok = np.isfinite(t)
    a.plot(x[ok], t[ok], "o", color="k", ms=7, label="measured escape time", zorder=3)
    if ok.sum() >= 3:
        f = fit_line(x[ok], t[ok])
        xs = np.linspace(x.min() - 0.3, x.max() + 0.3, 10)
        a.plot(xs, f["intercept"] + f["slope"] * xs, color="k", lw=1,
               label=f"fit: {f['slope']:.3f} per decade (95% CI {f['ci'][0]:.3f}–{f['ci'][1]:.3f})")
        xm, tm = x[ok].mean(), t[ok].mean()
        theory, lam1 = np.log(10) / rho, np.log(10) / lam.max() ** 2
        for slope, label, col, ls in ((theory, f"theory ln10/ρ = {theory:.3f} (ρ = {rho:.3f})", PALETTE[3], "--"),
                                      (lam1, f"λ₁² alone: ln10/λ₁² = {lam1:.3f}", "grey", ":")):
            a.plot(xs, tm + slope * (xs - xm), color=col, ls=ls, lw=1.5, label=label)
    a.grid(True, alpha=0.3)
    a.set_xlabel("log10(1/σ₀)")
    a.set_ylabel("escape time (loss halfway down)")
    a.set_title("plateau length grows by ln(10)/ρ per decade of σ₀")
    a.legend(fontsize=7, loc="upper left")
    return finish(fig, run.path / "figures" / "plateau_law.png")


# -- 3. conservation ---------------------------------------------------------------------------------
def conservation_figure(run, runs, roles):
    fig, ax = new_figure(1, 2, size=(5.6, 4.2))
    a = ax[0, 0]
    groups = {"population": ("GD, population gradients", "k", "o"), "sampled": ("minibatch SGD", PALETTE[3], "s")}
    for mode, (label, col, marker) in groups.items():
        rs = ed.by_gradient(runs, mode)
        if len(rs) < 2:
            continue
        lrs = np.array([r.config.train.lr for r in rs])
        drift = np.array([ed.conserved_drift(r).mean() for r in rs])
        if mode == "sampled":
            label += f" (batch {rs[0].config.train.batch_size})"
        a.plot(lrs, drift, marker, color=col, ms=7, label=label)
        if np.all(drift > 0) and len(rs) >= 3:
            f = fit_line(np.log(lrs), np.log(drift))
            xs = np.geomspace(lrs.min() / 1.3, lrs.max() * 1.3, 10)
            a.plot(xs, np.exp(f["intercept"]) * xs ** f["slope"], color=col, lw=1,
                   label=f"fit: drift ∝ lr^{f['slope']:.2f} (CI {f['ci'][0]:.2f}–{f['ci'][1]:.2f})")
            a.plot(xs, drift[0] * xs / lrs[0], color=col, ls=":", lw=1)
    a.plot([], [], color="grey", ls=":", label="∝ lr (theory: gradient flow conserves C)")
    log_axes(a)
    _lr_ticks(a, sorted({r.config.train.lr for r in runs}))
    t_end = runs[0].config.conservation_time
    a.set_xlabel("learning rate")
    a.set_ylabel(f"max |C(t) − C(0)| over t ≤ {t_end:g}")
    a.set_title("C = ‖p‖² − ‖Q‖_F²: drift vanishes ∝ lr")
    a.legend(fontsize=7, loc="upper left")

    a = ax[0, 1]
    cmap = matplotlib.colormaps["plasma"]
    lrs = sorted({r.config.train.lr for r in runs})
    for r in sorted(runs, key=lambda r: r.config.train.lr):
        col = cmap(0.85 * lrs.index(r.config.train.lr) / max(len(lrs) - 1, 1))
        t, y = _curve(r, "probe/conserved")
        ls = "-" if r.config.train.gradient == "population" else "--"
        lab = f"lr = {r.config.train.lr:g}" if r.config.train.gradient == "population" else None
        drift = np.abs(y - y[0])
        keep = drift > 0
        a.plot(t[keep], drift[keep], color=col, ls=ls, lw=1.4, label=lab)
    a.plot([], [], color="k", ls="-", label="GD, population")
    a.plot([], [], color="k", ls="--", label="minibatch SGD")
    log_axes(a)
    a.set_xlabel("time = Σ lr")
    a.set_ylabel("|C(t) − C(0)|")
    c = runs[0].config
    a.set_title(f"drift over time (σ₀ = {c.conservation_init_scale:g}, staged λ): solid GD, dashed SGD")
    a.legend(fontsize=7, loc="upper left", ncol=2)
    return finish(fig, run.path / "figures" / "conservation.png")


def _lr_ticks(ax, lrs):
    ax.xaxis.set_major_locator(FixedLocator(lrs))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticklabels([f"{v:g}" for v in lrs])


# -- 4. spectral diagnostics -------------------------------------------------------------------------
NAMES = {"zfb": "ZFB init", "zfb_random": "ZFB blocks, random Θ", "gaussian": "all-blocks Gaussian"}
STYLES = {"zfb": dict(ls="-", lw=2.6, alpha=0.35), "zfb_random": dict(ls="--", lw=1.4, alpha=1.0),
          "gaussian": dict(ls="-", lw=1.0, alpha=0.7)}


def spectral_figure(run, roles):
    fig, ax = new_figure(1, 3, size=(5.4, 4.2))
    entries = [(lbl, r, col) for (lbl, r), col in
               zip(roles.get("staged", []) + roles.get("noncommuting", []) + roles.get("generic", []),
                   ("k", PALETTE[0], PALETTE[3], PALETTE[4]))]
    ref = (roles.get("staged") or roles.get("noncommuting") or roles.get("generic"))[0][1]
    crossings = ed.ode_crossings(ref)
    _erank_panel(ax[0, 0], entries, ref, crossings)
    _overlap_panel(ax[0, 1], entries, roles.get("staged", []), crossings)
    _route_panel(ax[0, 2], roles.get("generic", []))
    return finish(fig, run.path / "figures" / "spectral.png")


def _erank_panel(a, entries, ref, crossings):
    for label, r, col in entries:
        st = STYLES[r.config.model.init]
        for k, s in enumerate(r.seeds):
            t, y = _curve(r, f"probe/erank/{X_BLOCK}", s)
            a.plot(t, y, color=col, ls=st["ls"], lw=st["lw"] if k == 0 else 0.7, alpha=st["alpha"],
                   label=(f"{NAMES[r.config.model.init]} ({len(r.seeds)} seed{'s' if len(r.seeds) > 1 else ''})"
                          if k == 0 else None))
    target = theory_constant(ref, "erank_gamma_inv")
    hline(a, target, f"erank(Γ⁻¹) = {target:.3f} (the limit)", PALETTE[2], ls=":")
    collapse = theory_constant(ref, "erank_lambda_squared")
    hline(a, collapse, f"erank(Λ²) = {collapse:.3f} (escape direction)", PALETTE[7], ls=":")
    a.set_xscale("log")
    a.grid(True, alpha=0.3)
    _shade_stages(a, crossings, labels=True)
    a.set_xlabel("time = Σ lr")
    a.set_ylabel("effective rank of $W^{KQ}$'s x-block (U)")
    a.set_title("rank of U: erank(Λ²) at the plateau's end, rising as modes switch on", fontsize=9, pad=14)
    a.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)


def _overlap_panel(a, entries, staged, crossings):
    if staged:  # the top singular direction of U moves r₁ → r₂ → r₃ as the modes switch on
        r = staged[0][1]
        for i in range(r.config.task.d):
            t, y = _curve(r, f"probe/eigen_overlap/{X_BLOCK}/{i}")
            a.plot(t, y, color=MODE_COLORS[i % len(MODE_COLORS)], lw=2.4, alpha=0.45,
                   label=f"(u₁·r_{i + 1})², ZFB init")
        t, y = _curve(r, f"probe/overlap_final/{X_BLOCK}")
        a.plot(t, y, color="k", lw=0.9, ls="--", label="overlap with the final checkpoint (ZFB)")
        t, y = _curve(r, f"probe/overlap_prev/{X_BLOCK}")
        a.plot(t, y, color="grey", lw=0.9, ls=":", label="overlap with the previous record (ZFB)")
    for label, r, col in entries:
        if r.config.model.init == "zfb":
            continue
        st = STYLES[r.config.model.init]
        for k, s in enumerate(r.seeds):
            t, y = _curve(r, f"probe/eigen_overlap/{X_BLOCK}/0", s)
            a.plot(t, y, color=col, ls=st["ls"], lw=1.4 if k == 0 else 0.7, alpha=st["alpha"],
                   label=f"(u₁·r₁)², {NAMES[r.config.model.init]}" if k == 0 else None)
        drop = ed.first_drop(r, r.seeds[0])
        if drop is not None:
            a.axvspan(drop.start, drop.midpoint, color=col, alpha=0.1, lw=0)
    a.set_xscale("log")
    a.grid(True, alpha=0.3)
    a.set_ylim(-0.03, 1.05)
    _shade_stages(a, crossings)
    a.set_xlabel("time = Σ lr")
    a.set_ylabel("top-1 subspace overlap")
    a.set_title("U's top singular vector u₁ against Λ's eigenvectors r_i\n"
                "(coloured band: first drop, start → midpoint)", fontsize=9)
    a.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)


def _route_panel(a, generic):
    if not generic:
        a.axis("off")
        return
    r = generic[0][1]
    for k, s in enumerate(r.seeds):
        col = MODE_COLORS[k % len(MODE_COLORS)]
        t, y = _curve(r, "probe/route/vu", s)
        a.plot(t, y, color=col, lw=1.5, label="‖p_y Q_x‖ (v U route)" if k == 0 else None)
        t, y = _curve(r, "probe/route/rank_one", s)
        a.plot(t, y, color=col, lw=1.0, ls="--", label="‖p_x‖‖q_y‖ (rank-one route)" if k == 0 else None)
    log_axes(a)
    a.set_xlabel("time = Σ lr")
    a.set_ylabel("norm of each route's part of B")
    a.set_title(f"all-blocks init: which route carries B ({len(r.seeds)} seeds)", fontsize=9)
    a.legend(fontsize=7, loc="lower right")
