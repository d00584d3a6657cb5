"""Figures of linear-exact-dynamics: training against the reduced ODE on the gradient-flow clock,
the plateau law over σ₀, the conserved quantity's drift over lr, and the spectral diagnostics."""

from __future__ import annotations

import numpy as np
import torch

from icldyn.report.plots import PALETTE, finish, hline, log_axes, new_figure

MODE_COLORS = [PALETTE[i] for i in (0, 1, 2, 4, 5, 6, 8, 9)]


def _roles(run) -> dict[str, list]:
    views = list(run.variants.items()) or [("run", run)]
    out: dict[str, list] = {}
    for label, r in views:
        out.setdefault("staged" if r.config.role == "all" else r.config.role, []).append((label, r))
    return out


def _curve(run, name: str, seed=None):
    """(time, value) of one metric for one seed (default: the first), t > 0, in step order."""
    m = run.metric(name)
    if m.empty:
        return np.array([]), np.array([])
    seed = m["seed"].min() if seed is None else seed
    m = m[(m["seed"] == seed) & (m["time"] > 0)].sort_values("step")
    return m["time"].values, m["value"].values


def _theory(run, name: str):
    th = run.theory[(run.theory["name"] == name) & (run.theory["time"] > 0)].sort_values("time")
    return th["time"].values, th["value"].values


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
    roles = _roles(run)
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
    from icldyn.experiments.exact_dynamics import ode_applies, system_for
    from icldyn.analysis.phases import detect_plateaus

    main = (roles.get("staged") or roles.get("sgd"))[0][1]
    sgd = roles.get("sgd", [(None, None)])[0][1] if "staged" in roles else None
    c = main.config
    system = system_for(c)
    crossings = system.crossing_times(c.model.init_scale) if ode_applies(c) else []
    fig, ax = new_figure(1, 3, size=(5.4, 4.2))

    a = ax[0, 0]
    metric = "loss/train" if c.train.gradient == "population" else "loss/test"
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
    hline(a, system.saddle_loss, "saddle ½ tr Λ", "grey", ls=":")
    hline(a, system.optimal_loss, "R*/2 (fixed point)", PALETTE[2], ls=":")
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
    a.set_title(f"loss vs the ODE (λ = {', '.join(f'{v:g}' for v in system.lam)}, σ₀ = {c.model.init_scale:g})")
    a.legend(fontsize=7, loc="lower left")

    a = ax[0, 1]
    for i in range(c.task.d):
        col = MODE_COLORS[i % len(MODE_COLORS)]
        t, y = _curve(main, f"probe/mode_progress/{i}")
        a.plot(t, y, color=col, lw=2.2, alpha=0.5, label=f"mode {i} (λ = {system.lam[i]:g})")
        tt, yt = _theory(main, f"mode_progress/{i}")
        if len(tt):
            a.plot(tt, yt, color=col, ls="--", lw=1.1)
        if sgd is not None:
            ts, ys = _curve(sgd, f"probe/mode_progress/{i}")
            a.plot(ts, ys, color=col, lw=0.8, ls="-.", alpha=0.9)
    a.plot([], [], color="k", ls="--", lw=1.1, label="reduced ODE")
    if sgd is not None:
        a.plot([], [], color="k", ls="-.", lw=0.8, label="minibatch SGD")
    a.axhline(0.5, color="grey", lw=0.8)
    a.set_xscale("log")
    a.grid(True, alpha=0.3)
    a.set_ylim(-0.05, 1.12)
    _shade_stages(a, crossings, labels=True)
    a.set_xlabel("time = Σ lr")
    a.set_ylabel("mode progress γ_i b_i")
    a.set_title("modes switch on in order of λ (dotted: ODE ½-crossings)", pad=14)
    a.legend(fontsize=7, loc="upper left")

    a = ax[0, 2]
    for r, label, col in ((main, "GD, population gradients", "k"), (sgd, "minibatch SGD", PALETTE[3])):
        if r is None:
            continue
        t, y = _curve(r, "probe/conserved")
        t0, y0 = _curve(r, "probe/pq_norm")
        if len(t):
            a.plot(t, np.abs(y - y[0]) / np.maximum.accumulate(y0), color=col, lw=1.5, label=label)
    a.set_xscale("log")
    a.set_yscale("log")
    a.grid(True, alpha=0.3)
    _shade_stages(a, crossings)
    a.set_xlabel("time = Σ lr")
    a.set_ylabel("|C(t) − C(0)| / max(‖p‖² + ‖Q‖²)")
    a.set_title("conserved C = ‖p‖² − ‖Q‖_F²: relative drift")
    a.legend(fontsize=7, loc="upper left")
    return finish(fig, run.path / "figures" / "dynamics.png")


