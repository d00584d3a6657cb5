"""Figures of the multihead-tasks experiment: phases and semi-singular values of the main run,
single vs multi-head separation over I, and the one-task debiased-GD heads."""

from __future__ import annotations

import numpy as np

from icldyn.analysis.multihead import (SPECIALISED, base_view, loss_curve, loss_phases, noisy_view,
                                       seed_emergence_window, specialised_window, variant)
from icldyn.analysis.runs import record_at, seed_matrix, theory_constant
from icldyn.report.plots import PALETTE, finish, hline, log_axes, new_figure

TASK_STYLES = ["-", "--", ":", "-."]


def _seed_mean(run, name):
    """(time, seed-mean, min, max) of one metric, t > 0; None when absent."""
    t, v = seed_matrix(run, name)
    keep = t > 0
    if not keep.any():
        return None
    t, v = t[keep], v[:, keep]
    return t, np.nanmean(v, axis=0), np.nanmin(v, axis=0), np.nanmax(v, axis=0)


def _band(ax, run, name, color, label=None, ls="-", lw=1.8, scale=1.0):
    """Seed mean (and min-max band) of a metric over time. Held-out losses: the last record, measured on
    the larger final prompt set, is drawn as a dot rather than joined to the curve."""
    s = _seed_mean(run, name)
    if s is None:
        return
    t, mean, lo, hi = s
    tc = run.config.train
    final_dot = name.startswith(("loss/test", "probe/projected_loss")) and tc.eval_prompts != tc.eval_prompts_during
    k = len(t) - 1 if final_dot and len(t) > 1 else len(t)
    ax.plot(t[:k], mean[:k] / scale, color=color, ls=ls, lw=lw, label=label)
    if k < len(t):
        ax.plot(t[k:], mean[k:] / scale, "o", color=color, ms=4)
    if run.config.n_seeds > 1:
        ax.fill_between(t[:k], lo[:k] / scale, hi[:k] / scale, color=color, alpha=0.15, lw=0)


def _shade_phases(ax, phases, specialised=None, emergence=None, convergence=None, label=True):
    """Warm-up plateau (grey), the emergence phase of r_h (orange), where every head has r_h ≥ 0.9
    (green), and the convergence phase (blue): from the end of that allocated stage (else from the end
    of the last fast drop) to the end of training; each (start, end) or None."""
    if phases is not None and phases["warmup"] is not None:
        a, b, _ = phases["warmup"]
        ax.axvspan(a, b, color="0.85", alpha=0.6, lw=0, label="warm-up plateau" if label else None)
    if emergence is not None:
        ax.axvspan(*emergence, color=PALETTE[1], alpha=0.18, lw=0,
                   label="emergence (r_h rises to ≈1)" if label else None)
    if specialised is not None:
        ax.axvspan(*specialised, color=PALETTE[2], alpha=0.15, lw=0,
                   label="every head on one task (r ≥ 0.9)" if label else None)
    if convergence is not None:
        ax.axvspan(*convergence, color=PALETTE[0], alpha=0.10, lw=0,
                   label="convergence (heads pair up; loss creeps)" if label else None)


def overview_figure(run, views):
    """Main run: loss with phases, r_h, ω and μ per head and task, allocation matrix, attention scale."""
    main = base_view(run)
    if main is None or main.config.model.n_heads < 2:
        return None
    noisy = noisy_view(run) if main.config.task.noise_std == 0 else None
    seed = main.seeds[0]
    t, loss = loss_curve(main, seed)
    phases = loss_phases(t, loss) if len(t) > 5 else None
    window = specialised_window(main, seed)
    emergence = seed_emergence_window(main, seed)
    conv_start = window[1] if window is not None else (phases or {}).get("convergence_start")
    convergence = (conv_start, t[-1]) if conv_start is not None and conv_start < t[-1] else None
    shade = (phases, window, emergence, convergence)

    fig, ax = new_figure(2, 3, size=(5.2, 3.9))
    _loss_panel(ax[0, 0], main, seed, shade)
    _specialisation_panel(ax[0, 1], main, shade)
    for a, sym, title in ((ax[0, 2], "omega", "ω (key-query)"), (ax[1, 0], "mu", "μ (output-value)")):
        _semi_singular_panel(a, main, sym, title, shade)
    _allocation_panel(fig, ax[1, 1], main)
    _attention_regime_panel(ax[1, 2], main, noisy)
    return finish(fig, run.path / "figures" / "overview.png")


