"""The figure of one evaluation: loss vs number of in-context examples, one panel per shift, the model
(seeds averaged) and every estimator with ±2 standard-error bands, the theory dashed where it predicts."""

from __future__ import annotations

import math
from pathlib import Path

from icldyn import store
from icldyn.report.plots import PALETTE, log_axes, new_figure, plot_error_curves

FIGURE = "error_vs_examples.png"
YLABEL = {"mse": "mean squared error", "cross_entropy": "cross-entropy (nats)", "error": "0–1 error"}


def error_figure(ev) -> Path:
    """evaluate/<set>/figures/error_vs_examples.png, written atomically."""
    curves = ev.curves
    labels = list(dict.fromkeys(curves["shift"]))
    cols = min(len(labels), 4)
    fig, axes = new_figure(math.ceil(len(labels) / cols), cols, size=(4.6, 3.6))
    model = ev.trained.config.model.name
    predictors = list(dict.fromkeys(curves["predictor"]))
    order = [model] + [p for p in predictors if p not in (model, "theory_lsa")]
    styles = {p: {"color": PALETTE[i]} for i, p in enumerate(order)}
    styles[model] = {"color": "black", "lw": 2.2, "marker": "o"}
    styles["theory_lsa"] = {"color": "black", "ls": "--", "lw": 1.4}  # theory beside the model it predicts
    metric = curves["metric"].iloc[0] if len(curves) else "mse"
    for ax, label in zip(axes.flat, labels):
        c = curves[curves["shift"] == label]
        plot_error_curves(ax, c, order=order + ["theory_lsa"], styles=styles)
        positive = c["value"] > 0
        log_y = metric != "error" and bool(positive.any())
        log_axes(ax, x=c["x"].nunique() > 2, y=log_y)
        if log_y:   # an interpolating estimator's 1e-14 at m ≥ d would flatten every other curve
            # and OLS's spike at m = d on noisy labels would squash them from above: the range follows
            # the model and the zero predictor
            ref = c.loc[c["predictor"].isin([model, "zero"]), "value"]
            top = float((ref if len(ref) else c["value"]).max()) * 3
            ax.set_ylim(max(float(c.loc[positive, "value"].min()) / 2, top * 1e-4), top)
        ax.set_title(f"shift: {label}", fontsize=10)
        ax.set_ylabel(YLABEL.get(metric, metric))
    for ax in list(axes.flat)[len(labels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="best", framealpha=0.7)
    fig.suptitle(f"{ev.trained.config.experiment}: step {ev.trained.step}, {len(ev.trained.seeds)} seed(s)", fontsize=10)
    fig.tight_layout()
    path = ev.path / "figures" / FIGURE
    store.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
