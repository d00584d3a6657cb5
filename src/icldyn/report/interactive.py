"""Interactive curves (plotly) of a stored run's main metrics, for its HTML page.

Each figure holds the seeds (thin lines), their mean and a band of ± one standard deviation across
seeds, on the step axis or the time axis (Σ lr, the clock the theory shares) — switched by buttons
in the figure, as are log axes. A sweep directory overlays its variants' means. Everything is read
from the run directory through the analysis layer; nothing is recomputed.

Figures are plain plotly.js specs ({"data": [...], "layout": {...}}): the page hands them to
`Plotly.newPlot` (plotly's Python objects validate every property and cost seconds a page).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from icldyn.analysis import runs as reader

MAIN_PREFIXES = ("loss/", "accuracy/", "error/", "baseline/")
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
          "#7f7f7f", "#bcbd22"]


def main_metrics(run, limit: int = 10) -> list[str]:
    """The metrics a page plots: loss, accuracy, error and baselines, in that order (at most `limit`)."""
    names: set[str] = set()
    for _, sub in reader.views(run):
        names.update(sub.metrics["name"].unique() if len(sub.metrics) else [])
    ordered = [n for p in MAIN_PREFIXES for n in sorted(names) if n.startswith(p)]
    return ordered[:limit]


def seed_table(run, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps (T,), times (T,), values (S, T)) of one metric; seeds share the clock of their run."""
    m = run.metric(name)
    if m.empty:
        return np.zeros(0), np.zeros(0), np.zeros((0, 0))
    table = m.pivot_table(index="step", columns="seed", values="value", aggfunc="mean").sort_index()
    times = m.groupby("step")["time"].first().reindex(table.index)
    return table.index.to_numpy(float), times.to_numpy(float), table.to_numpy(float).T


def _list(a) -> list:
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(a, dtype=float)]


def _scatter(x, y, **kw) -> dict:
    return {"type": "scatter", "x": _list(x), "y": _list(y), **kw}


def _band_traces(label: str, color: str, steps, times, values, *, seeds: bool) -> list[tuple[dict, tuple]]:
    """Traces (with their (step x, time x) pair) of the seeds, the mean and its ± std band."""
    out = []
    mean = np.nanmean(values, axis=0)
    if values.shape[0] > 1:
        std = np.nanstd(values, axis=0)
        band_x = (np.r_[steps, steps[::-1]], np.r_[times, times[::-1]])
        out.append((_scatter(band_x[0], np.r_[mean + std, (mean - std)[::-1]], fill="toself", mode="lines",
                             line={"width": 0}, fillcolor=color, opacity=0.18, hoverinfo="skip",
                             name=f"{label} ± std", legendgroup=label, showlegend=False), band_x))
        if seeds:
            for i, row in enumerate(values):
                out.append((_scatter(steps, row, mode="lines", line={"width": 0.8, "color": color}, opacity=0.45,
                                     name=f"{label} seed {i}", legendgroup=label, showlegend=False),
                            (steps, times)))
    name = f"{label} (mean of {values.shape[0]})" if values.shape[0] > 1 else label
    out.append((_scatter(steps, mean, mode="lines+markers", marker={"size": 4}, name=name, legendgroup=label,
                         line={"width": 2.2, "color": color}), (steps, times)))
    return out


def _axis_menu(pairs: list[tuple]) -> dict:
    """Buttons that switch every trace's x between the step and time = Σ lr."""
    step_x = [_list(p[0]) for p in pairs]
    time_x = [_list(p[1]) for p in pairs]
    return {"type": "buttons", "direction": "right", "x": 0, "y": 1.16, "xanchor": "left", "showactive": True,
            "buttons": [{"label": "step", "method": "update", "args": [{"x": step_x}, {"xaxis.title.text": "step"}]},
                        {"label": "time (Σ lr)", "method": "update",
                         "args": [{"x": time_x}, {"xaxis.title.text": "time = Σ lr"}]}]}


LAYOUT = {"height": 380, "margin": {"l": 60, "r": 20, "t": 80, "b": 50}, "legend": {"font": {"size": 10}},
          "paper_bgcolor": "white", "plot_bgcolor": "white"}
LOG_BUTTONS = {"type": "buttons", "direction": "right", "x": 1, "y": 1.16, "xanchor": "right", "showactive": False,
               "buttons": [{"label": lab, "method": "relayout", "args": [{ax: kind}]}
                           for lab, ax, kind in (("log x", "xaxis.type", "log"), ("linear x", "xaxis.type", "linear"),
                                                 ("log y", "yaxis.type", "log"), ("linear y", "yaxis.type", "linear"))]}


def metric_figure(run, name: str) -> dict | None:
    """One metric of a run (its seeds, mean and band) or of a sweep (each variant's mean and band)."""
    traces = []
    views = reader.views(run, single=name)
    for i, (label, sub) in enumerate(views):
        steps, times, values = seed_table(sub, name)
        if values.size:
            traces += _band_traces(label if len(views) > 1 else name, COLORS[i % len(COLORS)], steps, times,
                                   values, seeds=len(views) == 1)
    if not traces:
        return None
    ys = np.concatenate([np.asarray(t["y"], dtype=float) for t, _ in traces])
    positive = bool(np.all(ys[np.isfinite(ys)] > 0))
    layout = {**LAYOUT, "title": {"text": name, "x": 0.5, "y": 0.97}, "xaxis": {"title": {"text": "step"}, "gridcolor": "#eee"},
              "yaxis": {"type": "log" if positive else "linear", "gridcolor": "#eee"},
              "updatemenus": [_axis_menu([p for _, p in traces]), LOG_BUTTONS]}
    return {"data": [t for t, _ in traces], "layout": layout}


def theory_figure(run, limit: int = 12) -> dict | None:
    """The theory's curves of theory.parquet (time axis; the one-row constants are left out)."""
    th = run.theory
    if not len(th):
        return None
    counts = th.groupby("name").size()
    names = [n for n in counts.index if counts[n] > 1][:limit]
    if not names:
        return None
    data = []
    for i, n in enumerate(names):
        t, v = reader.theory_curve(run, n)
        data.append(_scatter(t, v, mode="lines", name=str(n), line={"color": COLORS[i % len(COLORS)]}))
    layout = {**LAYOUT, "title": {"text": "theory (theory.parquet)", "x": 0.5, "y": 0.97},
              "xaxis": {"title": {"text": "time = Σ lr"}, "gridcolor": "#eee"}, "yaxis": {"gridcolor": "#eee"},
              "updatemenus": [LOG_BUTTONS]}
    return {"data": data, "layout": layout}


def theory_constants(run) -> pd.DataFrame:
    """The theory's one-row quantities (name, value)."""
    th = run.theory
    if not len(th):
        return pd.DataFrame({"name": [], "value": []})
    counts = th.groupby("name").size()
    return th[th["name"].isin(counts.index[counts == 1])][["name", "value"]]