def _loss_panel(a, main, seed, shade):
    c = main.config
    H, I = c.model.n_heads, c.task.n_tasks
    _band(a, main, "loss/test", "k", label=f"held-out loss (H={H}, I={I})")
    _band(a, main, "loss/train", "0.5", label="training loss", ls="--", lw=1)
    for name, color, label in (("optimum/global/loss", PALETTE[2], "best H-head (numerical infimum)"),
                               ("optimum/one_head_per_task/loss", PALETTE[4], "best one-head-per-task"),
                               ("optimum/single_head/loss", PALETTE[3], "best single head")):
        hline(a, theory_constant(main, name), label, color)
    _shade_phases(a, *shade)
    log_axes(a)
    a.set_xlabel("time = Σ lr")
    a.set_ylabel("½·Σ_i squared error (held out)")
    a.set_title(f"loss and phases (seed {seed}; dot: final, on {c.train.eval_prompts:,} prompts)", fontsize=9)
    a.legend(fontsize=6.5, loc="lower left")


def _specialisation_panel(a, main, shade):
    H, I = main.config.model.n_heads, main.config.task.n_tasks
    for h in range(H):
        _band(a, main, f"probe/head_specialisation/{h}", PALETTE[h % 10], label=f"head {h}")
    a.axhline(1 / I, color="0.5", ls=":", lw=1, label="1/I (shared)")
    a.axhline(SPECIALISED, color="0.5", ls="--", lw=1, label=f"{SPECIALISED} (one task)")
    _shade_phases(a, *shade, label=False)
    a.set_xscale("log")
    a.set_ylim(1 / I - 0.05, 1.03)
    a.grid(True, alpha=0.3)
    a.set_xlabel("time = Σ lr")
    a.set_ylabel("r_h = max_i|ω_iμ_i| / Σ_i|ω_iμ_i|")
    a.set_title("head specialisation")
    a.legend(fontsize=7)


def _semi_singular_panel(a, main, sym, title, shade):
    H, I = main.config.model.n_heads, main.config.task.n_tasks
    for h in range(H):
        for i in range(I):
            _band(a, main, f"probe/{sym}/{h}/{i}", PALETTE[h % 10], ls=TASK_STYLES[i % 4],
                  label=f"head {h}, task {i}")
    a.axhline(0, color="0.3", lw=0.6)
    _shade_phases(a, *shade, label=False)
    a.set_xscale("log")
    a.grid(True, alpha=0.3)
    a.set_xlabel("time = Σ lr")
    a.set_title(f"semi-singular values {title}")
    a.legend(fontsize=6.5, ncol=2)


