"""Figures of the linear-regression experiments."""

from __future__ import annotations

import numpy as np

from icldyn.report.plots import PALETTE, finish, hline, log_axes, new_figure, plot_error_curves, plot_metric


def lsa_overview(run, views):
    """Loss vs time with R*/2 and baselines; distance to Γ⁻¹; vU next to Γ⁻¹; error vs context length."""
    from icldyn.experiments.linreg_lsa import lsa_limit_loss, task_covariance
    from icldyn.theory import linear_regression as theory

    fig, ax = new_figure(2, 2)
    base = views[0][1]
    c = base.config
    target = theory.optimal_matrix(task_covariance(c), c.task.n_points, c.task.noise_std).numpy()
    rstar_half = lsa_limit_loss(c)
    a = ax[0, 0]
    for i, (label, r) in enumerate(views):
        plot_metric(a, r, "loss/test", label=f"held-out loss ({label})", color=PALETTE[i])
        plot_metric(a, r, "probe/gamma_inv_distance", label=f"‖vU−Γ⁻¹‖/‖Γ⁻¹‖ ({label})", color=PALETTE[i + 3])
    hline(a, rstar_half, "R*/2 (theory)", "k")
    for j, name in enumerate(("zero", "averaging", "gd_1")):
        v = base.final(f"baseline/{name}")
        if len(v):
            hline(a, float(v.mean()), f"{name} (estimator)", PALETTE[5 + j], ls=":")
    log_axes(a)
    a.set_xlabel("time = Σ lr")
    a.set_title("training on the gradient-flow clock")
    a.legend(fontsize=7)

    B = np.zeros_like(target)
    d = target.shape[0]
    for i in range(d):
        for j in range(d):
            v = base.final(f"probe/effective/{i}/{j}")
            B[i, j] = v.mean() if len(v) else np.nan
    vmax = np.abs(target).max()
    for k, (mat, title) in enumerate(((B, "trained vU (seed mean)"), (target, "Γ⁻¹ (theory)"))):
        a = ax[0, 1] if k == 0 else ax[1, 0]
        im = a.imshow(mat, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        a.set_title(title)
        fig.colorbar(im, ax=a, fraction=0.046)
        for i in range(d):
            for j in range(d):
                a.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=7)

    a = ax[1, 1]
    curves = base.curves
    if len(curves):
        order = ["lsa", "theory:lsa_limit", "preconditioned_gd", "ridge", "averaging", "zero"]
        styles = {"lsa": {"color": "k", "lw": 0, "marker": "o"}, "theory:lsa_limit": {"color": "k", "ls": "--"}}
        plot_error_curves(a, curves, order=order, styles=styles)
        a.axvline(c.task.n_points, color="grey", lw=0.8, ls=":")
        # linear axis: noiseless least squares is exactly 0 past d points and would flatten a log axis
        zero = curves[curves["predictor"] == "zero"]["value"]
        a.set_ylim(0, 1.15 * float(zero.max()) if len(zero) else None)
        a.set_title(f"error vs context length (trained at N = {c.task.n_points})")
        a.legend(fontsize=7)
    return finish(fig, run.path / "figures" / "overview.png")


def gpt_overview(run):
    """Error/d vs number of in-context examples (model and estimators), and the training curve."""
    fig, ax = new_figure(1, 2, size=(5.5, 4.0))
    c = run.config
    curves = run.curves.copy()
    curves["value"] /= c.task.d
    curves["stderr"] /= c.task.d
    a = ax[0, 0]
    styles = {"gpt": {"color": "k", "lw": 2.2}, "ols": {"color": PALETTE[0], "ls": "--"},
              "ridge": {"color": PALETTE[1], "ls": ":"}}
    plot_error_curves(a, curves, order=["gpt", "ols", "ridge", "gd_1", "knn_3", "averaging", "zero"], styles=styles)
    a.axvline(c.task.d, color="grey", lw=0.8, ls=":")
    a.set_ylabel("squared error / d")
    a.set_ylim(-0.05, 1.6)
    a.set_title(f"in-context linear regression, d = {c.task.d}")
    a.legend(fontsize=7)
    a = ax[0, 1]
    plot_metric(a, run, "loss/train", label="train (½·MSE)", color=PALETTE[0], x="step")
    plot_metric(a, run, "loss/test", label="held-out (½·MSE)", color=PALETTE[1], x="step")
    log_axes(a)
    a.set_xlabel("step")
    a.set_title("training")
    a.legend(fontsize=7)
    return finish(fig, run.path / "figures" / "overview.png")
