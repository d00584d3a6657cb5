"""Interactive curves (plotly) of a stored run's main metrics, for its HTML page.

Each figure holds the seeds (thin lines), their mean and a band of ± one standard deviation across
seeds, on the step axis or the time axis (Σ lr, the clock the theory shares) — switched by buttons
in the figure, as are log axes. A sweep directory overlays its variants' means. Everything is read
from the run directory through the analysis layer; nothing is recomputed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

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


def _band_traces(label: str, color: str, steps, times, values, *, seeds: bool) -> list[tuple[go.Scatter, tuple]]:
    """Traces (with their (step x, time x) pair) of the seeds, the mean and its ± std band."""
    out = []
    mean = np.nanmean(values, axis=0)
    if values.shape[0] > 1:
        std = np.nanstd(values, axis=0)
        band_x = (np.r_[steps, steps[::-1]], np.r_[times, times[::-1]])
        band = go.Scatter(x=band_x[0], y=np.r_[mean + std, (mean - std)[::-1]], fill="toself", mode="lines",
                          line={"width": 0}, fillcolor=color, opacity=0.18, hoverinfo="skip",
                          name=f"{label} ± std", legendgroup=label, showlegend=False)
        out.append((band, band_x))
        if seeds:
            for i, row in enumerate(values):
                out.append((go.Scatter(x=steps, y=row, mode="lines", line={"width": 0.8, "color": color},
                                       opacity=0.45, name=f"{label} seed {i}", legendgroup=label,
                                       showlegend=False), (steps, times)))
    out.append((go.Scatter(x=steps, y=mean, mode="lines+markers", marker={"size": 4},
                           line={"width": 2.2, "color": color}, legendgroup=label,
                           name=f"{label} (mean of {values.shape[0]})" if values.shape[0] > 1 else label),
                (steps, times)))
    return out


def _axis_buttons(pairs: list[tuple], log_y: bool) -> list[dict]:
    step_x = [list(map(float, p[0])) for p in pairs]
    time_x = [list(map(float, p[1])) for p in pairs]
    return [
        {"type": "buttons", "direction": "right", "x": 0, "y": 1.16, "xanchor": "left", "showactive": True,
         "buttons": [{"label": "step", "method": "update", "args": [{"x": step_x}, {"xaxis.title.text": "step"}]},
                     {"label": "time (Σ lr)", "method": "update",
                      "args": [{"x": time_x}, {"xaxis.title.text": "time = Σ lr"}]}]},
        {"type": "buttons", "direction": "right", "x": 1, "y": 1.16, "xanchor": "right", "showactive": False,
         "buttons": [{"label": "log x", "method": "relayout", "args": [{"xaxis.type": "log"}]},
                     {"label": "linear x", "method": "relayout", "args": [{"xaxis.type": "linear"}]},
                     {"label": "log y", "method": "relayout", "args": [{"yaxis.type": "log"}]},
                     {"label": "linear y", "method": "relayout", "args": [{"yaxis.type": "linear"}]}]},
    ]


def metric_figure(run, name: str) -> go.Figure | None:
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
    positive = all(np.all(t.y[np.isfinite(t.y)] > 0) for t, _ in traces)
    fig = go.Figure([t for t, _ in traces])
    fig.update_layout(title={"text": name, "x": 0.5, "y": 0.97}, height=380, margin={"l": 60, "r": 20, "t": 80, "b": 50},
                      xaxis_title="step", yaxis_type="log" if positive else "linear", template="plotly_white",
                      updatemenus=_axis_buttons([p for _, p in traces], positive), legend={"font": {"size": 10}})
    return fig


def theory_figure(run, limit: int = 12) -> go.Figure | None:
    """The theory's curves of theory.parquet (time axis; the one-row constants are left out)."""
    th = run.theory
    if not len(th):
        return None
    counts = th.groupby("name").size()
    names = [n for n in counts.index if counts[n] > 1][:limit]
    if not names:
        return None
    fig = go.Figure()
    for i, n in enumerate(names):
        t, v = reader.theory_curve(run, n)
        fig.add_trace(go.Scatter(x=t, y=v, mode="lines", name=n, line={"color": COLORS[i % len(COLORS)]}))
    fig.update_layout(title={"text": "theory (theory.parquet)", "x": 0.5}, height=380, template="plotly_white",
                      xaxis_title="time = Σ lr", margin={"l": 60, "r": 20, "t": 80, "b": 50},
                      updatemenus=[{"type": "buttons", "direction": "right", "x": 1, "y": 1.16, "xanchor": "right",
                                    "buttons": [{"label": lab, "method": "relayout", "args": [{ax: kind}]}
                                                for lab, ax, kind in (("log x", "xaxis.type", "log"),
                                                                      ("linear x", "xaxis.type", "linear"),
                                                                      ("log y", "yaxis.type", "log"),
                                                                      ("linear y", "yaxis.type", "linear"))]}])
    return fig


def theory_constants(run) -> pd.DataFrame:
    """The theory's one-row quantities (name, value)."""
    th = run.theory
    if not len(th):
        return pd.DataFrame({"name": [], "value": []})
    counts = th.groupby("name").size()
    return th[th["name"].isin(counts.index[counts == 1])][["name", "value"]]
