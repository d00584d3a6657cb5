"""Shared matplotlib helpers: seed-averaged curves on the gradient-flow clock, error-vs-context plots."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402



class _Cycle(tuple):
    """A colour list indexed modulo its length: a figure with more series than colours (a sweep of
    24 members) reuses colours instead of failing."""

    def __getitem__(self, index):
        return tuple.__getitem__(self, index % len(self) if isinstance(index, int) else index)


PALETTE = _Cycle(plt.get_cmap("tab10").colors)


def seed_band(frame: pd.DataFrame, x: str = "time"):
    """Mean and min/max over seeds of a metric's rows, by x. Returns (x, mean, lo, hi)."""
    g = frame.groupby(x)["value"]
    return g.mean().index.values, g.mean().values, g.min().values, g.max().values


def plot_metric(ax, run, name: str, *, label=None, color=None, x: str = "time", skip_zero: bool = True):
    m = run.metric(name)
    if m.empty:
        return
    if skip_zero:
        m = m[m[x] > 0]
    t, mean, lo, hi = seed_band(m, x)
    ax.plot(t, mean, label=label or name, color=color, lw=1.8)
    if run.config.n_seeds > 1:
        ax.fill_between(t, lo, hi, color=color, alpha=0.2, lw=0)


def plot_error_curves(ax, curves: pd.DataFrame, order=None, styles=None, scale: float = 1.0):
    """Error vs number of in-context examples with ±2 stderr bands (seeds averaged), from rows of
    curves.parquet (general schema: x, value, stderr), values multiplied by `scale`."""
    names = order or list(dict.fromkeys(curves["predictor"]))
    for i, name in enumerate(names):
        c = curves[curves["predictor"] == name]
        if c.empty:
            continue
        g = c.groupby("x").agg(mse=("value", "mean"), se=("stderr", "mean")) * scale
        style = (styles or {}).get(name, {})
        ax.plot(g.index, g["mse"], label=name, color=style.get("color", PALETTE[i % 10]),
                ls=style.get("ls", "-"), lw=style.get("lw", 1.5), marker=style.get("marker"))
        ax.fill_between(g.index, g["mse"] - 2 * g["se"], g["mse"] + 2 * g["se"],
                        color=style.get("color", PALETTE[i % 10]), alpha=0.15, lw=0)
    ax.set_xlabel("number of in-context examples")
    ax.set_ylabel("mean squared error")


def finish(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def new_figure(n_rows: int, n_cols: int, size=(5.0, 3.8)):
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(size[0] * n_cols, size[1] * n_rows), squeeze=False)
    return fig, axes


def log_axes(ax, x=True, y=True):
    if x:
        ax.set_xscale("log")
    if y:
        ax.set_yscale("log")
    ax.grid(True, which="major", alpha=0.3)


def hline(ax, value, label, color, ls="--"):
    if value is not None and np.isfinite(value):
        ax.axhline(value, color=color, ls=ls, lw=1, label=label)