# -- 2. plateau length vs σ₀ -------------------------------------------------------------------------
def plateau_figure(run, runs):
    from icldyn.experiments.exact_dynamics import escape_time, fit_line

    runs = sorted(runs, key=lambda r: -r.config.model.init_scale)
    c = runs[0].config
    lam = np.asarray(c.task.eigenvalue_list(), float)
    rho = float(np.sqrt((lam**4).sum()))
    fig, ax = new_figure(1, 2, size=(5.6, 4.2))
    a = ax[0, 0]
    cmap = __import__("matplotlib").colormaps["viridis"]
    for k, r in enumerate(runs):
        col = cmap(k / max(len(runs) - 1, 1))
        t, y = _curve(r, "loss/train")
        a.plot(t, y, color=col, lw=2.0, alpha=0.6, label=f"σ₀ = {r.config.model.init_scale:g}")
        tt, yt = _theory(r, "loss")
        if len(tt):
            a.plot(tt, yt, color="k", ls="--", lw=0.7)
        te = escape_time(r, r.seeds[0])
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
    sigma = np.array([r.config.model.init_scale for r in runs])
    x = np.log10(1 / sigma)
    t = np.array([escape_time(r, r.seeds[0]) for r in runs])
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
    from icldyn.experiments.exact_dynamics import conserved_drift, fit_line

    fig, ax = new_figure(1, 2, size=(5.6, 4.2))
    a = ax[0, 0]
    groups = {"population": ("GD, population gradients", "k", "o"), "sampled": ("minibatch SGD", PALETTE[3], "s")}
    for mode, (label, col, marker) in groups.items():
        rs = sorted([r for r in runs if r.config.train.gradient == mode], key=lambda r: r.config.train.lr)
        if len(rs) < 2:
            continue
        lrs = np.array([r.config.train.lr for r in rs])
        drift = np.array([conserved_drift(r).mean() for r in rs])
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
    cmap = __import__("matplotlib").colormaps["plasma"]
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
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    ax.xaxis.set_major_locator(FixedLocator(lrs))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticklabels([f"{v:g}" for v in lrs])


# -- 4. spectral diagnostics -------------------------------------------------------------------------
def spectral_figure(run, roles):
    from icldyn.experiments.exact_dynamics import first_drop, system_for
    from icldyn.probes.lsa_modes import X_BLOCK
    from icldyn.probes.spectral import effective_rank
    from icldyn.tasks.linear_regression import LinearRegressionTask
    from icldyn.theory.linear_regression import optimal_matrix

    fig, ax = new_figure(1, 3, size=(5.4, 4.2))
    entries = [(lbl, r, col) for (lbl, r), col in
               zip(roles.get("staged", []) + roles.get("noncommuting", []) + roles.get("generic", []),
                   ("k", PALETTE[0], PALETTE[3], PALETTE[4]))]
    ref = (roles.get("staged") or roles.get("noncommuting") or roles.get("generic"))[0][1]
    c = ref.config
    crossings = system_for(c).crossing_times(c.model.init_scale)
    target = float(effective_rank(optimal_matrix(LinearRegressionTask(c.task).covariance, c.task.n_points)))
    names = {"zfb": "ZFB init", "zfb_random": "ZFB blocks, random Θ", "gaussian": "all-blocks Gaussian"}

    styles = {"zfb": dict(ls="-", lw=2.6, alpha=0.35), "zfb_random": dict(ls="--", lw=1.4, alpha=1.0),
              "gaussian": dict(ls="-", lw=1.0, alpha=0.7)}
    a = ax[0, 0]
    for label, r, col in entries:
        st = styles[r.config.model.init]
        for k, s in enumerate(r.seeds):
            t, y = _curve(r, f"probe/erank/{X_BLOCK}", s)
            a.plot(t, y, color=col, ls=st["ls"], lw=st["lw"] if k == 0 else 0.7, alpha=st["alpha"],
                   label=(f"{names[r.config.model.init]} ({len(r.seeds)} seed{'s' if len(r.seeds) > 1 else ''})"
                          if k == 0 else None))
    hline(a, target, f"erank(Γ⁻¹) = {target:.3f} (the limit)", PALETTE[2], ls=":")
    lam2 = system_for(c).lam ** 2
    collapse = float(effective_rank(torch.diag(torch.as_tensor(lam2))))
    hline(a, collapse, f"erank(Λ²) = {collapse:.3f} (escape direction)", PALETTE[7], ls=":")
    a.set_xscale("log")
    a.grid(True, alpha=0.3)
    _shade_stages(a, crossings, labels=True)
    a.set_xlabel("time = Σ lr")
    a.set_ylabel("effective rank of $W^{KQ}$'s x-block (U)")
    a.set_title("rank of U: erank(Λ²) at the plateau's end, rising as modes switch on", fontsize=9, pad=14)
    a.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)

    a = ax[0, 1]
    staged = roles.get("staged", [])
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
        st = styles[r.config.model.init]
        for k, s in enumerate(r.seeds):
            t, y = _curve(r, f"probe/eigen_overlap/{X_BLOCK}/0", s)
            a.plot(t, y, color=col, ls=st["ls"], lw=1.4 if k == 0 else 0.7, alpha=st["alpha"],
                   label=f"(u₁·r₁)², {names[r.config.model.init]}" if k == 0 else None)
        drop = first_drop(r, r.seeds[0])
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

    a = ax[0, 2]
    generic = roles.get("generic", [])
    if generic:
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
    else:
        a.axis("off")
    return finish(fig, run.path / "figures" / "spectral.png")
