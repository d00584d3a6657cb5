"""Figures of softmax-regression: the theory checks, training of one d, and loss vs d. Draws only
what is in the run directory (curves.parquet samples, metrics, theory checks)."""

from __future__ import annotations

import numpy as np

from icldyn.analysis import softmax_regression as sr
from icldyn.analysis.runs import curve_rows, seed_matrix
from icldyn.report.plots import PALETTE, finish, log_axes, new_figure

ALIGN = sr.ALIGN


def figures(run) -> list:
    return [theory_figure(run), training_figure(run), loss_vs_d_figure(run)]


def _band(ax, run, name, label, color, x_log=True):
    t, v = seed_matrix(run, name)
    if not v.size:
        return
    steps = run.metric(name).groupby("time")["step"].first().reindex(t).to_numpy()
    keep = steps > 0 if x_log else np.ones_like(steps, dtype=bool)
    tc = run.config.train
    if tc.eval_prompts != tc.eval_prompts_during:   # the last record is on the larger held-out set: not a step
        keep &= steps < steps.max()
    mean, std = np.nanmean(v, 0)[keep], np.nanstd(v, 0)[keep]
    ax.plot(steps[keep], mean, color=color, label=label, lw=1.8)
    ax.fill_between(steps[keep], mean - std, mean + std, color=color, alpha=0.2, lw=0)


def theory_figure(run):
    r = sr.by_d(run)[0][1] if sr.by_d(run) else run
    fig, axes = new_figure(1, 4, size=(4.2, 3.6))
    panels = [("closed_form", "autograd ∂L/∂x_j", "closed form ∂L/∂x_j", "gradient vs autograd (float64)"),
              ("weight_shift", "½‖AΔx‖", "‖Δb‖ = ‖f(x+Δx) − f(x)‖", "weight shift: ½-Lipschitz"),
              ("data_shift", "½‖ΔA·x‖", "‖Δb‖ = ‖f(A+ΔA) − f(A)‖", "data shift: ½-Lipschitz")]
    for ax, (pred, xl, yl, title) in zip(axes[0], panels):
        c = curve_rows(r, predictor=pred)
        ax.scatter(c["x"], c["value"], s=5, alpha=0.5, color=PALETTE[0])
        if len(c):
            lim = [min(c["x"].min(), 0), c["x"].max()]
            ax.plot(lim, lim, "k--", lw=1, label="y = x (bound)" if pred != "closed_form" else "y = x")
        ax.set(xlabel=xl, ylabel=yl, title=title)
        ax.legend(fontsize=8)
    ax = axes[0][3]
    m = curve_rows(r, predictor="paper_M")
    a = curve_rows(r, predictor="attention_random")
    ax.hist(m["value"], bins=30, color=PALETTE[1], alpha=0.8, label="log(‖Δb‖ / M‖Δx‖)")
    ax.axvline(0, color="k", ls="--", lw=1, label="bound (0)")
    ax.set(xlabel="log(‖Δb‖ / M‖Δx‖)", ylabel="trials",
           title=(f"paper's M = n^1.5 e^(10R²), d = {r.config.task.d}\n(random attention layers: "
                  f"ΔT ratio ≤ {a['value'].max():.2f})") if len(a) else "paper's M")
    ax.legend(fontsize=8)
    return finish(fig, run.path / "figures" / "theory_checks.png")


def _training_view(run):
    """The view of d = 20 (the spec's default) when swept, else the largest d below it, else the first."""
    pairs = sr.by_d(run)
    for d, r in pairs:
        if d == 20:
            return d, r
    return pairs[0]


def training_figure(run):
    d, r = _training_view(run)
    fig, axes = new_figure(2, 3, size=(4.6, 3.5))
    ax = axes[0][0]
    _band(ax, r, "loss/test", "self-attention (held-out)", PALETTE[0])
    _band(ax, r, "baseline/gd_one_step", "one-step GD (tuned η)", PALETTE[1])
    opt = r.final("baseline/optimum")
    if len(opt) and float(opt.mean()) > 1e-6:
        ax.axhline(float(opt.mean()), color=PALETTE[2], ls=":", label="optimum (floor)")
    elif len(opt):
        ax.plot([], [], color=PALETTE[2], ls=":", label=f"optimum (floor): {float(opt.mean()):.0e}")
    log_axes(ax)
    ax.set(xlabel="step", ylabel="½·MSE over query words", title=f"losses over training (n = "
           f"{r.config.task.n_points}, d = {d})")
    ax.legend(fontsize=8)
    for ax, (key, title) in zip([axes[0][1], axes[0][2], axes[1][0]],
                                [("preds_diff", "prediction difference"), ("model_diff", "sensitivity difference"),
                                 ("model_cos", "sensitivity cosine")]):
        _band(ax, r, f"{ALIGN}/{key}", key, PALETTE[3])
        log_axes(ax, y=False)
        ax.set(xlabel="step", title=f"{title} vs one-step GD")
    ax = axes[1][1]
    for i, (name, label) in enumerate([("probe/shift/weight_ratio", "GD weight shift / ½‖AΔx‖"),
                                       ("probe/shift/data_ratio", "layer data shift / ½‖ΔA x*‖"),
                                       ("probe/shift/attention_ratio", "‖ΔT‖ / √n‖T‖‖W_V‖")]):
        _band(ax, r, name, label, PALETTE[4 + i])
    ax.axhline(1.0, color="k", ls="--", lw=1, label="bound")
    log_axes(ax, y=False)
    ax.set(xlabel="step", ylabel="worst ratio over tasks", title="shift bounds along training")
    ax.legend(fontsize=7)
    axes[1][2].axis("off")
    table = sr.sweep_table(run)
    text = "\n".join(f"d={int(t.d):3d}  SA {t.self_attention:.4f}  GD {t.gd_one_step:.4f}  opt {t.optimum:.1e}"
                     for t in table.itertuples())
    axes[1][2].text(0, 0.5, "final held-out losses (seed mean)\n" + text, family="monospace", fontsize=8,
                    va="center")
    return finish(fig, run.path / "figures" / "training.png")


def loss_vs_d_figure(run):
    t = sr.sweep_table(run)
    fig, axes = new_figure(1, 1, size=(5.2, 3.8))
    ax = axes[0][0]
    ax.errorbar(t["d"], t["self_attention"], yerr=t["self_attention_std"], marker="o", color=PALETTE[0],
                label="trained self-attention", capsize=3)
    ax.errorbar(t["d"], t["gd_one_step"], yerr=t["gd_one_step_std"], marker="s", color=PALETTE[1],
                label="one-step GD (tuned η)", capsize=3)
    floor = 1e-6   # the optimum recovers x* exactly when d < n: shown at this floor
    ax.plot(t["d"], np.maximum(t["optimum"], floor), marker="^", ls=":", color=PALETTE[2],
            label=f"optimum (clipped at {floor:g})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(t["d"], [str(int(d)) for d in t["d"]])
    ax.minorticks_off()
    ax.set(xlabel="embedding size d", ylabel="held-out ½·MSE over query words",
           title="loss vs d (bars: std over seeds)")
    ax.legend(fontsize=8)
    return finish(fig, run.path / "figures" / "loss_vs_d.png")