def _allocation_panel(fig, a, main):
    H, I = main.config.model.n_heads, main.config.task.n_tasks
    mats = []
    for s in main.seeds:
        at = record_at(main, s)
        # |ω_iμ_i| is the head's share of task i; the sign of ω shows the opposite-sign pairing
        mats.append(np.array([[at.get(f"probe/omega/{h}/{i}", np.nan) * abs(at.get(f"probe/mu/{h}/{i}", np.nan))
                               for i in range(I)] for h in range(H)]))
    mat = np.mean(mats, axis=0)
    vmax = np.nanmax(np.abs(mat)) or 1.0
    im = a.imshow(mat, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    for h in range(H):
        for i in range(I):
            share = abs(mat[h, i]) / np.nansum(np.abs(mat[h]))
            # white text where the cell's colour is saturated, black on the pale middle of the map
            color = "white" if abs(mat[h, i]) > 0.5 * vmax else "black"
            a.text(i, h, f"{mat[h, i]:+.2f}\n({share:.0%})", ha="center", va="center", fontsize=9,
                   color=color, fontweight="bold")
    a.set_xticks(range(I), [f"task {i}" for i in range(I)])
    a.set_yticks(range(H), [f"head {h}" for h in range(H)])
    a.set_title("final allocation: sign(ω_i)·|ω_iμ_i| (share of the head)", fontsize=9)
    fig.colorbar(im, ax=a, fraction=0.046)


def _attention_regime_panel(a, main, noisy):
    for r, color, label in ((main, "k", "σ = 0"), (noisy, PALETTE[0], None)):
        if r is None:
            continue
        label = label or f"σ = {r.config.task.noise_std:g}"
        scale = _head_mean_curve(r, "probe/score_scale")
        spread = _head_mean_curve(r, "probe/attention_spread")
        if scale is not None:
            a.plot(*scale, color=color, lw=1.8, label=f"score scale, {label}")
        if spread is not None:
            a.plot(*spread, color=color, lw=1.2, ls="--", label=f"fraction of keys attended, {label}")
    a.set_xscale("log")
    a.grid(True, alpha=0.3)
    a.set_xlabel("time = Σ lr")
    a.set_ylabel("score scale √Var_l(s_l); fraction of keys attended")
    a.set_title("attention regime (mean over heads and seeds)")
    a.legend(fontsize=7)


def _head_mean_curve(run, prefix):
    H = run.config.model.n_heads
    parts = [_seed_mean(run, f"{prefix}/{h}") for h in range(H)]
    if any(p is None for p in parts):
        return None
    return parts[0][0], np.mean([p[1] for p in parts], axis=0)


def separation_figure(run, views):
    """Loss per task vs time for H = 1 and H = I at each I, and the final ratio single/multi vs I."""
    views = dict(views)
    Is = sorted({r.config.task.n_tasks for r in views.values() if r.config.task.n_tasks >= 2
                 and variant(views, r.config.task.n_tasks, 1) is not None
                 and variant(views, r.config.task.n_tasks, r.config.task.n_tasks) is not None})
    if not Is:
        return None
    fig, ax = new_figure(1, 2, size=(5.6, 4.0))
    a = ax[0, 0]
    ratios = {}
    for k, I in enumerate(Is):
        one, multi = variant(views, I, 1), variant(views, I, I)
        _band(a, multi, "loss/test", PALETTE[k], label=f"I = {I}, H = {I}", scale=I)
        _band(a, one, "loss/test", PALETTE[k], label=f"I = {I}, H = 1", ls="--", scale=I)
        hline(a, theory_constant(one, "optimum/single_head/loss") / I, None, PALETTE[k], ls=":")
        ratios[I] = (one.final("loss/test") / multi.final("loss/test")).dropna()
    log_axes(a)
    a.set_xlabel("time = Σ lr")
    a.set_ylabel("held-out loss per task (½·squared error)")
    a.set_title("single (dashed) vs multi-head (solid); dotted: best single head")
    a.title.set_fontsize(9)
    a.legend(fontsize=7, ncol=2)

    a = ax[0, 1]
    xs = np.array(Is)
    mean = np.array([ratios[I].mean() for I in Is])
    a.plot(xs, mean, "o-", color="k", label="seed mean")
    for I in Is:
        a.scatter([I] * len(ratios[I]), ratios[I].values, color="0.5", s=14, zorder=3)
    for I, v in zip(xs, mean):
        a.annotate(f"{v:.2f}", (I, v), textcoords="offset points", xytext=(6, -10), fontsize=8)
    a.axhline(1, color="0.5", ls=":", lw=1)
    a.set_xticks(xs)
    a.set_xlabel("number of tasks I")
    a.set_ylabel("held-out loss ratio  H = 1 / H = I")
    a.set_ylim(0, max(mean.max() * 1.15, 1.5))
    a.grid(True, alpha=0.3)
    a.set_title("separation grows with I")
    a.legend(fontsize=7)
    return finish(fig, run.path / "figures" / "separation.png")


def debiased_figure(run, views):
    """One task, several heads: loss vs debiased/plain GD, and each head's (ω, μ) for both inits."""
    runs = [r for r in dict(views).values() if r.config.task.n_tasks == 1 and r.config.model.n_heads >= 2]
    if not runs:
        return None
    runs.sort(key=lambda r: r.config.head_signs)        # alternating first
    fig, ax = new_figure(1, 3, size=(4.8, 3.9))
    a = ax[0, 0]
    for k, r in enumerate(runs):
        _band(a, r, "loss/test", PALETTE[k], label=f"H = {r.config.model.n_heads}, {r.config.head_signs} init")
    ref = runs[0]
    # one-step GD and centred GD differ by ~1% here (centring costs one example): distinct colours, markers
    # and labels placed apart so that the two lines stay readable
    for k, (name, label, color, ls, marker) in enumerate((
            ("theory/centred_gd_loss", "centred GD (debiased GD)", PALETTE[4], "--", "v"),
            ("theory/gd_loss", "one-step GD", PALETTE[5], ":", "^"),
            ("optimum/single_head/loss", "best single head", PALETTE[3], "--", None))):
        value = theory_constant(ref, name)
        if not np.isfinite(value):
            continue
        a.axhline(value, color=color, ls=ls, lw=1.2)
        t_all = ref.metric("loss/test")["time"]
        t_all = t_all[t_all > 0]
        if marker is not None and len(t_all):
            xs = np.geomspace(t_all.min(), t_all.max(), 7)[k::2]
            a.plot(xs, [value] * len(xs), marker, color=color, ms=5, ls="none")
        a.plot([], [], ls=ls, marker=marker, color=color, label=f"{label}: {value:.4f}")
    log_axes(a)
    a.set_xlabel("time = Σ lr")
    a.set_ylabel("held-out loss")
    a.set_title("one task: loss vs debiased GD")
    a.legend(fontsize=7, loc="upper right")
    _zoom_inset(a, runs, ref)
    for j, (sym, title) in enumerate((("omega", "ω_h"), ("mu", "μ_h"))):
        a = ax[0, 1 + j]
        for k, r in enumerate(runs):
            for h in range(r.config.model.n_heads):
                _band(a, r, f"probe/{sym}/{h}/0", PALETTE[k], ls=TASK_STYLES[h % 4],
                      label=f"{r.config.head_signs}, head {h}")
        a.axhline(0, color="0.3", lw=0.6)
        a.set_xscale("log")
        a.grid(True, alpha=0.3)
        a.set_xlabel("time = Σ lr")
        a.set_title(f"{title} per head")
        a.legend(fontsize=6.5)
    return finish(fig, run.path / "figures" / "debiased.png")


def _zoom_inset(a, runs, ref):
    """Zoom on the end: the paired heads' loss against the two GD lines, ~1% apart."""
    from matplotlib.ticker import NullFormatter

    cgd, gd = theory_constant(ref, "theory/centred_gd_loss"), theory_constant(ref, "theory/gd_loss")
    t_end = ref.metric("loss/test")["time"].max()
    if np.isfinite(cgd) and np.isfinite(gd) and t_end > 0:
        z = a.inset_axes([0.08, 0.30, 0.42, 0.36])
        for k, r in enumerate(runs):
            if r.config.head_signs == "alternating":
                _band(z, r, "loss/test", PALETTE[k])
        z.axhline(cgd, color=PALETTE[4], ls="--", lw=1.2)
        z.axhline(gd, color=PALETTE[5], ls=":", lw=1.2)
        z.text(t_end / 8, cgd, f"centred GD {cgd:.4f}", color=PALETTE[4], fontsize=6.5, va="bottom")
        z.text(t_end / 8, gd, f"one-step GD {gd:.4f}", color=PALETTE[5], fontsize=6.5, va="top")
        z.set_xscale("log")
        z.set_xlim(t_end / 30, t_end * 1.3)
        z.set_ylim(min(cgd, gd) * 0.97, min(cgd, gd) * 1.3)
        z.xaxis.set_minor_formatter(NullFormatter())
        z.tick_params(labelsize=6)
        z.set_title("zoom: end of training", fontsize=7)
