"""Figures of the linear-regression experiments, drawn from the run directory alone (metrics, curves
and the theory values stored in theory.parquet)."""

from __future__ import annotations

import numpy as np

from icldyn.analysis.linreg import LIMIT_CURVE, effective_matrix, error_rows, limit_loss, limit_matrix
from icldyn.analysis.runs import final_values, views
from icldyn.report.plots import PALETTE, finish, hline, log_axes, new_figure, plot_error_curves, plot_metric

LSA_CURVES = ["lsa", LIMIT_CURVE, "preconditioned_gd", "ridge", "averaging", "zero"]
GPT_CURVES = ["gpt", "ols", "ridge", "gd_1", "knn_3", "averaging", "zero"]


def lsa_overview(run):
    """Loss vs time with R*/2 and baselines; distance to Γ⁻¹; vU next to Γ⁻¹; error vs context length."""
    fig, ax = new_figure(2, 2)
    subruns = views(run)
    base = subruns[0][1]
    _lsa_training(ax[0, 0], subruns)
    target, trained = limit_matrix(base), effective_matrix(base)
    scale = target if np.isfinite(target).any() else trained  # runs stored before theory.parquet held B*
    vmax = float(np.nanmax(np.abs(scale))) if np.isfinite(scale).any() else 1.0
    for a, mat, title in ((ax[0, 1], trained, "trained vU (seed mean)"),
                          (ax[1, 0], target, "Γ⁻¹ (theory)")):
        _matrix_panel(fig, a, mat, title, vmax)
    _lsa_error_panel(ax[1, 1], base)
    return finish(fig, run.path / "figures" / "overview.png")


def _lsa_training(a, subruns):
    """Held-out loss and ‖vU − Γ⁻¹‖/‖Γ⁻¹‖ of each variant on the gradient-flow clock."""
    base = subruns[0][1]
    for i, (label, r) in enumerate(subruns):
        plot_metric(a, r, "loss/test", label=f"held-out loss ({label})", color=PALETTE[i])
        plot_metric(a, r, "probe/gamma_inv_distance", label=f"‖vU−Γ⁻¹‖/‖Γ⁻¹‖ ({label})", color=PALETTE[i + 3])
    hline(a, limit_loss(base), "R*/2 (theory)", "k")
    for j, name in enumerate(("zero", "averaging", "gd_1")):
        v = final_values(base, f"baseline/{name}")
        if np.isfinite(v).any():
            hline(a, float(np.nanmean(v)), f"{name} (estimator)", PALETTE[5 + j], ls=":")
    log_axes(a)
    a.set_xlabel("time = Σ lr")
    a.set_title("training on the gradient-flow clock")
    a.legend(fontsize=7)


def _matrix_panel(fig, a, mat, title, vmax):
    im = a.imshow(mat, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    a.set_title(title)
    fig.colorbar(im, ax=a, fraction=0.046)
    d = mat.shape[0]
    for i in range(d):
        for j in range(d):
            a.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=7)


def _lsa_error_panel(a, run):
    curves = error_rows(run)
    if not len(curves):
        return
    n_points = run.config.task.n_points
    styles = {"lsa": {"color": "k", "lw": 0, "marker": "o"}, LIMIT_CURVE: {"color": "k", "ls": "--"}}
    plot_error_curves(a, curves, order=LSA_CURVES, styles=styles)
    a.axvline(n_points, color="grey", lw=0.8, ls=":")
    # linear axis: noiseless least squares is exactly 0 past d points and would flatten a log axis
    zero = curves[curves["predictor"] == "zero"]["value"]
    a.set_ylim(0, 1.15 * float(zero.max()) if len(zero) else None)
    a.set_title(f"error vs context length (trained at N = {n_points})")
    a.legend(fontsize=7)


def gpt_overview(run):
    """Error/d vs number of in-context examples (model and estimators), and the training curve."""
    fig, ax = new_figure(1, 2, size=(5.5, 4.0))
    d = run.config.task.d
    a = ax[0, 0]
    styles = {"gpt": {"color": "k", "lw": 2.2}, "ols": {"color": PALETTE[0], "ls": "--"},
              "ridge": {"color": PALETTE[1], "ls": ":"}}
    plot_error_curves(a, error_rows(run), order=GPT_CURVES, styles=styles, scale=1 / d)
    a.axvline(d, color="grey", lw=0.8, ls=":")
    a.set_ylabel("squared error / d")
    a.set_ylim(-0.05, 1.6)
    a.set_title(f"in-context linear regression, d = {d}")
    a.legend(fontsize=7)
    a = ax[0, 1]
    plot_metric(a, run, "loss/train", label="train (½·MSE)", color=PALETTE[0], x="step")
    plot_metric(a, run, "loss/test", label="held-out (½·MSE)", color=PALETTE[1], x="step")
    log_axes(a)
    a.set_xlabel("step")
    a.set_title("training")
    a.legend(fontsize=7)
    return finish(fig, run.path / "figures" / "overview.png")
